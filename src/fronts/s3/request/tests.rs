//! The one reading of a request head: which authority it has, when it is refused, and how its
//! query is decoded.

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn parse(target: &str, version: Version, pairs: &[(&str, &str)]) -> Result<ParsedRequest, S3Error> {
    ParsedRequest::parse(&target.parse().unwrap(), version, &headers(pairs))
}

fn authority(request: &ParsedRequest) -> (&str, Option<u16>, &str) {
    let authority = request.authority().expect("an authority");
    (authority.host(), authority.port(), authority.as_sent())
}

fn refused(target: &str, version: Version, pairs: &[(&str, &str)]) -> S3ErrorCode {
    parse(target, version, pairs).expect_err("refused").code
}

#[test]
fn the_authority_comes_from_host_lowercase_with_its_port() {
    let request = parse(
        "/cache/k",
        Version::HTTP_11,
        &[("host", "Cache.S3.Local:9000")],
    )
    .unwrap();
    assert_eq!(
        authority(&request),
        ("cache.s3.local", Some(9000), "Cache.S3.Local:9000")
    );
    let no_port = parse("/", Version::HTTP_11, &[("host", "127.0.0.1")]).unwrap();
    assert_eq!(authority(&no_port), ("127.0.0.1", None, "127.0.0.1"));
    let empty_port = parse("/", Version::HTTP_11, &[("host", "h:")]).unwrap();
    assert_eq!(authority(&empty_port), ("h", None, "h:"));
    let ipv6 = parse("/", Version::HTTP_11, &[("host", "[::1]:9000")]).unwrap();
    assert_eq!(authority(&ipv6), ("[::1]", Some(9000), "[::1]:9000"));
    let ipv6_bare = parse("/", Version::HTTP_11, &[("host", "[FE80::1]")]).unwrap();
    assert_eq!(authority(&ipv6_bare), ("[fe80::1]", None, "[FE80::1]"));
    assert_eq!(request.path(), "/cache/k");
}

#[test]
fn the_authority_of_an_absolute_form_target() {
    // HTTP/1.0 may leave Host out: the target's authority is the request's.
    let request = parse(
        "http://Runner-Cache.vhost.test:9000/other/secret.txt?x=1",
        Version::HTTP_10,
        &[],
    )
    .unwrap();
    assert_eq!(
        authority(&request),
        (
            "runner-cache.vhost.test",
            Some(9000),
            "Runner-Cache.vhost.test:9000"
        )
    );
    assert_eq!(request.path(), "/other/secret.txt");
    assert_eq!(request.param("x"), Some("1"));
    // With a Host naming the same place (case and the scheme's default port aside), the Host
    // as sent is what the client signed.
    for (target, host) in [
        ("http://bucket.vhost.test:9000/k", "BUCKET.vhost.test:9000"),
        ("http://bucket.vhost.test/k", "bucket.vhost.test:80"),
        ("http://bucket.vhost.test:80/k", "bucket.vhost.test"),
        ("https://bucket.vhost.test/k", "bucket.vhost.test:443"),
    ] {
        let request = parse(target, Version::HTTP_11, &[("host", host)]).unwrap();
        assert_eq!(request.authority().unwrap().as_sent(), host, "{target}");
        assert_eq!(request.authority().unwrap().host(), "bucket.vhost.test");
    }
}

