//! The connection to the real S3: one pooled HTTP/1.1 client (HTTPS with rustls + ring and the
//! system's roots, or plain HTTP for a test server), and the translation of a client's request
//! into the one sent on, byte for byte what the client signed: method, path and query as they
//! came, every header including `Host` and `Authorization`. Only hop-by-hop headers, which
//! belong to each connection and which no S3 client signs, are left behind; a `Connection`
//! header can add names to those, but never the ones that say what the request is and who
//! signed it ([`end_to_end`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyStream;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::server::body::ResponseBody;
use crate::store::ByteStream;

/// Headers of one connection, never passed on in either direction (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Idle pooled connections to S3 are closed after this long (S3 closes its own after ~20 s).
const POOL_IDLE: Duration = Duration::from_secs(15);

/// The client every forwarded request goes out on.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ResponseBody>,
}

/// Why a request did not get S3's answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("S3 endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("no answer from the S3 endpoint within {0:?}")]
    Timeout(Duration),
}

impl Upstream {
    /// A client with the system's root certificates. Fails only when `https` is needed and
    /// the system has no roots to check S3's certificate with.
    pub fn new(connect_timeout: Duration, needs_https: bool) -> io::Result<Upstream> {
        let connector = connector(connect_timeout, needs_https, "the S3 endpoint")?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            // The client's Host header is what it signed; it must go out as it came.
            .set_host(false)
            .build(connector);
        Ok(Upstream { client })
    }

    /// Sends `request` and waits for S3's response head.
    pub async fn send(
        &self,
        request: Request<ResponseBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.client
            .request(request)
            .await
            .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))
    }

    /// [`Upstream::send`] within `timeout`.
    pub async fn send_within(
        &self,
        request: Request<ResponseBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        tokio::time::timeout(timeout, self.send(request))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }
}

/// An HTTP/1.1 connector for a client of `what`: HTTPS with rustls + ring and the system's
/// root certificates, or plain HTTP. Fails only when `https` is needed and the system has no
/// roots to check certificates with.
pub fn connector(
    connect_timeout: Duration,
    needs_https: bool,
    what: &str,
) -> io::Result<HttpsConnector<HttpConnector>> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = match HttpsConnectorBuilder::new().with_provider_and_native_roots(provider) {
        Ok(builder) => builder,
        Err(e) if needs_https => {
            return Err(io::Error::other(format!(
                "no root certificates to check {what}'s certificate with: {e}"
            )))
        }
        // Plain HTTP only (a test server): an empty root store refuses every certificate.
        Err(_) => HttpsConnectorBuilder::new().with_tls_config(
            tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
            .with_no_client_auth(),
        ),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}

/// The request to send to `endpoint` for a client's request head: the same method, path and
/// query (as sent, never re-encoded), and headers.
pub fn outgoing(
    endpoint: &Uri,
    parts: &http::request::Parts,
    body: ResponseBody,
) -> Result<Request<ResponseBody>, http::Error> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri = Uri::builder()
        .scheme(endpoint.scheme_str().unwrap_or("https"))
        .authority(endpoint.authority().map_or("", |a| a.as_str()))
        .path_and_query(path)
        .build()?;
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(body)?;
    *request.headers_mut() = end_to_end(&parts.headers);
    Ok(request)
}

/// The headers without the hop-by-hop ones (and those the `Connection` header names, unless
/// [`kept_end_to_end`]).
pub fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let named_hop = named.iter().any(|n| n == name.as_str()) && !kept_end_to_end(name);
        if HOP_BY_HOP.contains(name) || named_hop {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Headers that `Connection` may not make hop-by-hop: `Host` (routed, cached and signed by
/// the node's reading of it; `Connection: host` would send S3 a request without one),
/// `Authorization` and every `x-amz-*` (the signature and what it covers), and
/// `Content-Length` (the body goes on with the framing it came with). RFC 9110 §7.6.1 forbids
/// clients to name such headers; one that does gets them passed on, never dropped behind the
/// node's back.
fn kept_end_to_end(name: &HeaderName) -> bool {
    *name == header::HOST
        || *name == header::AUTHORIZATION
        || *name == header::CONTENT_LENGTH
        || name.as_str().starts_with("x-amz-")
}

/// S3's response body as a stream that fails when S3 pauses longer than `stall`.
pub fn body_stream(body: Incoming, stall: Duration) -> ByteStream {
    let frames = BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(io::Error::other(e))),
        }
    });
    Box::pin(stalls_after(frames, stall))
}

