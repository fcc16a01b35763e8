//! SigV4 against AWS's published examples (S3 API reference, "Signature Calculations for the
//! Authorization Header" and "Authenticating Requests: Using Query Parameters", key
//! AKIAIOSFODNN7EXAMPLE) and against requests signed by real clients.

use super::*;
use http::{Uri, Version};

const AK: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn lookup(access_key: &str) -> Option<(SecretKey, &'static str)> {
    (access_key == AK).then(|| (SecretKey::new(SECRET), "ci-runner"))
}

/// `YYYYMMDDTHHMMSSZ` as a `SystemTime`, offset by `offset_secs`.
fn at(amz_date: &str, offset_secs: i64) -> SystemTime {
    let base = parse_amz_date(amz_date).expect("test dates are valid");
    if offset_secs >= 0 {
        base + Duration::from_secs(offset_secs.unsigned_abs())
    } else {
        base - Duration::from_secs(offset_secs.unsigned_abs())
    }
}

/// The request as our server sees it: origin-form URI, `Host` from the URL.
fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (Method, ParsedRequest, HeaderMap) {
    let full: Uri = url.parse().expect("fixture URL");
    let mut map = HeaderMap::new();
    map.insert("host", full.authority().unwrap().as_str().parse().unwrap());
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let origin: Uri = full.path_and_query().unwrap().as_str().parse().unwrap();
    let parsed = ParsedRequest::parse(&origin, Version::HTTP_11, &map).expect("fixture head");
    (method.parse().unwrap(), parsed, map)
}

fn check(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    now: SystemTime,
) -> Result<Verified<&'static str>, AuthError> {
    let (method, parsed, headers) = request(method, url, headers);
    verify(&method, &parsed, &headers, now, &lookup)
}

const GET_OBJECT_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

fn get_object_headers(auth: &str) -> Vec<(&str, &str)> {
    vec![
        ("range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256_HEX),
        ("x-amz-date", "20130524T000000Z"),
        ("authorization", auth),
    ]
}

#[test]
fn aws_example_get_object() {
    let verified = check(
        "GET",
        "http://examplebucket.s3.amazonaws.com/test.txt",
        &get_object_headers(GET_OBJECT_AUTH),
        at("20130524T000000Z", 60),
    )
    .expect("AWS's GET Object example verifies");
    assert_eq!(verified.principal, "ci-runner");
    assert_eq!(verified.access_key, AK);
    assert_eq!(verified.kind, AuthKind::Header);
    assert_eq!(verified.region, "us-east-1");
    assert!(verified.is_signed("Range"));
    assert!(!verified.is_signed("x-amz-copy-source"));
    assert!(matches!(verified.payload, Payload::Sha256(sha) if sha == sha256(b"")));
}

#[test]
fn aws_example_put_object_encodes_the_path_once() {
    let verified = check(
        "PUT",
        "http://examplebucket.s3.amazonaws.com/test%24file.text",
        &[
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
        ],
        at("20130524T000000Z", 0),
    )
    .expect("AWS's PUT Object example verifies");
    let Payload::Sha256(sha) = verified.payload else {
        panic!("a signed payload hash");
    };
    assert_eq!(sha, sha256(b"Welcome to Amazon S3."));
}

#[test]
fn aws_example_list_objects_sorts_the_query() {
    check(
        "GET",
        "http://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J",
        &[
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_SHA256_HEX),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        ],
        at("20130524T000000Z", 0),
    )
    .expect("AWS's GET Bucket example verifies");
    // The same request with its query in the other order is the same canonical request.
    check(
        "GET",
        "http://examplebucket.s3.amazonaws.com/?prefix=J&max-keys=2",
        &[
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_SHA256_HEX),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        ],
        at("20130524T000000Z", 0),
    )
    .expect("query order does not matter");
}

