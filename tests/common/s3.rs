//! S3 test helpers: a client for the real S3 server the tests run against (SeaweedFS, started by
//! `scripts/test.sh`), a fresh bucket per test, daemon configs pointing at it, and a TCP
//! forwarder that can be stopped (real connection refusal), throttled, or made to cut a
//! response off mid-stream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::primitives::ByteStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::DaemonSpec;

pub const ACCESS_KEY: &str = "AK";
pub const SECRET_KEY: &str = "SK";
pub const REGION: &str = "us-east-1";

/// The S3 endpoint under test, from `BCP_TEST_S3_ENDPOINT`.
pub fn endpoint() -> String {
    match std::env::var("BCP_TEST_S3_ENDPOINT") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "BCP_TEST_S3_ENDPOINT is not set: these tests need a real S3 server. \
             Run them through scripts/test.sh, which starts SeaweedFS and sets it \
             (e.g. BCP_TEST_S3_ENDPOINT=http://127.0.0.1:8333, access key AK, secret key SK)."
        ),
    }
}

/// An aws-sdk-s3 client for `endpoint` with the test credentials.
pub fn client(endpoint: &str) -> aws_sdk_s3::Client {
    client_as(endpoint, ACCESS_KEY, SECRET_KEY)
}

/// An aws-sdk-s3 client for `endpoint` with the given keys (e.g. the S3 front's).
pub fn client_as(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(access_key, secret_key, None, None, "test"))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Creates a bucket no other test uses.
pub async fn fresh_bucket(client: &aws_sdk_s3::Client, test: &str) -> String {
    let name = format!(
        "bcp-{}-{}-{:08x}",
        test.replace('_', "-"),
        std::process::id(),
        fastrand::u32(..)
    );
    let name: String = name.chars().take(63).collect();
    client
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create bucket {name} at {}: {}",
                endpoint(),
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    name
}

/// Deletes a test's bucket and everything in it (tests call it at their end, so a local S3
/// server does not fill up with test objects run after run).
pub async fn remove_bucket(client: &aws_sdk_s3::Client, bucket: &str) {
    loop {
        let listed = client
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        if listed.contents().is_empty() {
            break;
        }
        for object in listed.contents() {
            if let Some(key) = object.key() {
                let _ = client.delete_object().bucket(bucket).key(key).send().await;
            }
        }
    }
    let _ = client.delete_bucket().bucket(bucket).send().await;
}

/// The object key of a Gradle entry under the documented layout (no prefix).
pub fn gradle_object(key: &str) -> String {
    format!("gradle/{key}")
}

/// A daemon config using `bucket` at `endpoint`; `extra_s3` adds lines to `[s3]`, `rest`
/// adds sections after it.
pub fn config(bucket: &str, endpoint: &str, extra_s3: &str, rest: &str) -> String {
    format!(
        "[s3]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\nforce_path_style = true\nregion = \"{REGION}\"\n{extra_s3}\n{rest}\n"
    )
}

/// A spec with the S3 credentials in the environment, as the AWS default chain reads them.
pub fn spec(config: &str) -> DaemonSpec {
    DaemonSpec::new(config)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        // Never wander off to an instance metadata service from a test.
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

/// Reads an object whole, `None` if it does not exist.
pub async fn object(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => None,
        Err(e) => panic!(
            "get {bucket}/{key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        ),
    }
}

/// The user metadata of an object.
pub async fn object_metadata(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> std::collections::HashMap<String, String> {
    let out = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    out.metadata().cloned().unwrap_or_default()
}

/// The CRC32C S3 keeps for an object the daemon uploaded: our metadata, or (for a
/// write-through uploaded while its body arrived) S3's own full-object CRC32C.
pub async fn object_crc32c(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<u32> {
    let out = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    if let Some(hex) = out
        .metadata()
        .and_then(|m| m.get("build-cache-proxy-crc32c"))
    {
        return u32::from_str_radix(hex, 16).ok();
    }
    if out.checksum_type() != Some(&aws_sdk_s3::types::ChecksumType::FullObject) {
        return None;
    }
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(out.checksum_crc32_c()?)
        .ok()?;
    Some(u32::from_be_bytes(raw.try_into().ok()?))
}

pub async fn put_object(client: &aws_sdk_s3::Client, bucket: &str, key: &str, data: Vec<u8>) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data))
        .customize()
        // SigV4 would hash the payload, which is slow in a debug build; the test needs no
        // integrity protection on loopback.
        .disable_payload_signing()
        .send()
        .await
        .unwrap();
}

