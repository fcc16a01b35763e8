//! SigV4 verification (header and presigned) of a request built from the input, and the
//! `Authorization` header parser on its own.
//!
//! Input: lines. The first is the verifier's clock in Unix seconds (anything else: the time the
//! seeds were signed, 2024-03-01T12:00:00Z plus two minutes); the second the method; the third
//! the request target; every further line a `name: value` header (raw bytes, as they arrive).
//!
//! One access key is known, and the request is verified twice: once with its secret, once with
//! another secret for the same key. A signature is made with one secret, so a request may pass
//! under at most one of them, and when it passes under one the other must find exactly a
//! signature mismatch (every check before the signature's does not depend on the secret). The
//! fuzzer cannot sign, so anything accepted comes from the seeds (requests signed by botocore and
//! minio with the AWS example key) through changes the signature does not cover; a check that
//! accepted a request without comparing its signature fails here at once.
//!
//! With a first line of `sdk-header` or `sdk-query`, the request is instead signed by the AWS
//! SDK's own signer (`aws-sigv4`, with S3's settings: the path encoded once and not normalised),
//! in the header or as a presigned URL, and the verifier must accept it: the lines after are the
//! method, the path and the query as raw text (the target encodes them as SDKs do), and headers.
//!
//! Beyond that: every refusal is an S3 error with a 4xx status; an accepted request reports the
//! access key, region and signed headers its credential named (`host` among them); a parsed
//! `Authorization` header is well-formed and parses again, unchanged, from its canonical form;
//! an `Authorization` header past the 4 KiB cap is refused before anything in it is read.

#![no_main]

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use build_cache_proxy::fronts::s3::error::S3Error;
use build_cache_proxy::fronts::s3::request::ParsedRequest;
use build_cache_proxy::fronts::s3::sigv4::{
    parse_authorization, verify, AuthError, AuthKind, SecretKey, Verified,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const OTHER_SECRET: &str = "another-secret-for-the-same-access-key";
/// 2024-03-01T12:00:00Z, when the seed requests were signed, plus two minutes.
const SEEDS_SIGNED_AT: u64 = 1_709_294_400 + 120;
/// `MAX_AUTHORIZATION_LEN` of the verifier.
const MAX_AUTHORIZATION_LEN: usize = 4096;

fn verify_with(
    secret: &'static str,
    method: &Method,
    request: &ParsedRequest,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Verified<()>, AuthError> {
    let lookup = |key: &str| (key == ACCESS_KEY).then(|| (SecretKey::new(secret), ()));
    verify(method, request, headers, now, &lookup)
}

/// The head as the S3 listener reads it before any signature check; `None` when the listener
/// refuses it there (no, two or a malformed `Host`, a query that is not UTF-8), so the verifier
/// never sees it.
fn head(uri: &Uri, headers: &HeaderMap) -> Option<ParsedRequest> {
    ParsedRequest::parse(uri, Version::HTTP_11, headers).ok()
}

/// AWS's URI encoding (SDKs encode keys and query parameters so): all but `A-Z a-z 0-9 - _ . ~`.
const ENCODE_ALL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
const ENCODE_PATH: &AsciiSet = &ENCODE_ALL.remove(b'/');
const HOST: &str = "127.0.0.1:9000";

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let location = match first {
        b"sdk-header" => Some(SignatureLocation::Headers),
        b"sdk-query" => Some(SignatureLocation::QueryParams),
        _ => None,
    };
    if let Some(location) = location {
        signed_by_the_sdk(location, lines);
        return;
    }
    let now = std::str::from_utf8(first)
        .ok()
        .and_then(|secs| secs.trim().parse::<u32>().ok())
        .map_or(SEEDS_SIGNED_AT, u64::from);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
    let Some(Ok(method)) = lines.next().map(Method::from_bytes) else {
        return;
    };
    let Some(Ok(uri)) = lines.next().map(Uri::try_from) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }

    let Some(request) = head(&uri, &headers) else {
        return;
    };
    let real = verify_with(SECRET, &method, &request, &headers, now);
    let other = verify_with(OTHER_SECRET, &method, &request, &headers, now);
    match (&real, &other) {
        (Ok(_), Ok(_)) => panic!("accepted under two different secrets"),
        (Ok(verified), Err(err)) | (Err(err), Ok(verified)) => {
            assert_eq!(
                err,
                &AuthError::SignatureDoesNotMatch,
                "accepted under one secret, refused under the other for another reason"
            );
            check_verified(verified, &uri, &headers);
        }
        (Err(a), Err(b)) => {
            // Only the signature comparison may tell the two secrets apart.
            assert_eq!(
                a, b,
                "the secret changed a refusal that is not about the signature"
            );
            let s3 = S3Error::from(a.clone());
            assert!(
                s3.status().is_client_error(),
                "{a:?} answers {}",
                s3.status()
            );
        }
    }

    if let Some(Ok(value)) = headers
        .get(http::header::AUTHORIZATION)
        .map(HeaderValue::to_str)
    {
        check_authorization(value);
    }
});

fn check_verified(verified: &Verified<()>, uri: &Uri, headers: &HeaderMap) {
    assert_eq!(verified.access_key, ACCESS_KEY);
    assert!(verified.is_signed("host"), "host was not signed");
    match verified.kind {
        AuthKind::Header => {
            let value = headers
                .get(http::header::AUTHORIZATION)
                .expect("header auth has an Authorization header")
                .to_str()
                .expect("an accepted Authorization header is text");
            let parsed = parse_authorization(value).expect("an accepted header parses");
            assert_eq!(parsed.access_key(), verified.access_key);
            assert_eq!(parsed.signed_headers(), verified.signed_headers);
            assert!(
                parsed
                    .scope()
                    .ends_with(&format!("/{}/s3/aws4_request", verified.region)),
                "region {} is not the credential's",
                verified.region
            );
        }
        AuthKind::Presigned => {
            let query = uri.query().expect("presigned auth is in the query");
            assert!(query.contains("X-Amz-Signature="), "{query}");
            assert!(headers.get(http::header::AUTHORIZATION).is_none());
        }
        AuthKind::Anonymous => panic!("verify never lets a request through unsigned"),
    }
}

