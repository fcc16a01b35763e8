//! Request routing: method, request target and `Host` (plus an optional `x-amz-copy-source`)
//! to an S3 operation on a bucket and key.
//!
//! Input: lines: the method, the request target, the `Host` value, and optionally the
//! `x-amz-copy-source` value. The router knows one virtual-host base, `s3.cache.local`.
//!
//! What must hold for a routed request:
//! - a bucket is a valid S3 bucket name (lowercase letters, digits, `.`, `-`, `_`; at most 63;
//!   starting and ending with a letter or digit; no `..`), and so is a copy source's;
//! - object operations have a bucket and a non-empty key of at most 1,024 bytes, bucket
//!   operations a bucket and no key, ListBuckets neither; part numbers are within 1..=10000 and
//!   upload ids non-empty;
//! - what SigV4 signs is what is routed: the canonical form of the path (decoded once, encoded
//!   again) routes to the same operation, bucket and key;
//! - path style and virtual-host style address the same thing: `/<bucket>/<key>` on any host
//!   routes as `/<key>` on `<bucket>.s3.cache.local`.

#![no_main]

use build_cache_proxy::fronts::s3::request::ParsedRequest;
use build_cache_proxy::fronts::s3::route::{Operation, Route, Router, MAX_KEY_LEN};
use build_cache_proxy::fronts::s3::sigv4::canonical_uri;
use build_cache_proxy::fronts::s3::xml::MAX_PARTS;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use libfuzzer_sys::fuzz_target;

const BASE: &str = "s3.cache.local";

fn valid_bucket(name: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
        && !name.contains("..")
}

fn route(
    router: &Router,
    method: &Method,
    target: &str,
    host: &str,
    copy: Option<&HeaderValue>,
) -> Option<Result<Route, String>> {
    let uri: Uri = target.parse().ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_str(host).ok()?);
    if let Some(copy) = copy {
        headers.insert("x-amz-copy-source", copy.clone());
    }
    let refusal = |err: build_cache_proxy::fronts::s3::error::S3Error| {
        assert!(
            err.status().is_client_error(),
            "{err} answers {}",
            err.status()
        );
        err.code.as_str().to_owned()
    };
    let parsed = match ParsedRequest::parse(&uri, Version::HTTP_11, &headers) {
        Ok(parsed) => parsed,
        Err(err) => return Some(Err(refusal(err))),
    };
    Some(router.route(method, &parsed, &headers).map_err(refusal))
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(Ok(method)) = lines.next().map(Method::from_bytes) else {
        return;
    };
    let Some(Ok(target)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let host = lines
        .next()
        .and_then(|h| std::str::from_utf8(h).ok())
        .unwrap_or("127.0.0.1:9000");
    let copy = lines.next().and_then(|v| HeaderValue::from_bytes(v).ok());
    let router = Router::new([BASE.to_owned()]);
    let Some(routed) = route(&router, &method, target, host, copy.as_ref()) else {
        return;
    };
    let Ok(routed) = routed else {
        return;
    };
    check_route(&routed);
    let uri: Uri = target.parse().expect("routed, so it parsed");

    // What SigV4 signs is what is routed.
    let canonical = match uri.query() {
        Some(query) => format!("{}?{query}", canonical_uri(uri.path())),
        None => canonical_uri(uri.path()),
    };
    let again = route(&router, &method, &canonical, host, copy.as_ref())
        .expect("a canonical path is a valid request target")
        .unwrap_or_else(|code| panic!("the canonical form {canonical:?} was refused: {code}"));
    assert_eq!(
        (&again.operation, &again.bucket, &again.key),
        (&routed.operation, &routed.bucket, &routed.key),
        "the canonical form {canonical:?} routes elsewhere"
    );

    // Path style on a host that is not a virtual host, as virtual-host style.
    let host_lower = host.to_ascii_lowercase();
    if host_lower.contains(BASE) {
        return;
    }
    if let Some(bucket) = &routed.bucket {
        let key_path: String = routed
            .key
            .as_deref()
            .unwrap_or("")
            .split('/')
            .map(|segment| {
                percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("/");
        let vhost_target = match uri.query() {
            Some(query) => format!("/{key_path}?{query}"),
            None => format!("/{key_path}"),
        };
        let vhost = route(
            &router,
            &method,
            &vhost_target,
            &format!("{bucket}.{BASE}:9000"),
            copy.as_ref(),
        )
        .expect("a valid bucket makes a valid host")
        .unwrap_or_else(|code| panic!("{vhost_target:?} on {bucket}.{BASE} was refused: {code}"));
        assert_eq!(
            (&vhost.operation, &vhost.bucket, &vhost.key),
            (&routed.operation, &routed.bucket, &routed.key),
            "virtual-host style routes elsewhere than path style"
        );
    }
});

fn check_route(route: &Route) {
    if let Some(bucket) = &route.bucket {
        assert!(valid_bucket(bucket), "bucket {bucket:?} was routed");
    }
    if let Some(key) = &route.key {
        assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN, "key {key:?}");
    }
    let _ = route.resource();
    let object = || {
        assert!(
            route.bucket.is_some(),
            "{:?} without a bucket",
            route.operation
        );
        assert!(route.key.is_some(), "{:?} without a key", route.operation);
    };
    let bucket = || {
        assert!(
            route.bucket.is_some(),
            "{:?} without a bucket",
            route.operation
        );
        assert!(route.key.is_none(), "{:?} with a key", route.operation);
    };
    match &route.operation {
        Operation::ListBuckets => assert!(route.bucket.is_none() && route.key.is_none()),
        Operation::HeadBucket
        | Operation::GetBucketLocation
        | Operation::ListObjectsV2
        | Operation::ListObjectsV1
        | Operation::ListMultipartUploads
        | Operation::DeleteObjects => bucket(),
        Operation::GetObject
        | Operation::HeadObject
        | Operation::PutObject
        | Operation::DeleteObject
        | Operation::CreateMultipartUpload => object(),
        Operation::CopyObject {
            source_bucket,
            source_key,
        } => {
            object();
            assert!(
                valid_bucket(source_bucket),
                "copy source bucket {source_bucket:?}"
            );
            assert!(!source_key.is_empty() && source_key.len() <= MAX_KEY_LEN);
        }
        Operation::UploadPart {
            upload_id,
            part_number,
        } => {
            object();
            assert!(!upload_id.is_empty());
            assert!((1..=MAX_PARTS).contains(part_number));
        }
        Operation::UploadPartCopy {
            upload_id,
            part_number,
            source_bucket,
            source_key,
        } => {
            object();
            assert!(!upload_id.is_empty());
            assert!((1..=MAX_PARTS).contains(part_number));
            assert!(
                valid_bucket(source_bucket),
                "copy source bucket {source_bucket:?}"
            );
            assert!(!source_key.is_empty() && source_key.len() <= MAX_KEY_LEN);
        }
        Operation::CompleteMultipartUpload { upload_id }
        | Operation::AbortMultipartUpload { upload_id }
        | Operation::ListParts { upload_id } => {
            object();
            assert!(!upload_id.is_empty());
        }
        Operation::NotImplemented => {}
    }
}