#[test]
fn aws_example_get_bucket_lifecycle_has_an_empty_valued_subresource() {
    check(
        "GET",
        "http://examplebucket.s3.amazonaws.com/?lifecycle",
        &[
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_SHA256_HEX),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        ],
        at("20130524T000000Z", 0),
    )
    .expect("AWS's GET Bucket lifecycle example verifies");
}

const AWS_PRESIGNED: &str = "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

#[test]
fn aws_example_presigned_url() {
    let verified = check("GET", AWS_PRESIGNED, &[], at("20130524T000000Z", 3600))
        .expect("AWS's presigned URL example verifies");
    assert_eq!(verified.kind, AuthKind::Presigned);
    assert!(matches!(verified.payload, Payload::Unsigned));
    // Valid to the last second of X-Amz-Expires, "Request has expired" after.
    assert!(check("GET", AWS_PRESIGNED, &[], at("20130524T000000Z", 86_400)).is_ok());
    let expired = check("GET", AWS_PRESIGNED, &[], at("20130524T000000Z", 86_401)).unwrap_err();
    assert_eq!(expired, AuthError::Expired);
    let s3: S3Error = expired.into();
    assert_eq!(
        (s3.code, s3.message.as_ref()),
        (S3ErrorCode::AccessDenied, "Request has expired")
    );
    // The method is signed.
    assert_eq!(
        check("HEAD", AWS_PRESIGNED, &[], at("20130524T000000Z", 0)).unwrap_err(),
        AuthError::SignatureDoesNotMatch
    );
}

/// The `host` checked is the request's one authority, the one routing reads: AWS's
/// virtual-host presigned URL sent absolute-form verifies over HTTP/1.0 without `Host` (the
/// target's authority) and over HTTP/1.1 with a `Host` naming the same place; its path and
/// query under another host do not. Parameter names are compared decoded, as S3 does.
#[test]
fn the_signed_host_is_the_requests_one_authority() {
    let now = at("20130524T000000Z", 0);
    let target: Uri = AWS_PRESIGNED.parse().unwrap();
    let none = HeaderMap::new();
    let http10 = ParsedRequest::parse(&target, Version::HTTP_10, &none).unwrap();
    verify(&Method::GET, &http10, &none, now, &lookup).expect("target authority");
    let mut same = HeaderMap::new();
    same.insert("host", "ExampleBucket.s3.amazonaws.com".parse().unwrap());
    // The Host header is what the client signed: here it differs in case from what was.
    let cased = ParsedRequest::parse(&target, Version::HTTP_11, &same).unwrap();
    assert_eq!(
        verify(&Method::GET, &cased, &same, now, &lookup).unwrap_err(),
        AuthError::SignatureDoesNotMatch
    );
    same.insert(
        "host",
        "examplebucket.s3.amazonaws.com:443".parse().unwrap(),
    );
    let with_port = ParsedRequest::parse(&target, Version::HTTP_11, &same);
    assert!(
        with_port.is_ok(),
        "https's default port names the same place"
    );
    let mut other = HeaderMap::new();
    other.insert("host", "127.0.0.1:9000".parse().unwrap());
    let origin: Uri = target.path_and_query().unwrap().as_str().parse().unwrap();
    let elsewhere = ParsedRequest::parse(&origin, Version::HTTP_11, &other).unwrap();
    assert_eq!(
        verify(&Method::GET, &elsewhere, &other, now, &lookup).unwrap_err(),
        AuthError::SignatureDoesNotMatch
    );
    let encoded_names = AWS_PRESIGNED
        .replace("X-Amz-Expires", "X-Amz%2DExpires")
        .replace("X-Amz-Date", "X%2DAmz-Date");
    check("GET", &encoded_names, &[], now).expect("names are compared decoded");
}

