//! The S3 listener reads each request head once (authority, path, decoded query) and routes,
//! checks signatures and forwards by that one reading. Over real sockets against the daemon,
//! with the request lines written by hand where no client would send them:
//!
//! - a URL presigned virtual-host style for `runner-cache.<vhost>/other/secret.txt`, sent with
//!   an absolute-form request line and no `Host` (or a `Host` naming another place), is refused;
//!   over HTTP/1.0, where `Host` may be left out, it reaches the bucket it was signed for and
//!   never bucket `other`;
//! - two `Host` headers are refused, on the front and in the forward mode (where nothing then
//!   reaches S3);
//! - `Connection: host` on a forwarded request still sends `Host` to S3.
//!
//! The forward mode's "S3" here is a stub that records the request heads it receives and
//! answers 404: what matters is what the node sends on, byte for byte. The front's buckets are
//! local, so none of these tests needs SeaweedFS.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use common::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "runner";
const SECRET: &str = "runner-secret-0123456789";
const VHOST: &str = "vhost.test";
const FORWARDED_HOST: &str = "s3.forward.test";

fn front_config() -> String {
    format!(
        r#"
[s3_api]
virtual_hosts = ["{VHOST}"]

[[s3_api.buckets]]
name = "runner-cache"
write = "local"

[[s3_api.buckets]]
name = "other"
write = "local"

[[s3_api.buckets]]
name = "artifacts"
write = "local"

[[s3_api.credentials]]
access_key = "{KEY}"
secret_key = "{SECRET}"
buckets = {{ runner-cache = "readwrite", other = "readwrite", artifacts = "readwrite" }}
"#
    )
}

/// A client of the front that addresses buckets virtual-host style under `endpoint` (it only
/// presigns here: nothing resolves `*.vhost.test`).
fn vhost_signer(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(false)
        .credentials_provider(Credentials::new(KEY, SECRET, None, None, "test"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn presigning() -> PresigningConfig {
    PresigningConfig::expires_in(Duration::from_secs(600)).unwrap()
}

/// Writes `request` on a new connection to `addr` and reads the answer until the daemon closes
/// the connection (every request here says `Connection: close` or is HTTP/1.0).
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the daemon answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_virtual_host_url_reaches_only_the_bucket_it_signs() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), &front_config());
    let port = daemon.s3.port();
    let front = common::s3::client_as(&daemon.s3_url(), KEY, SECRET);
    // What the path would name path style, and what the signature covers.
    for (bucket, key, body) in [
        ("other", "secret.txt", "the other bucket's secret"),
        (
            "runner-cache",
            "other/secret.txt",
            "runner-cache's own object",
        ),
    ] {
        front
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }

    let signer = vhost_signer(&format!("http://{VHOST}:{port}"));
    let get = signer
        .get_object()
        .bucket("runner-cache")
        .key("other/secret.txt")
        .presigned(presigning())
        .await
        .unwrap();
    let url: http::Uri = get.uri().parse().unwrap();
    let signed_host = format!("runner-cache.{VHOST}:{port}");
    assert_eq!(url.authority().unwrap().as_str(), signed_host);
    assert_eq!(url.path(), "/other/secret.txt");
    let target = get.uri();

    // HTTP/1.1 without Host, or with a Host that is not the target's: refused, whatever the
    // path would name path style.
    for host in [
        String::new(),
        format!("Host: 127.0.0.1:{port}\r\n"),
        format!("Host: other.{VHOST}:{port}\r\n"),
        format!("Host: {signed_host}\r\nHost: {signed_host}\r\n"),
    ] {
        let answer = exchange(
            daemon.s3,
            format!("GET {target} HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&answer), "400", "{host:?}: {answer}");
        assert!(answer.contains("<Code>InvalidRequest</Code>"), "{answer}");
        assert!(!answer.contains("'s "), "an object was served: {answer}");
    }

    // The signed reading, absolute-form over HTTP/1.0 (no Host needed) or with the signed Host:
    // the bucket the signature covers, never bucket `other`.
    for request in [
        format!("GET {target} HTTP/1.0\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\nHost: {signed_host}\r\nConnection: close\r\n\r\n"),
        format!(
            "GET {} HTTP/1.1\r\nHost: {signed_host}\r\nConnection: close\r\n\r\n",
            url.path_and_query().unwrap()
        ),
    ] {
        let answer = exchange(daemon.s3, request.as_bytes()).await;
        assert_eq!(status(&answer), "200", "{request}: {answer}");
        assert_eq!(body(&answer), "runner-cache's own object", "{request}");
    }

    // A PUT URL signed for runner-cache/artifacts/evil.bin writes no bucket `artifacts`.
    let put = signer
        .put_object()
        .bucket("runner-cache")
        .key("artifacts/evil.bin")
        .presigned(presigning())
        .await
        .unwrap();
    let refused = exchange(
        daemon.s3,
        format!(
            "PUT {} HTTP/1.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil",
            put.uri()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&refused), "400", "{refused}");
    let stored = exchange(
        daemon.s3,
        format!(
            "PUT {} HTTP/1.0\r\nContent-Length: 4\r\n\r\nevil",
            put.uri()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&stored), "200", "{stored}");
    let in_artifacts = front
        .head_object()
        .bucket("artifacts")
        .key("evil.bin")
        .send()
        .await;
    assert!(in_artifacts.is_err(), "bucket artifacts got evil.bin");
    let in_runner_cache = front
        .get_object()
        .bucket("runner-cache")
        .key("artifacts/evil.bin")
        .send()
        .await
        .unwrap();
    let bytes = in_runner_cache.body.collect().await.unwrap().into_bytes();
    assert_eq!(&bytes[..], b"evil");
}

/// Path-style requests with two `Host` headers, or none, are refused on the front too, even
/// where both name the same place; a signed request with one `Host` still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_refuses_two_hosts_or_none() {
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), &front_config());
    let host = format!("127.0.0.1:{}", daemon.s3.port());
    let front = common::s3::client_as(&daemon.s3_url(), KEY, SECRET);
    front
        .put_object()
        .bucket("other")
        .key("k")
        .body(b"kept".to_vec().into())
        .send()
        .await
        .unwrap();
    let get = front
        .get_object()
        .bucket("other")
        .key("k")
        .presigned(presigning())
        .await
        .unwrap();
    let url: http::Uri = get.uri().parse().unwrap();
    let path = url.path_and_query().unwrap();
    for headers in [
        format!("Host: {host}\r\nHost: {host}\r\n"),
        format!("Host: {host}\r\nHost: runner-cache.{VHOST}\r\n"),
        String::new(),
    ] {
        let answer = exchange(
            daemon.s3,
            format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&answer), "400", "{headers:?}: {answer}");
        assert!(answer.contains("<Code>InvalidRequest</Code>"), "{answer}");
    }
    let answer = exchange(
        daemon.s3,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), "200", "{answer}");
    assert_eq!(body(&answer), "kept");
}

