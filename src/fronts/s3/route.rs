//! Turns a [`ParsedRequest`] (the request head read once: authority, path, decoded query) into
//! an S3 [`Operation`] on a bucket and key.
//!
//! Path style (`/bucket/key…`) always works; virtual-host style (`bucket.<base>/key…`) works for
//! the configured base host names, matched against the request's one authority (the same one
//! its SigV4 signature is checked against). The key is the rest of the path, percent-decoded once, with
//! its `/`s. Only the operations of this front are recognised; any other subresource
//! (`?acl`, `?tagging`, `?versioning`, …) is [`Operation::NotImplemented`].

use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

use super::error::{S3Error, S3ErrorCode};
use super::request::{Addressing, Authority, ParsedRequest};
use super::xml::MAX_PARTS;

/// S3's limit on a key's length, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Subresources (query parameters that select another API) this front does not implement.
const UNSUPPORTED_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "tagging",
    "torrent",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// The S3 operations of this front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    ListBuckets,
    HeadBucket,
    GetBucketLocation,
    ListObjectsV2,
    ListObjectsV1,
    ListMultipartUploads,
    DeleteObjects,
    GetObject,
    HeadObject,
    PutObject,
    CopyObject {
        source_bucket: String,
        source_key: String,
    },
    DeleteObject,
    CreateMultipartUpload,
    UploadPart {
        upload_id: String,
        part_number: u32,
    },
    /// A part copied from (a range of) an object of the front's buckets.
    UploadPartCopy {
        upload_id: String,
        part_number: u32,
        source_bucket: String,
        source_key: String,
    },
    CompleteMultipartUpload {
        upload_id: String,
    },
    AbortMultipartUpload {
        upload_id: String,
    },
    ListParts {
        upload_id: String,
    },
    /// Anything else S3 has; answered with S3's `NotImplemented`.
    NotImplemented,
}

impl Operation {
    /// The operation's S3 name, for the access log and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ListBuckets => "ListBuckets",
            Self::HeadBucket => "HeadBucket",
            Self::GetBucketLocation => "GetBucketLocation",
            Self::ListObjectsV2 => "ListObjectsV2",
            Self::ListObjectsV1 => "ListObjects",
            Self::ListMultipartUploads => "ListMultipartUploads",
            Self::DeleteObjects => "DeleteObjects",
            Self::GetObject => "GetObject",
            Self::HeadObject => "HeadObject",
            Self::PutObject => "PutObject",
            Self::CopyObject { .. } => "CopyObject",
            Self::DeleteObject => "DeleteObject",
            Self::CreateMultipartUpload => "CreateMultipartUpload",
            Self::UploadPart { .. } => "UploadPart",
            Self::UploadPartCopy { .. } => "UploadPartCopy",
            Self::CompleteMultipartUpload { .. } => "CompleteMultipartUpload",
            Self::AbortMultipartUpload { .. } => "AbortMultipartUpload",
            Self::ListParts { .. } => "ListParts",
            Self::NotImplemented => "NotImplemented",
        }
    }

    /// The bucket a copy reads from (CopyObject, UploadPartCopy).
    pub fn copy_source_bucket(&self) -> Option<&str> {
        match self {
            Self::CopyObject { source_bucket, .. } | Self::UploadPartCopy { source_bucket, .. } => {
                Some(source_bucket)
            }
            _ => None,
        }
    }

    /// Every name [`Operation::name`] returns, to create metric label sets up front.
    pub const NAMES: [&'static str; 19] = [
        "ListBuckets",
        "HeadBucket",
        "GetBucketLocation",
        "ListObjectsV2",
        "ListObjects",
        "ListMultipartUploads",
        "DeleteObjects",
        "GetObject",
        "HeadObject",
        "PutObject",
        "CopyObject",
        "DeleteObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "ListParts",
        "NotImplemented",
    ];
}

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub operation: Operation,
    pub bucket: Option<String>,
    /// The object key, decoded; `None` for service and bucket operations.
    pub key: Option<String>,
    /// The query's parameters, decoded (listing parameters and the like).
    pub query: Vec<(String, String)>,
    /// Whether the bucket came from the path or the host.
    pub addressing: Addressing,
}