#[test]
fn aws_example_chunked_upload_seed() {
    let verified = check(
        "PUT",
        "http://s3.amazonaws.com/examplebucket/chunkObject.txt",
        &[
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("content-length", "66824"),
        ],
        at("20130524T000000Z", 0),
    )
    .expect("AWS's chunked upload example verifies");
    let Payload::SignedChunks { signing, trailer } = verified.payload else {
        panic!("a chunked payload");
    };
    assert!(!trailer);
    assert_eq!(
        hex::encode(signing.seed_signature),
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    );
    assert_eq!(signing.scope, "20130524/us-east-1/s3/aws4_request");
    // AWS's first chunk: 65536 bytes of 'a', with its published signature.
    let first = signing.chunk_signature(&signing.seed_signature, &sha256(&[b'a'; 65536]));
    assert_eq!(
        hex::encode(first),
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    );
}

/// Requests signed by real clients (botocore 1.43 `S3SigV4Auth`/`S3SigV4QueryAuth` and the minio
/// Python SDK 7.2 `get_presigned_url`), all at 2024-03-01T12:00:00Z with the AWS example key:
/// (client, method, URL, headers the client sends besides Host).
/// (client, method, URL, headers).
type Fixture = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const CLIENT_FIXTURES: &[Fixture] = &[
    ("botocore header", "GET", "http://127.0.0.1:9000/cache/runner/abc/project/1/default-1", &[("X-Amz-Date", "20240301T120000Z"), ("X-Amz-Content-SHA256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240301/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=7b0fe7fa42d8360c032c5d4695d252c78729f73164a87f57cc7f2a4570093a3a")]),
    ("botocore header", "PUT", "http://127.0.0.1:9000/cache/dir%20with%20space/k%2Bplus~tilde%21bang.zip", &[("Content-Type", "application/octet-stream"), ("x-amz-meta-cachekey", "  default   key "), ("X-Amz-Date", "20240301T120000Z"), ("X-Amz-Content-SHA256", "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"), ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240301/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-cachekey, Signature=c7417d64e26f0b639d806fd41b7362d2fe06b9e20e0a646701289a338f8626f9"), ("Content-Length", "11")]),
    ("botocore header", "GET", "http://127.0.0.1:9000/cache?list-type=2&prefix=a%2Fb&delimiter=%2F", &[("X-Amz-Date", "20240301T120000Z"), ("X-Amz-Content-SHA256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240301/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=dc99170622bb9bbdcf9e17c5b96d06bfb7efe2a8d5654ce3c0776345d6a3dcce")]),
    ("botocore header", "POST", "http://127.0.0.1:9000/cache/big.bin?uploads", &[("X-Amz-Date", "20240301T120000Z"), ("X-Amz-Content-SHA256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240301/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=6d420c12026240e52f4829ae59db4c8608b96ed20a57610081ea19adb858b9da"), ("Content-Length", "0")]),
    ("botocore presigned", "GET", "http://127.0.0.1:9000/cache/project/1/default-1?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240301%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240301T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=ba44c4465c0db6a8362442aba36fecb649f84985558b3aada2763656545c1363", &[]),
    ("botocore presigned", "PUT", "http://127.0.0.1:9000/cache/project/1/default-1?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240301%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240301T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host%3Bx-amz-meta-cachekey&X-Amz-Signature=94c3089450612563d7d91f2c8d985f5dced7397f177f358c4d9db9f64db029be", &[("x-amz-meta-cachekey", "default-1"), ("Content-Length", "0")]),
    ("botocore presigned", "HEAD", "http://127.0.0.1:9000/cache/%C3%BCnicode/key%3Dvalue?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240301%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240301T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=14fbfb9f879db5bc8fc4845ebecfa0a94d04fa1eb80ff11b5c07eb56a436ce2d", &[]),
    ("minio presigned", "GET", "http://127.0.0.1:9000/cache/runner/abc/project/1/default%20key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240301%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240301T120000Z&X-Amz-Expires=7200&X-Amz-SignedHeaders=host&X-Amz-Signature=82bd6e4994e0f1c6ea107582c777057aa98b704a521a61a199eb897b7d2cfa54", &[]),
    ("minio presigned", "PUT", "http://127.0.0.1:9000/cache/runner/abc/project/1/default%20key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240301%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240301T120000Z&X-Amz-Expires=7200&X-Amz-SignedHeaders=host&X-Amz-Signature=21c08a491146881cf2c30bccec657a4b378a742eff64d7c8b6d10505e7c957cf", &[]),
];

const FIXTURE_NOW: &str = "20240301T120000Z";

#[test]
fn real_clients_verify() {
    for (client, method, url, headers) in CLIENT_FIXTURES {
        let verified = check(method, url, headers, at(FIXTURE_NOW, 120))
            .unwrap_or_else(|err| panic!("{client} {method} {url}: {err}"));
        let expected_kind = if client.ends_with("presigned") {
            AuthKind::Presigned
        } else {
            AuthKind::Header
        };
        assert_eq!(verified.kind, expected_kind, "{client} {method} {url}");
    }
}

#[test]
fn real_clients_signatures_fail_when_tampered() {
    let now = at(FIXTURE_NOW, 120);
    for (client, method, url, headers) in CLIENT_FIXTURES {
        let what = format!("{client} {method} {url}");
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let tampered_path = if query.is_empty() {
            format!("{path}x")
        } else {
            format!("{path}x?{query}")
        };
        assert_eq!(
            check(method, &tampered_path, headers, now).unwrap_err(),
            AuthError::SignatureDoesNotMatch,
            "path: {what}"
        );
        let joiner = if query.is_empty() { '?' } else { '&' };
        assert_eq!(
            check(method, &format!("{url}{joiner}partNumber=1"), headers, now).unwrap_err(),
            AuthError::SignatureDoesNotMatch,
            "query: {what}"
        );
        let other_method = if *method == "GET" { "HEAD" } else { "GET" };
        assert_eq!(
            check(other_method, url, headers, now).unwrap_err(),
            AuthError::SignatureDoesNotMatch,
            "method: {what}"
        );
        let other_host = url.replace("127.0.0.1:9000", "127.0.0.1:9001");
        assert_eq!(
            check(method, &other_host, headers, now).unwrap_err(),
            AuthError::SignatureDoesNotMatch,
            "host: {what}"
        );
    }
}

#[test]
fn a_signed_header_cannot_change() {
    let (client, method, url, headers) = CLIENT_FIXTURES
        .iter()
        .find(|(_, method, url, _)| {
            *method == "PUT" && url.contains("X-Amz-SignedHeaders=host%3Bx-amz-meta-cachekey")
        })
        .expect("the presigned PUT with a signed meta header");
    let mut changed: Vec<(&str, &str)> = headers.to_vec();
    for (name, value) in changed.iter_mut() {
        if *name == "x-amz-meta-cachekey" {
            *value = "another-key";
        }
    }
    let now = at(FIXTURE_NOW, 0);
    assert!(check(method, url, headers, now).is_ok(), "{client}");
    assert_eq!(
        check(method, url, &changed, now).unwrap_err(),
        AuthError::SignatureDoesNotMatch
    );
    // An unsigned header may change (GitLab Runner sends Content-Type unsigned).
    let mut extra = headers.to_vec();
    extra.push(("content-type", "application/octet-stream"));
    assert!(check(method, url, &extra, now).is_ok());
}

#[test]
fn header_auth_clock_skew_is_fifteen_minutes_either_way() {
    let (_, method, url, headers) = CLIENT_FIXTURES[0];
    assert!(check(method, url, headers, at(FIXTURE_NOW, 15 * 60)).is_ok());
    assert!(check(method, url, headers, at(FIXTURE_NOW, -15 * 60)).is_ok());
    for offset in [15 * 60 + 1, -(15 * 60 + 1), 86_400] {
        assert_eq!(
            check(method, url, headers, at(FIXTURE_NOW, offset)).unwrap_err(),
            AuthError::RequestTimeTooSkewed
        );
    }
}

#[test]
fn presigned_urls_expire_and_cannot_be_dated_ahead() {
    let (_, method, url, headers) = CLIENT_FIXTURES
        .iter()
        .find(|(client, ..)| *client == "minio presigned")
        .unwrap();
    assert!(check(method, url, headers, at(FIXTURE_NOW, 7200)).is_ok());
    assert_eq!(
        check(method, url, headers, at(FIXTURE_NOW, 7201)).unwrap_err(),
        AuthError::Expired
    );
    assert!(check(method, url, headers, at(FIXTURE_NOW, -15 * 60)).is_ok());
    assert_eq!(
        check(method, url, headers, at(FIXTURE_NOW, -(15 * 60 + 1))).unwrap_err(),
        AuthError::NotYetValid
    );
}

#[test]
fn presigned_expiry_is_at_most_seven_days() {
    let url = AWS_PRESIGNED.replace("X-Amz-Expires=86400", "X-Amz-Expires=604801");
    let err = check("GET", &url, &[], at("20130524T000000Z", 0)).unwrap_err();
    assert!(
        matches!(err, AuthError::BadExpiry(why) if why.contains("604800")),
        "{err}"
    );
    // Refused as access denied, with the reason, as S3 answers.
    let answer = S3Error::from(err);
    assert_eq!(answer.code, S3ErrorCode::AccessDenied);
    assert!(
        answer.message.contains("X-Amz-Expires"),
        "{}",
        answer.message
    );
    for bad in ["X-Amz-Expires=0", "X-Amz-Expires=-1"] {
        let url = AWS_PRESIGNED.replace("X-Amz-Expires=86400", bad);
        assert!(matches!(
            check("GET", &url, &[], at("20130524T000000Z", 0)).unwrap_err(),
            AuthError::BadExpiry(_)
        ));
    }
    let url = AWS_PRESIGNED.replace("X-Amz-Expires=86400", "X-Amz-Expires=soon");
    assert!(matches!(
        check("GET", &url, &[], at("20130524T000000Z", 0)).unwrap_err(),
        AuthError::QueryMalformed(_)
    ));
}

#[test]
fn presigned_parameters_are_all_required_once() {
    for name in [
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
    ] {
        let url: String = {
            let (path, query) = AWS_PRESIGNED.split_once('?').unwrap();
            let kept: Vec<&str> = query.split('&').filter(|p| !p.starts_with(name)).collect();
            format!("{path}?{}", kept.join("&"))
        };
        let err = check("GET", &url, &[], at("20130524T000000Z", 0)).unwrap_err();
        assert!(
            matches!(err, AuthError::QueryMalformed(ref why) if why.contains(name)),
            "{name}: {err}"
        );
    }
    let twice = format!("{AWS_PRESIGNED}&X-Amz-Date=20130524T000000Z");
    assert!(matches!(
        check("GET", &twice, &[], at("20130524T000000Z", 0)).unwrap_err(),
        AuthError::QueryMalformed(_)
    ));
    let other_algorithm = AWS_PRESIGNED.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1");
    assert!(matches!(
        check("GET", &other_algorithm, &[], at("20130524T000000Z", 0)).unwrap_err(),
        AuthError::QueryMalformed(_)
    ));
}

#[test]
fn unknown_access_key() {
    let auth = GET_OBJECT_AUTH.replace(AK, "AKIDONOTKNOW");
    let err = check(
        "GET",
        "http://examplebucket.s3.amazonaws.com/test.txt",
        &get_object_headers(&auth),
        at("20130524T000000Z", 0),
    )
    .unwrap_err();
    assert_eq!(err, AuthError::InvalidAccessKeyId);
    assert_eq!(S3Error::from(err).code, S3ErrorCode::InvalidAccessKeyId);
}

#[test]
fn temporary_credentials_get_their_own_error() {
    let mut headers = get_object_headers(GET_OBJECT_AUTH);
    headers.push(("x-amz-security-token", "FwoGZXIvYXdzEJr"));
    let err = check(
        "GET",
        "http://examplebucket.s3.amazonaws.com/test.txt",
        &headers,
        at("20130524T000000Z", 0),
    )
    .unwrap_err();
    assert_eq!(err, AuthError::TemporaryCredentials);
    let presigned = format!("{AWS_PRESIGNED}&X-Amz-Security-Token=FwoGZXIvYXdzEJr");
    assert_eq!(
        check("GET", &presigned, &[], at("20130524T000000Z", 0)).unwrap_err(),
        AuthError::TemporaryCredentials
    );
    let s3 = S3Error::from(err);
    assert_eq!(s3.code, S3ErrorCode::InvalidToken);
    assert!(s3.message.contains("access-key"), "{}", s3.message);
}

#[test]
fn requests_without_sigv4() {
    let url = "http://examplebucket.s3.amazonaws.com/test.txt";
    let now = at("20130524T000000Z", 0);
    assert_eq!(
        check("GET", url, &[], now).unwrap_err(),
        AuthError::Anonymous
    );
    assert!(matches!(
        check(
            "GET",
            url,
            &[(
                "authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg="
            )],
            now
        )
        .unwrap_err(),
        AuthError::Unsupported(_)
    ));
    assert!(matches!(
        check(
            "GET",
            &format!("{url}?AWSAccessKeyId=AK&Expires=1&Signature=x"),
            &[],
            now
        )
        .unwrap_err(),
        AuthError::Unsupported(_)
    ));
    let both = format!("{url}?X-Amz-Algorithm=AWS4-HMAC-SHA256");
    assert_eq!(
        check("GET", &both, &get_object_headers(GET_OBJECT_AUTH), now).unwrap_err(),
        AuthError::BothMechanisms
    );
}

#[test]
fn header_auth_needs_its_headers() {
    let url = "http://examplebucket.s3.amazonaws.com/test.txt";
    let now = at("20130524T000000Z", 0);
    let without = |name: &str| -> Vec<(&str, &str)> {
        get_object_headers(GET_OBJECT_AUTH)
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect()
    };
    assert_eq!(
        check("GET", url, &without("x-amz-content-sha256"), now).unwrap_err(),
        AuthError::MissingSecurityHeader("x-amz-content-sha256")
    );
    assert_eq!(
        check("GET", url, &without("x-amz-date"), now).unwrap_err(),
        AuthError::MissingSecurityHeader("x-amz-date")
    );
    let mut bad_hash = without("x-amz-content-sha256");
    bad_hash.push(("x-amz-content-sha256", "not-a-hash"));
    assert_eq!(
        check("GET", url, &bad_hash, now).unwrap_err(),
        AuthError::InvalidPayloadHash
    );
}

/// Found by the `sigv4_header` fuzz target (the AWS SDK's signer against the verifier): a signed
/// header whose name has a `.` was refused as malformed. botocore 1.43.11 signed this one at
/// 2026-11-29T14:08:59Z.
#[test]
fn signed_header_names_are_any_http_token() {
    let verified = check(
        "PUT",
        "http://127.0.0.1:9000/cache/k",
        &[
            ("x-amz-meta-build.id", "42"),
            ("x-amz-date", "20261129T140859Z"),
            ("x-amz-content-sha256", EMPTY_SHA256_HEX),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261129/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-build.id, Signature=d2bbe02738cbebc031639850671ba979b868f433256da665133e219525ca59bf"),
        ],
        at("20261129T140859Z", 0),
    )
    .expect("botocore's request with a dotted metadata name verifies");
    assert!(verified.is_signed("x-amz-meta-build.id"));
    for bad in [
        "host;X-Amz-Date",
        "host;a b",
        "host;a:b",
        "host;a/b",
        "host;",
    ] {
        let value = format!("AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders={bad},Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
        assert!(
            matches!(
                parse_authorization(&value),
                Err(AuthError::HeaderMalformed(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn authorization_header_parsing() {
    let parsed = parse_authorization(GET_OBJECT_AUTH).unwrap();
    assert_eq!(parsed.credential.access_key, AK);
    assert_eq!(parsed.credential.region, "us-east-1");
    assert_eq!(
        parsed.signed_headers,
        ["host", "range", "x-amz-content-sha256", "x-amz-date"]
    );
    // Spaces after commas, as botocore writes them, and any field order.
    let reordered = "AWS4-HMAC-SHA256 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request";
    assert_eq!(parse_authorization(reordered).unwrap(), parsed);
    let malformed = [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=range,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/sqs/aws4_request,SignedHeaders=host,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        "AWS4-HMAC-SHA256 Credential=AK/2013052/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=f0e8",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=Host,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41,Extra=1",
    ];
    for value in malformed {
        assert!(
            matches!(
                parse_authorization(value),
                Err(AuthError::HeaderMalformed(_))
            ),
            "{value}"
        );
    }
    let too_many = format!(
        "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=host{},Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ";x-amz-meta-a".repeat(MAX_SIGNED_HEADERS)
    );
    assert!(matches!(
        parse_authorization(&too_many),
        Err(AuthError::HeaderMalformed(_))
    ));
    let too_long = format!("{GET_OBJECT_AUTH}{}", " ".repeat(MAX_AUTHORIZATION_LEN));
    assert!(matches!(
        parse_authorization(&too_long),
        Err(AuthError::HeaderMalformed(_))
    ));
}

#[test]
fn canonical_forms() {
    // S3 encodes the path once: what a client sent encoded is decoded, then encoded again.
    assert_eq!(canonical_uri("/test%24file.text"), "/test%24file.text");
    assert_eq!(canonical_uri("/test$file.text"), "/test%24file.text");
    assert_eq!(canonical_uri("/a%2Fb//c~d%7E"), "/a/b//c~d~");
    assert_eq!(canonical_uri("/%C3%BC"), "/%C3%BC");
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(
        canonical_query(
            &crate::fronts::s3::request::parse_query(
                "b=2&a=&uploads&X-Amz-Signature=zz&a=1&k=a%20b+c&response%2Dcontent-type=x"
            )
            .unwrap()
        ),
        "a=&a=1&b=2&k=a%20b%2Bc&response-content-type=x&uploads="
    );
    let mut headers = HeaderMap::new();
    headers.append("x-amz-meta-a", "  one   two \t three ".parse().unwrap());
    headers.append("x-amz-meta-a", "four".parse().unwrap());
    let mut out = Vec::new();
    let (_, parsed, _) = request("GET", "http://127.0.0.1:9000/", &[]);
    canonical_header_value(&headers, &parsed, "x-amz-meta-a", &mut out);
    assert_eq!(out, b"one two three,four");
}

#[test]
fn amz_dates() {
    assert_eq!(
        parse_amz_date("20130524T000000Z"),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600))
    );
    for bad in [
        "20130524T000000",
        "2013-05-24T00:00:00Z",
        "20131324T000000Z",
        "20130524T250000Z",
        "20130524T0000+0Z",
    ] {
        assert_eq!(parse_amz_date(bad), None, "{bad}");
    }
}

/// The remembered signing key is the derived one for every scope, also after the scope
/// changes (a new day, another region) and back.
#[test]
fn remembered_signing_keys_are_the_derived_ones() {
    let secret = SecretKey::new(SECRET);
    let other = secret.clone();
    for (date, region) in [
        ("20130524", "us-east-1"),
        ("20130524", "us-east-1"),
        ("20130525", "us-east-1"),
        ("20130525", "eu-west-1"),
        ("20130524", "us-east-1"),
    ] {
        for holder in [&secret, &other] {
            let remembered = holder.signing_key(date, region, "s3");
            let derived = SigningKey::derive(&secret, date, region, "s3");
            assert_eq!(remembered.sign(b"x"), derived.sign(b"x"), "{date} {region}");
        }
    }
    assert_ne!(
        secret.signing_key("20130524", "us-east-1", "s3").sign(b"x"),
        SecretKey::new("another")
            .signing_key("20130524", "us-east-1", "s3")
            .sign(b"x")
    );
}