fn check_authorization(value: &str) {
    match parse_authorization(value) {
        Ok(parsed) => {
            assert!(value.len() <= MAX_AUTHORIZATION_LEN);
            assert!(value.starts_with("AWS4-HMAC-SHA256 "), "{value:?}");
            let access_key = parsed.access_key();
            assert!(!access_key.is_empty() && !access_key.contains('/'));
            let scope = parsed.scope();
            let [date, region, "s3", "aws4_request"] = scope.split('/').collect::<Vec<_>>()[..]
            else {
                panic!("scope {scope:?}");
            };
            assert!(date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()));
            assert!(!region.is_empty());
            let names = parsed.signed_headers();
            assert!(names.len() <= 64 && names.contains(&"host"), "{names:?}");
            for name in names {
                assert!(
                    HeaderName::from_bytes(name.as_bytes())
                        .is_ok_and(|header| header.as_str() == *name),
                    "signed header {name:?} is not a lowercase header name"
                );
            }
            let hex = hex_lower(&parsed.signature());
            assert!(
                value
                    .to_ascii_lowercase()
                    .contains(&format!("signature={hex}")),
                "the signature is not the one sent: {value:?}"
            );
            let canonical = format!(
                "AWS4-HMAC-SHA256 Credential={access_key}/{scope},SignedHeaders={},Signature={hex}",
                names.join(";")
            );
            assert_eq!(
                parse_authorization(&canonical).as_ref(),
                Ok(&parsed),
                "the canonical form parses differently"
            );
        }
        Err(err) => {
            assert!(S3Error::from(err).status().is_client_error());
        }
    }
    // Past the cap nothing is read: the answer is the same whatever the header holds.
    let padding = " ".repeat((MAX_AUTHORIZATION_LEN + 1).saturating_sub(value.len()));
    assert!(matches!(
        parse_authorization(&format!("{value}{padding}")),
        Err(AuthError::HeaderMalformed(why)) if why == "it is too long"
    ));
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Has the AWS SDK's signer sign the request the lines describe, then verifies it.
fn signed_by_the_sdk<'a>(location: SignatureLocation, mut lines: impl Iterator<Item = &'a [u8]>) {
    let Some(Ok(method)) = lines.next().map(Method::from_bytes) else {
        return;
    };
    let Some(Ok(raw_path)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let Some(Ok(raw_query)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let path = format!(
        "/{}",
        utf8_percent_encode(raw_path.trim_start_matches('/'), ENCODE_PATH)
    );
    // The signature's own parameters come from the signer; a client sends no others by those
    // names.
    let query: Vec<String> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(name, _)| !name.to_ascii_lowercase().starts_with("x-amz-"))
        .map(|(name, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(name, ENCODE_ALL),
                utf8_percent_encode(value, ENCODE_ALL)
            )
        })
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_static(HOST));
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        // The signer takes text; whether a tab inside a value is collapsed like a space is
        // left open (the Rust SDK keeps it, botocore collapses it).
        let text = value.to_str().is_ok_and(|text| !text.contains('\t'));
        let set_by_signer = matches!(
            name.as_str(),
            "host"
                | "authorization"
                | "x-amz-date"
                | "x-amz-content-sha256"
                | "x-amz-security-token"
        );
        if text && !set_by_signer {
            headers.append(name, value);
        }
    }

    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(SEEDS_SIGNED_AT);
    let identity =
        aws_credential_types::Credentials::new(ACCESS_KEY, SECRET, None, None, "fuzz").into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.signature_location = location;
    settings.expires_in = Some(Duration::from_secs(3600));
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(now)
        .settings(settings)
        .build()
        .expect("all parameters are set")
        .into();
    let target = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let text_headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().expect("kept text only")))
        .collect();
    let Ok(signable) = SignableRequest::new(
        method.as_str(),
        format!("http://{HOST}{target}"),
        text_headers.into_iter(),
        SignableBody::UnsignedPayload,
    ) else {
        return;
    };
    let Ok(output) = sign(signable, &params) else {
        return;
    };
    let (signed_headers, signed_params) = output.into_parts().0.into_parts();
    for header in signed_headers {
        headers.insert(
            header.name(),
            HeaderValue::from_str(header.value()).expect("the signer writes valid values"),
        );
    }
    let mut target = target;
    for (i, (name, value)) in signed_params.iter().enumerate() {
        let joiner = if i == 0 && !target.contains('?') {
            '?'
        } else {
            '&'
        };
        target.push_str(&format!(
            "{joiner}{name}={}",
            utf8_percent_encode(value, ENCODE_ALL)
        ));
    }
    let uri: Uri = target.parse().expect("an encoded target is a valid URI");
    let Some(request) = head(&uri, &headers) else {
        return;
    };
    let verified = verify_with(SECRET, &method, &request, &headers, now).unwrap_or_else(|err| {
        panic!("the AWS SDK signed {method} {uri} {headers:?}, refused: {err:?}")
    });
    check_verified(&verified, &uri, &headers);
    assert_eq!(
        verify_with(OTHER_SECRET, &method, &request, &headers, now).unwrap_err(),
        AuthError::SignatureDoesNotMatch
    );
}