impl Route {
    /// A query parameter's value, if it was given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The resource for error documents: `/bucket/key`, `/bucket` or `/`.
    pub fn resource(&self) -> String {
        match (&self.bucket, &self.key) {
            (Some(bucket), Some(key)) => format!("/{bucket}/{key}"),
            (Some(bucket), None) => format!("/{bucket}"),
            _ => "/".to_owned(),
        }
    }
}

/// Routes requests; knows the host names under which buckets are addressed virtual-host style.
#[derive(Debug, Clone, Default)]
pub struct Router {
    virtual_host_bases: Vec<String>,
}

impl Router {
    /// `bases` are host names (no port) such as `s3.cache.local`: `bucket.s3.cache.local` then
    /// addresses `bucket`.
    pub fn new(bases: impl IntoIterator<Item = String>) -> Self {
        Self {
            virtual_host_bases: bases.into_iter().map(|b| b.to_ascii_lowercase()).collect(),
        }
    }

    /// Routes `request`; `headers` are read only for what selects an operation
    /// (`x-amz-copy-source`).
    pub fn route(
        &self,
        method: &Method,
        request: &ParsedRequest,
        headers: &HeaderMap,
    ) -> Result<Route, S3Error> {
        let invalid_uri =
            || S3Error::new(S3ErrorCode::InvalidURI, "Couldn't parse the specified URI.");
        let path = request.path().strip_prefix('/').ok_or_else(invalid_uri)?;
        let decoded = percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| invalid_uri())?;
        let (addressing, bucket, key) = match self.virtual_host_bucket(request.authority()) {
            Some(bucket) => (
                Addressing::VirtualHost,
                Some(bucket),
                Some(decoded.into_owned()),
            ),
            None => match decoded.split_once('/') {
                Some((bucket, key)) => (
                    Addressing::Path,
                    Some(bucket.to_owned()),
                    Some(key.to_owned()),
                ),
                None => (Addressing::Path, Some(decoded.into_owned()), None),
            },
        };
        let key = key.filter(|k| !k.is_empty());
        // `//key`: a key with no bucket is no request for the service (ListBuckets).
        if bucket.as_deref() == Some("") && key.is_some() {
            return Err(S3Error::new(
                S3ErrorCode::InvalidBucketName,
                "The specified bucket is not valid.",
            ));
        }
        let bucket = bucket.filter(|b| !b.is_empty());
        if let Some(bucket) = &bucket {
            validate_bucket(bucket)?;
        }
        if key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN) {
            return Err(S3Error::new(
                S3ErrorCode::KeyTooLongError,
                "Your key is too long",
            ));
        }
        let mut route = Route {
            operation: Operation::NotImplemented,
            bucket,
            key,
            query: request.query().to_vec(),
            addressing,
        };
        route.operation = operation(method, &route, headers)?;
        Ok(route)
    }

    /// The bucket a virtual-host style authority (`bucket.<base>[:port]`) names, if it is one.
    pub fn virtual_host_bucket(&self, authority: Option<&Authority>) -> Option<String> {
        let name = authority?.host();
        self.virtual_host_bases.iter().find_map(|base| {
            let bucket = name.strip_suffix(base.as_str())?.strip_suffix('.')?;
            (!bucket.is_empty()).then(|| bucket.to_owned())
        })
    }
}

/// S3's bucket naming rules, with the `_` of legacy names: a path segment such as `..` or `.`
/// is never a bucket.
fn validate_bucket(bucket: &str) -> Result<(), S3Error> {
    let alphanumeric =
        |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid = (1..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
        })
        && alphanumeric(bucket.as_bytes().first())
        && alphanumeric(bucket.as_bytes().last())
        && !bucket.contains("..");
    if valid {
        Ok(())
    } else {
        Err(S3Error::new(
            S3ErrorCode::InvalidBucketName,
            "The specified bucket is not valid.",
        ))
    }
}

/// An OPTIONS request is a CORS preflight, answered before any signature is looked at (a
/// browser sends it unsigned). The front has no CORS configuration, so S3's answers for a
/// bucket without one: 400 without an `Origin`, 403 with one.
fn cors_preflight(headers: &HeaderMap) -> S3Error {
    if headers.contains_key(http::header::ORIGIN) {
        S3Error::new(
            S3ErrorCode::AccessForbidden,
            "CORSResponse: CORS is not enabled for this bucket.",
        )
    } else {
        S3Error::new(
            S3ErrorCode::BadRequest,
            "Insufficient information. Origin request header needed.",
        )
    }
}

