//! The S3 listener's one reading of a request head: where the request is addressed (its
//! authority), its path as sent, and its query parameters decoded.
//!
//! Routing ([`super::route`]), the SigV4 check ([`super::sigv4`]), the forward mode's choice of
//! endpoint and bucket ([`super::forward`]) and the access log all read this one value. When
//! each of them read the request on its own, they could disagree: a URL presigned virtual-host
//! style (`runner-cache.<vhost>/other/secret.txt`) sent with an absolute-form request line and
//! no `Host` verified against the URI's authority while routing, which read only `Host`, took it
//! as path style and served bucket `other`. Now there is one authority, taken from the
//! absolute-form request target or the `Host` header, and a request whose two disagree, or
//! whose `Host` is missing (HTTP/1.1), repeated or not a valid `host[:port]`, is refused before
//! anything else looks at it (RFC 9112 §3.2 asks a server to answer all of these with 400).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Uri, Version};
use percent_encoding::percent_decode_str;

use super::error::{S3Error, S3ErrorCode};

/// Where a request is addressed: `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Lowercase; an IPv6 literal keeps its brackets.
    host: String,
    port: Option<u16>,
    /// The text as the client sent it: what a SigV4 signature covers as `host`.
    sent: String,
}

impl Authority {
    /// Parses `host[:port]`: a DNS-style name (letters, digits, `-`, `.`, `_`, `~`), an IPv4
    /// address or a bracketed IPv6 literal, and an optional port of at most 65535. Userinfo
    /// (`user@host`), paths and everything else are refused: no S3 client sends them, and a
    /// name that means something different to two readers is exactly what this guards against.
    pub fn parse(text: &str) -> Option<Authority> {
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (literal, after) = rest.split_once(']')?;
                let valid = !literal.is_empty()
                    && literal
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if !valid {
                    return None;
                }
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':')?),
                };
                (&text[..literal.len() + 2], port)
            }
            None => {
                let (host, port) = match text.split_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (text, None),
                };
                let valid = !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
                if !valid {
                    return None;
                }
                (host, port)
            }
        };
        let port = match port {
            // `host:` is allowed by RFC 3986 and means the scheme's default port.
            None | Some("") => None,
            Some(digits) => {
                if digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(digits.parse::<u16>().ok()?)
            }
        };
        Some(Authority {
            host: host.to_ascii_lowercase(),
            port,
            sent: text.to_owned(),
        })
    }

    /// The host name (or address), lowercase, without the port.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The authority as the client sent it.
    pub fn as_sent(&self) -> &str {
        &self.sent
    }

    /// Whether `self` and `other` name the same place for a request of `scheme`: the same host
    /// (case aside) and the same port once an absent one is the scheme's default.
    fn same_place(&self, other: &Authority, scheme: Option<&str>) -> bool {
        let default = match scheme {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        };
        self.host == other.host && self.port.or(default) == other.port.or(default)
    }
}

/// How the bucket was named: in the path (`/bucket/key`) or in the host
/// (`bucket.<base>/key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    Path,
    VirtualHost,
}

/// A request head as the S3 listener reads it, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    authority: Option<Authority>,
    /// The path as sent, still percent-encoded: SigV4 canonicalises this text, and routing
    /// decodes it once.
    path: String,
    /// The query's parameters, names and values percent-decoded as S3 decodes them (`+` stays
    /// `+`), in the order sent; a parameter without `=` has an empty value (`?uploads`).
    query: Vec<(String, String)>,
}

impl ParsedRequest {
    /// Reads the head of a request of `version` for `uri` with `headers`.
    pub fn parse(uri: &Uri, version: Version, headers: &HeaderMap) -> Result<Self, S3Error> {
        let invalid = |why: &str| S3Error::new(S3ErrorCode::InvalidRequest, why.to_owned());
        let mut hosts = headers.get_all(header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(invalid("The request has more than one Host header."));
        }
        let from_header = match host_header {
            // An empty `Host` is how HTTP/1.1 says "no authority"; S3 always has one.
            Some(value) if !value.is_empty() => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(Authority::parse)
                    .ok_or_else(|| invalid("The Host header is not a valid host[:port]."))?,
            ),
            _ => None,
        };
        let from_target = match uri.authority() {
            Some(authority) => Some(Authority::parse(authority.as_str()).ok_or_else(|| {
                invalid("The authority of the request target is not a valid host[:port].")
            })?),
            None => None,
        };
        // HTTP/1.1 requires `Host` even beside an absolute-form target (RFC 9112 §3.2).
        let old_version = version == Version::HTTP_10 || version == Version::HTTP_09;
        if from_header.is_none() && !old_version {
            return Err(invalid("The request has no Host header."));
        }
        let authority = match (from_target, from_header) {
            (Some(target), Some(host)) => {
                if !target.same_place(&host, uri.scheme_str()) {
                    return Err(invalid(
                        "The Host header does not name the host of the absolute request target.",
                    ));
                }
                // The client signed the header it sent (and S3 reads the header).
                Some(host)
            }
            (target, host) => target.or(host),
        };
        let query = match uri.query() {
            Some(raw) => parse_query(raw).ok_or_else(|| {
                S3Error::new(S3ErrorCode::InvalidURI, "Couldn't parse the specified URI.")
            })?,
            None => Vec::new(),
        };
        Ok(ParsedRequest {
            authority,
            path: uri.path().to_owned(),
            query,
        })
    }

    /// Where the request is addressed, from the absolute-form target or `Host`; `None` only
    /// for an HTTP/1.0 request that named neither.
    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }

    /// The path as sent (percent-encoded).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The decoded query parameters, in the order sent.
    pub fn query(&self) -> &[(String, String)] {
        &self.query
    }

    /// The first value of a query parameter (by its decoded name).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Gives the request the `Host` header its authority came from when only the absolute-form
    /// target carried it (HTTP/1.0), so that what is forwarded or signed names the same host.
    pub fn complete_host(&self, headers: &mut HeaderMap) {
        if headers.contains_key(header::HOST) {
            return;
        }
        if let Some(value) = self
            .authority
            .as_ref()
            .and_then(|a| HeaderValue::from_str(a.as_sent()).ok())
        {
            headers.insert(header::HOST, value);
        }
    }
}

/// The query's parameters, names and values percent-decoded; `None` if one is not UTF-8 once
/// decoded (S3 keys, prefixes and every parameter it defines are UTF-8).
pub fn parse_query(raw: &str) -> Option<Vec<(String, String)>> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_decode_str(text)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned())
            };
            Some((decode(name)?, decode(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests;