/// A stand-in for S3 that records every request head it receives and answers 404.
struct RecordingS3 {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RecordingS3 {
    async fn start() -> RecordingS3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    recorded
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let _ = stream
                        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        RecordingS3 { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// The values of `name` in a recorded request head.
fn header_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forward_mode_sends_one_host_whatever_connection_says_and_refuses_two() {
    let s3 = RecordingS3::start().await;
    let config = format!(
        r#"
[[s3_api.forward]]
namespace = "fwd-stub"
hosts = ["{FORWARDED_HOST}"]
endpoint = "http://{}"
"#,
        s3.addr
    );
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(work.path(), &config);
    let host = format!("bucket.{FORWARDED_HOST}:{}", s3.addr.port());
    let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host&X-Amz-Signature=00";

    // `Connection: host` (and the signature's own headers named there too): Host still goes on,
    // once, as the client sent it, and so do Authorization and x-amz-*.
    let answer = exchange(
        daemon.s3,
        format!(
            "GET /k?{query} HTTP/1.1\r\nHost: {host}\r\nAuthorization: x\r\nx-amz-date: 20260101T000000Z\r\nConnection: host, authorization, x-amz-date, close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), "404", "{answer}");
    let heads = s3.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with(&format!("GET /k?{query} HTTP/1.1\r\n")));
    assert_eq!(
        header_values(&heads[0], "host"),
        std::slice::from_ref(&host)
    );
    assert_eq!(header_values(&heads[0], "authorization"), ["x"]);
    assert_eq!(header_values(&heads[0], "x-amz-date"), ["20260101T000000Z"]);

    // Two Hosts, or a Host that is not the absolute-form target's: refused, nothing forwarded.
    for request in [
        format!("GET /k?{query} HTTP/1.1\r\nHost: {host}\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("GET /k?{query} HTTP/1.1\r\nHost: {host}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        format!("GET http://{host}/k?{query} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", daemon.s3.port()),
        format!("GET http://127.0.0.1/k?{query} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("GET http://{host}/k?{query} HTTP/1.1\r\nConnection: close\r\n\r\n"),
    ] {
        let answer = exchange(daemon.s3, request.as_bytes()).await;
        assert_eq!(status(&answer), "400", "{request}: {answer}");
        assert!(answer.contains("<Code>InvalidRequest</Code>"), "{answer}");
    }
    assert_eq!(s3.heads().len(), 1, "a refused request reached S3");

    // HTTP/1.0 with only the absolute-form target: forwarded with that authority as its Host
    // (what the client signed), in origin form.
    let answer = exchange(
        daemon.s3,
        format!("GET http://{host}/k?{query} HTTP/1.0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), "404", "{answer}");
    let heads = s3.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[1].starts_with(&format!("GET /k?{query} HTTP/1.1\r\n")));
    assert_eq!(header_values(&heads[1], "host"), [host]);
}