fn operation(method: &Method, route: &Route, headers: &HeaderMap) -> Result<Operation, S3Error> {
    let has = |name: &str| route.param(name).is_some();
    if *method == Method::OPTIONS {
        return Err(cors_preflight(headers));
    }
    if route
        .query
        .iter()
        .any(|(name, _)| UNSUPPORTED_SUBRESOURCES.contains(&name.as_str()))
    {
        return Ok(Operation::NotImplemented);
    }
    let upload_id = || -> Result<String, S3Error> {
        let id = route.param("uploadId").unwrap_or("");
        if id.is_empty() {
            return Err(S3Error::new(
                S3ErrorCode::InvalidArgument,
                "The uploadId must not be empty.",
            ));
        }
        Ok(id.to_owned())
    };
    let op = match (route.bucket.is_some(), route.key.is_some()) {
        (false, _) => match *method {
            Method::GET => Operation::ListBuckets,
            _ => Operation::NotImplemented,
        },
        (true, false) => match *method {
            Method::GET if has("location") => Operation::GetBucketLocation,
            Method::GET if has("uploads") => Operation::ListMultipartUploads,
            Method::GET if route.param("list-type") == Some("2") => Operation::ListObjectsV2,
            Method::GET if has("list-type") => {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidArgument,
                    "Invalid List Type specified.",
                ))
            }
            Method::GET => Operation::ListObjectsV1,
            Method::HEAD => Operation::HeadBucket,
            Method::POST if has("delete") => Operation::DeleteObjects,
            _ => Operation::NotImplemented,
        },
        (true, true) => match *method {
            Method::GET if has("uploadId") => Operation::ListParts {
                upload_id: upload_id()?,
            },
            Method::GET => Operation::GetObject,
            Method::HEAD if has("partNumber") => Operation::NotImplemented,
            Method::HEAD => Operation::HeadObject,
            Method::PUT if has("partNumber") || has("uploadId") => {
                let upload_id = upload_id()?;
                let part_number = part_number(route.param("partNumber"))?;
                match copy_source(headers)? {
                    None => Operation::UploadPart {
                        upload_id,
                        part_number,
                    },
                    Some(CopySource::Object { bucket, key }) => Operation::UploadPartCopy {
                        upload_id,
                        part_number,
                        source_bucket: bucket,
                        source_key: key,
                    },
                    Some(CopySource::Version) => Operation::NotImplemented,
                }
            }
            Method::PUT => match copy_source(headers)? {
                None => Operation::PutObject,
                Some(CopySource::Object { bucket, key }) => Operation::CopyObject {
                    source_bucket: bucket,
                    source_key: key,
                },
                Some(CopySource::Version) => Operation::NotImplemented,
            },
            Method::DELETE if has("uploadId") => Operation::AbortMultipartUpload {
                upload_id: upload_id()?,
            },
            Method::DELETE => Operation::DeleteObject,
            Method::POST if has("uploads") => Operation::CreateMultipartUpload,
            Method::POST if has("uploadId") => Operation::CompleteMultipartUpload {
                upload_id: upload_id()?,
            },
            _ => Operation::NotImplemented,
        },
    };
    Ok(op)
}