/// Uploads `len` bytes made by `chunk(i)` (each `part` bytes but the last) as a multipart
/// upload, so a large object never sits whole in the test's memory.
pub async fn put_large_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    len: u64,
    part: usize,
    chunk: impl Fn(usize) -> Vec<u8>,
) {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let id = created.upload_id().unwrap();
    let mut parts = Vec::new();
    let count = len.div_ceil(part as u64) as usize;
    for i in 0..count {
        let data = chunk(i);
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(i as i32 + 1)
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .set_e_tag(out.e_tag().map(str::to_string))
                .part_number(i as i32 + 1)
                .build(),
        );
    }
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// A TCP forwarder in front of the S3 server. Stopping it closes the listener and every open
/// connection, so clients see real connection refusals and resets; it can start again on the
/// same port. Responses (server → client) can be throttled or cut off after some bytes.
pub struct Forwarder {
    pub addr: SocketAddr,
    target: SocketAddr,
    control: Arc<Control>,
    running: Mutex<Option<JoinSet<()>>>,
}

#[derive(Default)]
struct Control {
    /// Server-to-client bytes per second per connection; 0 = unlimited.
    rate: AtomicU64,
    /// Server-to-client bytes after which a connection is cut; 0 = never.
    cut_after: AtomicU64,
    /// Connections still to cut (`u64::MAX`: every one).
    cuts_left: AtomicU64,
    /// Server-to-client bytes forwarded, over all connections.
    forwarded: AtomicU64,
    stopping: AtomicBool,
    /// New connections are accepted and then left unanswered: a hung S3.
    hang: AtomicBool,
}

impl Forwarder {
    /// Starts forwarding a fresh loopback port to the endpoint's host:port.
    pub async fn start(endpoint: &str) -> Forwarder {
        let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let target: SocketAddr = tokio::net::lookup_host(hostport)
            .await
            .unwrap()
            .next()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fwd = Forwarder {
            addr,
            target,
            control: Arc::new(Control::default()),
            running: Mutex::new(None),
        };
        fwd.run(listener);
        fwd
    }

    /// `http://127.0.0.1:<port>`, the endpoint to give the daemon.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn run(&self, listener: TcpListener) {
        self.control.stopping.store(false, Ordering::SeqCst);
        let mut set = JoinSet::new();
        let control = self.control.clone();
        let target = self.target;
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let control = control.clone();
                conns.spawn(async move {
                    if control.hang.load(Ordering::SeqCst) {
                        // Read and ignore the request; never answer.
                        let mut client = client;
                        let mut sink = vec![0u8; 64 * 1024];
                        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                        return;
                    }
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut sent = 0u64;
                        let started = tokio::time::Instant::now();
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let cut = control.cut_after.load(Ordering::SeqCst);
                            // Claim one of the cuts left before cutting this connection.
                            let cutting = cut > 0
                                && sent + n as u64 >= cut
                                && control
                                    .cuts_left
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                                        match left {
                                            0 => None,
                                            u64::MAX => Some(u64::MAX),
                                            left => Some(left - 1),
                                        }
                                    })
                                    .is_ok();
                            let n = if cutting { (cut - sent) as usize } else { n };
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            sent += n as u64;
                            control.forwarded.fetch_add(n as u64, Ordering::SeqCst);
                            if cutting {
                                // Cut: the connection dies mid-response.
                                return;
                            }
                            let rate = control.rate.load(Ordering::SeqCst);
                            if rate > 0 {
                                // Pace by the total, not per read: timers are too coarse for
                                // sub-millisecond sleeps.
                                let due =
                                    started + Duration::from_secs_f64(sent as f64 / rate as f64);
                                tokio::time::sleep_until(due).await;
                            }
                        }
                        let _ = cw.shutdown().await;
                    };
                    // Either direction ending for good (a cut, a reset) ends the connection.
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        _ = async {
                            loop {
                                if control.stopping.load(Ordering::SeqCst) {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        } => {}
                    }
                });
                // Reap finished connection tasks.
                while conns.try_join_next().is_some() {}
            }
        });
        *self.running.lock().unwrap() = Some(set);
    }

    /// Stops listening and resets every open connection: S3 is now down.
    pub async fn stop(&self) {
        self.control.stopping.store(true, Ordering::SeqCst);
        let set = self.running.lock().unwrap().take();
        if let Some(mut set) = set {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }

    /// Listens again on the same port: S3 is back.
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.run(listener);
    }

    /// Throttles every response to `bytes_per_second` per connection (0: unlimited).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.control.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Makes new connections hang (accepted, never answered) or behave again.
    pub fn hang(&self, hang: bool) {
        self.control.hang.store(hang, Ordering::SeqCst);
    }

    /// Cuts every connection after it carried `bytes` of response (0: never).
    pub fn cut_after(&self, bytes: u64) {
        self.control.cuts_left.store(u64::MAX, Ordering::SeqCst);
        self.control.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Cuts the next connection that carries `bytes` of response, and no other.
    pub fn cut_once_after(&self, bytes: u64) {
        self.control.cuts_left.store(1, Ordering::SeqCst);
        self.control.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Response bytes forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.control.forwarded.load(Ordering::SeqCst)
    }
}