/// The request of the issue: a URL presigned virtual-host style for
/// `runner-cache.<vhost>/other/secret.txt`, sent absolute-form with no Host (HTTP/1.1) or with
/// a Host that names another place. Either reading would be the wrong one for somebody.
#[test]
fn a_target_and_host_that_disagree_or_a_missing_host_are_refused() {
    let target = "http://runner-cache.vhost.test:9000/other/secret.txt";
    for host in [
        "127.0.0.1:9000",
        "runner-cache.vhost.test:9001",
        "other.vhost.test:9000",
        "runner-cache.vhost.test",
    ] {
        assert_eq!(
            refused(target, Version::HTTP_11, &[("host", host)]),
            S3ErrorCode::InvalidRequest,
            "{host}"
        );
    }
    // HTTP/1.1 must send Host, absolute-form or not; an empty one names nothing.
    assert_eq!(
        refused(target, Version::HTTP_11, &[]),
        S3ErrorCode::InvalidRequest
    );
    assert_eq!(
        refused("/cache/k", Version::HTTP_11, &[]),
        S3ErrorCode::InvalidRequest
    );
    assert_eq!(
        refused("/cache/k", Version::HTTP_11, &[("host", "")]),
        S3ErrorCode::InvalidRequest
    );
    // HTTP/1.0 without either has no authority: path style only.
    let old = parse("/cache/k", Version::HTTP_10, &[]).unwrap();
    assert_eq!(old.authority(), None);
}

#[test]
fn repeated_or_malformed_hosts_are_refused() {
    let code = |pairs: &[(&str, &str)]| refused("/cache/k", Version::HTTP_11, pairs);
    assert_eq!(
        code(&[("host", "a.test"), ("host", "a.test")]),
        S3ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(&[("host", "a.test"), ("host", "b.test")]),
        S3ErrorCode::InvalidRequest
    );
    for bad in [
        "user@a.test",
        "a.test:9000:1",
        "a.test:65536",
        "a.test:123456",
        "a.test:-1",
        "a.test:x",
        "a test",
        "a.test/b",
        "a.test?b",
        ":9000",
        "[::1",
        "[::1]x",
        "[]:1",
        "[zz::1]",
        "a%2etest",
        "a,b.test",
    ] {
        assert_eq!(
            code(&[("host", bad)]),
            S3ErrorCode::InvalidRequest,
            "{bad:?}"
        );
    }
    assert_eq!(
        refused("http://user@a.test/k", Version::HTTP_10, &[]),
        S3ErrorCode::InvalidRequest
    );
}

#[test]
fn query_names_and_values_are_decoded_as_s3_decodes_them() {
    let request = parse(
        "/b/k?response%2Dcontent-type=text%2Fhtml&partNumber=1&uploads&a+b=c+d&x-id=GetObject&e=",
        Version::HTTP_11,
        &[("host", "h")],
    )
    .unwrap();
    assert_eq!(
        request.query(),
        [
            ("response-content-type".to_owned(), "text/html".to_owned()),
            ("partNumber".to_owned(), "1".to_owned()),
            ("uploads".to_owned(), String::new()),
            ("a+b".to_owned(), "c+d".to_owned()),
            ("x-id".to_owned(), "GetObject".to_owned()),
            ("e".to_owned(), String::new()),
        ]
    );
    assert_eq!(request.param("response-content-type"), Some("text/html"));
    assert_eq!(request.param("response%2Dcontent-type"), None);
    // A parameter that is not UTF-8 once decoded is no S3 parameter.
    assert_eq!(
        refused("/b/k?prefix=%FF", Version::HTTP_11, &[("host", "h")]),
        S3ErrorCode::InvalidURI
    );
    assert_eq!(
        refused("/b/k?%C3=1", Version::HTTP_11, &[("host", "h")]),
        S3ErrorCode::InvalidURI
    );
}

#[test]
fn a_host_only_the_target_carried_is_added_for_what_reads_headers() {
    let request = parse("http://b.vhost.test:9000/k", Version::HTTP_10, &[]).unwrap();
    let mut map = HeaderMap::new();
    request.complete_host(&mut map);
    assert_eq!(map[header::HOST], "b.vhost.test:9000");
    let mut kept = headers(&[("host", "b.vhost.test:9000")]);
    let with_host = ParsedRequest::parse(
        &"http://B.vhost.test:9000/k".parse().unwrap(),
        Version::HTTP_11,
        &kept,
    )
    .unwrap();
    with_host.complete_host(&mut kept);
    assert_eq!(kept.get_all(header::HOST).iter().count(), 1);
    assert_eq!(kept[header::HOST], "b.vhost.test:9000");
}