fn part_number(value: Option<&str>) -> Result<u32, S3Error> {
    value
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .ok_or_else(|| {
            S3Error::new(
                S3ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })
}

/// `x-amz-copy-source: [/]bucket/key`, percent-encoded; a `?versionId=` is not supported.
/// What `x-amz-copy-source` names.
enum CopySource {
    Object {
        bucket: String,
        key: String,
    },
    /// A version of an object: the front keeps no versions.
    Version,
}

/// The copy source of a PUT, `None` without `x-amz-copy-source`.
fn copy_source(headers: &HeaderMap) -> Result<Option<CopySource>, S3Error> {
    let invalid = || {
        S3Error::new(
            S3ErrorCode::InvalidArgument,
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.",
        )
    };
    let Some(value) = headers.get("x-amz-copy-source") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| invalid())?;
    let (path, query) = value.split_once('?').unwrap_or((value, ""));
    if query.split('&').any(|p| p.starts_with("versionId=")) {
        return Ok(Some(CopySource::Version));
    }
    let decoded = percent_decode_str(path.strip_prefix('/').unwrap_or(path))
        .decode_utf8()
        .map_err(|_| invalid())?;
    let (bucket, key) = decoded.split_once('/').ok_or_else(invalid)?;
    if bucket.is_empty() || key.is_empty() {
        return Err(invalid());
    }
    validate_bucket(bucket)?;
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::new(
            S3ErrorCode::KeyTooLongError,
            "Your key is too long",
        ));
    }
    Ok(Some(CopySource::Object {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `target` as it arrives with `headers` over HTTP/1.1.
    fn parsed(target: &str, headers: &HeaderMap) -> ParsedRequest {
        ParsedRequest::parse(&target.parse().unwrap(), http::Version::HTTP_11, headers).unwrap()
    }

    fn route_with(
        router: &Router,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Route, S3Error> {
        let mut map = HeaderMap::new();
        map.insert("host", "127.0.0.1:9000".parse().unwrap());
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        router.route(&method.parse().unwrap(), &parsed(target, &map), &map)
    }

    fn op(method: &str, target: &str) -> Operation {
        route_with(&Router::default(), method, target, &[])
            .unwrap()
            .operation
    }

    #[test]
    fn every_operation_of_the_front() {
        let upload = || "u-1".to_owned();
        let cases = [
            ("GET", "/", Operation::ListBuckets),
            ("HEAD", "/cache", Operation::HeadBucket),
            ("GET", "/cache?location", Operation::GetBucketLocation),
            (
                "GET",
                "/cache?list-type=2&prefix=a%2F&delimiter=%2F",
                Operation::ListObjectsV2,
            ),
            ("GET", "/cache/?prefix=a", Operation::ListObjectsV1),
            ("GET", "/cache?uploads", Operation::ListMultipartUploads),
            ("POST", "/cache?delete", Operation::DeleteObjects),
            ("GET", "/cache/a/b.zip", Operation::GetObject),
            ("GET", "/cache/a/b.zip?x-id=GetObject", Operation::GetObject),
            ("HEAD", "/cache/a/b.zip", Operation::HeadObject),
            ("PUT", "/cache/a/b.zip", Operation::PutObject),
            ("DELETE", "/cache/a/b.zip", Operation::DeleteObject),
            (
                "POST",
                "/cache/a/b.zip?uploads",
                Operation::CreateMultipartUpload,
            ),
            (
                "PUT",
                "/cache/a/b.zip?partNumber=3&uploadId=u-1",
                Operation::UploadPart {
                    upload_id: upload(),
                    part_number: 3,
                },
            ),
            (
                "POST",
                "/cache/a/b.zip?uploadId=u-1",
                Operation::CompleteMultipartUpload {
                    upload_id: upload(),
                },
            ),
            (
                "DELETE",
                "/cache/a/b.zip?uploadId=u-1",
                Operation::AbortMultipartUpload {
                    upload_id: upload(),
                },
            ),
            (
                "GET",
                "/cache/a/b.zip?uploadId=u-1",
                Operation::ListParts {
                    upload_id: upload(),
                },
            ),
        ];
        for (method, target, expected) in cases {
            assert_eq!(op(method, target), expected, "{method} {target}");
        }
    }

    #[test]
    fn everything_else_is_not_implemented() {
        for (method, target) in [
            ("GET", "/cache?acl"),
            ("PUT", "/cache?versioning"),
            ("GET", "/cache/k?tagging"),
            ("PUT", "/cache/k?tagging"),
            ("GET", "/cache/k?versionId=3"),
            ("GET", "/cache?versions"),
            ("PUT", "/cache"),
            ("DELETE", "/cache"),
            ("POST", "/cache/k?select&select-type=2"),
            ("POST", "/cache/k"),
            ("PUT", "/"),
            ("PATCH", "/cache/k"),
        ] {
            assert_eq!(
                op(method, target),
                Operation::NotImplemented,
                "{method} {target}"
            );
        }
        // A part copied from an object version: the front keeps no versions.
        let copy_part = route_with(
            &Router::default(),
            "PUT",
            "/cache/k?partNumber=1&uploadId=u",
            &[("x-amz-copy-source", "/cache/src?versionId=3")],
        );
        assert_eq!(copy_part.unwrap().operation, Operation::NotImplemented);
    }

    #[test]
    fn a_part_with_a_copy_source_is_copied() {
        let copy_part = route_with(
            &Router::default(),
            "PUT",
            "/cache/k?partNumber=1&uploadId=u",
            &[("x-amz-copy-source", "/other/dir/src%20x")],
        );
        assert_eq!(
            copy_part.unwrap().operation,
            Operation::UploadPartCopy {
                upload_id: "u".into(),
                part_number: 1,
                source_bucket: "other".into(),
                source_key: "dir/src x".into(),
            }
        );
    }

    #[test]
    fn keys_are_decoded_once_and_keep_their_slashes() {
        let route = route_with(
            &Router::default(),
            "GET",
            "/cache/runner/abc/project/1/default%20key%2Bplus%2520",
            &[],
        )
        .unwrap();
        assert_eq!(route.bucket.as_deref(), Some("cache"));
        assert_eq!(
            route.key.as_deref(),
            Some("runner/abc/project/1/default key+plus%20")
        );
        assert_eq!(
            route.resource(),
            "/cache/runner/abc/project/1/default key+plus%20"
        );
        let double_slash = route_with(&Router::default(), "GET", "/cache//a//b", &[]).unwrap();
        assert_eq!(double_slash.key.as_deref(), Some("/a//b"));
        let code = |target: &str| {
            route_with(&Router::default(), "GET", target, &[])
                .unwrap_err()
                .code
        };
        assert_eq!(code("/cache/%FF"), S3ErrorCode::InvalidURI);
        assert_eq!(
            code(&format!("/cache/{}", "k".repeat(MAX_KEY_LEN + 1))),
            S3ErrorCode::KeyTooLongError
        );
        assert!(route_with(
            &Router::default(),
            "GET",
            &format!("/cache/{}", "k".repeat(MAX_KEY_LEN)),
            &[]
        )
        .is_ok());
        assert_eq!(code("/Bad%20Bucket/k"), S3ErrorCode::InvalidBucketName);
    }

    /// OPTIONS is a CORS preflight: S3's answers for a bucket without a CORS configuration.
    #[test]
    fn options_is_a_refused_cors_preflight() {
        let code = |headers: &[(&str, &str)]| {
            route_with(
                &Router::default(),
                "OPTIONS",
                "/cache/k?X-Amz-Expires=60",
                headers,
            )
            .unwrap_err()
            .code
        };
        assert_eq!(code(&[]), S3ErrorCode::BadRequest);
        assert_eq!(
            code(&[("origin", "https://example.test")]),
            S3ErrorCode::AccessForbidden
        );
    }

    /// Found by the `s3_route` fuzz target: `/../k` (or `/%2E%2E/k`) was routed to a bucket
    /// named `..`, and `GET //k` to ListBuckets (with a key).
    #[test]
    fn path_segments_are_not_buckets() {
        let code = |target: &str| {
            route_with(&Router::default(), "GET", target, &[])
                .unwrap_err()
                .code
        };
        for target in [
            "//k",
            "//k/",
            "/../k",
            "/%2E%2E/k",
            "/./k",
            "/.cache/k",
            "/cache./k",
            "/-cache/k",
            "/cache-/k",
            "/ca..che/k",
        ] {
            assert_eq!(code(target), S3ErrorCode::InvalidBucketName, "{target}");
        }
        let vhost = Router::new(["s3.cache.local".to_owned()]);
        let mut headers = HeaderMap::new();
        headers.insert("host", "...s3.cache.local".parse().unwrap());
        let err = vhost
            .route(&Method::GET, &parsed("/k", &headers), &headers)
            .unwrap_err();
        assert_eq!(err.code, S3ErrorCode::InvalidBucketName);
        for bucket in ["a", "cache", "my.cache-1", "legacy_name", "0"] {
            let route = route_with(&Router::default(), "GET", &format!("/{bucket}/k"), &[]);
            assert_eq!(route.unwrap().bucket.as_deref(), Some(bucket));
        }
    }

    #[test]
    fn virtual_host_style() {
        let router = Router::new(["s3.cache.local".to_owned()]);
        let vhost = |host: &str, target: &str| {
            let mut map = HeaderMap::new();
            map.insert("host", host.parse().unwrap());
            router
                .route(&Method::GET, &parsed(target, &map), &map)
                .unwrap()
        };
        let route = vhost("cache.s3.cache.local:9000", "/a/b.zip");
        assert_eq!(
            (route.bucket.as_deref(), route.key.as_deref()),
            (Some("cache"), Some("a/b.zip"))
        );
        assert_eq!(route.operation, Operation::GetObject);
        let bucket = vhost("Cache.S3.Cache.Local", "/?list-type=2");
        assert_eq!(
            (bucket.bucket.as_deref(), bucket.operation),
            (Some("cache"), Operation::ListObjectsV2)
        );
        // The base itself and other hosts are path style.
        let path = vhost("s3.cache.local", "/cache/a");
        assert_eq!(
            (path.bucket.as_deref(), path.key.as_deref()),
            (Some("cache"), Some("a"))
        );
        let other = vhost("xs3.cache.local", "/cache/a");
        assert_eq!(other.bucket.as_deref(), Some("cache"));
        assert_eq!(vhost("[::1]:9000", "/").operation, Operation::ListBuckets);
        assert_eq!(route.addressing, Addressing::VirtualHost);
        assert_eq!(path.addressing, Addressing::Path);
    }

    /// The authority routed is the request's one authority: an absolute-form target with a
    /// `Host` that names the same place routes as either would, and an HTTP/1.0 request with
    /// only the target routes by the target (as its signature is checked).
    #[test]
    fn an_absolute_form_target_routes_by_its_authority() {
        let router = Router::new(["vhost.test".to_owned()]);
        let target: http::Uri = "http://runner-cache.vhost.test:9000/other/secret.txt"
            .parse()
            .unwrap();
        let none = HeaderMap::new();
        let only_target = ParsedRequest::parse(&target, http::Version::HTTP_10, &none).unwrap();
        let mut host = HeaderMap::new();
        host.insert("host", "Runner-Cache.vhost.test:9000".parse().unwrap());
        let both = ParsedRequest::parse(&target, http::Version::HTTP_11, &host).unwrap();
        for request in [only_target, both] {
            let route = router.route(&Method::GET, &request, &none).unwrap();
            assert_eq!(
                (
                    route.bucket.as_deref(),
                    route.key.as_deref(),
                    route.addressing
                ),
                (
                    Some("runner-cache"),
                    Some("other/secret.txt"),
                    Addressing::VirtualHost
                )
            );
        }
    }

    #[test]
    fn parameters_are_checked() {
        let code = |method: &str, target: &str| {
            route_with(&Router::default(), method, target, &[])
                .unwrap_err()
                .code
        };
        assert_eq!(
            code("PUT", "/cache/k?partNumber=0&uploadId=u"),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("PUT", "/cache/k?partNumber=10001&uploadId=u"),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("PUT", "/cache/k?partNumber=1"),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("PUT", "/cache/k?uploadId=u"),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("POST", "/cache/k?uploadId="),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("GET", "/cache?list-type=3"),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            op("PUT", "/cache/k?partNumber=10000&uploadId=u"),
            Operation::UploadPart {
                upload_id: "u".into(),
                part_number: 10_000
            }
        );
    }

    #[test]
    fn copy_sources() {
        let copy = |source: &str| {
            route_with(
                &Router::default(),
                "PUT",
                "/cache/dst",
                &[("x-amz-copy-source", source)],
            )
        };
        let expected = Operation::CopyObject {
            source_bucket: "cache".into(),
            source_key: "dir/a b".into(),
        };
        assert_eq!(copy("/cache/dir/a%20b").unwrap().operation, expected);
        assert_eq!(copy("cache/dir/a%20b").unwrap().operation, expected);
        assert_eq!(
            copy("cache/k?versionId=2").unwrap().operation,
            Operation::NotImplemented
        );
        for bad in ["cache", "/cache/", "/", "%FF/k"] {
            assert_eq!(
                copy(bad).unwrap_err().code,
                S3ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn operation_names_are_listed() {
        assert_eq!(Operation::NAMES.len(), 19);
        assert!(Operation::NAMES.contains(
            &Operation::UploadPart {
                upload_id: String::new(),
                part_number: 1
            }
            .name()
        ));
    }
}