fn stalls_after(
    inner: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    stall: Duration,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(Box::pin(inner)), move |state| async move {
        let mut inner = state?;
        match tokio::time::timeout(stall, inner.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(inner))),
            Ok(Some(Err(e))) => Some((Err(e), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("S3 sent nothing for {stall:?}"),
                )),
                None,
            )),
        }
    })
}

/// A header's value as text, if it is.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// An ETag header's value without its quotes.
pub fn unquoted_etag(headers: &HeaderMap) -> Option<String> {
    let etag = header_str(headers, "etag")?.trim();
    Some(etag.trim_matches('"').to_string()).filter(|e| !e.is_empty())
}

/// `"etag"`, as If-None-Match wants it.
pub fn quoted(etag: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{etag}\"")).ok()
}

/// The error and its sources, for a log line a person can act on.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_behind_and_the_signed_ones_go_on_as_they_are() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "s3.eu-west-1.amazonaws.com"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=..."),
            ("x-amz-date", "20260101T000000Z"),
            ("x-amz-meta-a", "1"),
            ("x-amz-meta-a", "2"),
            ("expect", "100-continue"),
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "hop"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let out = end_to_end(&headers);
        let names: Vec<&str> = out.keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "host",
                "authorization",
                "x-amz-date",
                "x-amz-meta-a",
                "expect"
            ]
        );
        assert_eq!(out.get_all("x-amz-meta-a").iter().count(), 2);
        assert_eq!(out["host"], "s3.eu-west-1.amazonaws.com");
    }

    /// Found by a hostile client: `Connection: host` sent S3 a request without `Host`. What
    /// says what the request is and who signed it stays, whatever `Connection` names.
    #[test]
    fn connection_cannot_name_what_the_signature_covers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "bucket.s3.eu-west-1.amazonaws.com"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=..."),
            ("x-amz-date", "20260101T000000Z"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-amz-security-token", "token"),
            ("content-length", "5"),
            (
                "connection",
                "Host, authorization,X-Amz-Date, x-amz-content-sha256",
            ),
            ("connection", "x-amz-security-token, content-length, x-hop"),
            ("x-hop", "1"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let out = end_to_end(&headers);
        let names: Vec<&str> = out.keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "host",
                "authorization",
                "x-amz-date",
                "x-amz-content-sha256",
                "x-amz-security-token",
                "content-length"
            ]
        );
    }

    #[test]
    fn the_outgoing_request_keeps_the_path_and_query_as_sent() {
        let endpoint: Uri = "https://s3.eu-west-1.amazonaws.com".parse().unwrap();
        let (parts, _) = Request::builder()
            .method("GET")
            .uri("/bucket/a%2Bb%20c?X-Amz-Signature=ab%2Fcd&x-id=GetObject")
            .header("host", "s3.eu-west-1.amazonaws.com")
            .body(())
            .unwrap()
            .into_parts();
        let out = outgoing(&endpoint, &parts, crate::server::body::empty()).unwrap();
        assert_eq!(
            out.uri().to_string(),
            "https://s3.eu-west-1.amazonaws.com/bucket/a%2Bb%20c?X-Amz-Signature=ab%2Fcd&x-id=GetObject"
        );
        assert_eq!(out.headers()["host"], "s3.eu-west-1.amazonaws.com");
    }
}
