//! The S3 forward mode against SeaweedFS as "the real S3": requests signed for SeaweedFS's
//! host, with keys only SeaweedFS knows, reach the daemon's socket with `Host` naming that
//! host (as a cluster's DNS or host alias would send them). The daemon has no `[s3]` and no
//! credentials: S3 alone decides, and the node serves its copy when S3 says it is current.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use common::clients::{java_sdk_jar, run};
use common::s3::{self as s3t, client, client_as, endpoint, fresh_bucket, remove_bucket};
use common::{metric_value, metrics, Daemon, DaemonSpec};
use md5::{Digest, Md5};

/// The name clients sign for; the tests send its requests to the daemon instead.
const FORWARDED_HOST: &str = "s3.forward.test";
const NAMESPACE: &str = "fwd-seaweed";
const LOCAL_BYTES: &str = "build_cache_proxy_forward_served_bytes_total{source=\"local\"}";
const S3_BYTES: &str = "build_cache_proxy_forward_served_bytes_total{source=\"s3\"}";
const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

/// SeaweedFS's port: clients sign `s3.forward.test:<port>` and the daemon forwards there.
fn s3_port() -> u16 {
    endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("BCP_TEST_S3_ENDPOINT has a port")
}

/// The endpoint as clients name it.
fn forwarded_endpoint() -> String {
    format!("http://{FORWARDED_HOST}:{}", s3_port())
}

/// The daemon's config: a forward entry and nothing else about S3.
fn forward_config() -> String {
    forward_entry(&endpoint(), "")
}

/// A forward entry sending to `to`, with `extra` lines in it.
fn forward_entry(to: &str, extra: &str) -> String {
    format!(
        r#"
[[s3_api.forward]]
namespace = "{NAMESPACE}"
hosts = ["{FORWARDED_HOST}"]
endpoint = "{to}"
{extra}
"#
    )
}

/// Where the AWS SDKs look for credentials in the environment (IRSA's two included).
const CREDENTIAL_VARIABLES: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_PROFILE",
];

fn start(work: &Path) -> Daemon {
    start_with(work, &forward_config())
}

fn start_with(work: &Path, config: &str) -> Daemon {
    // No AWS credentials in the daemon's environment either.
    let mut spec = DaemonSpec::new(config).env("AWS_EC2_METADATA_DISABLED", "true");
    for name in CREDENTIAL_VARIABLES {
        spec = spec.env(name, "");
    }
    Daemon::start_spec(work, spec)
}

/// A client that signs for the forwarded host with SeaweedFS's keys (which the daemon lacks).
fn signer() -> aws_sdk_s3::Client {
    client_as(&forwarded_endpoint(), s3t::ACCESS_KEY, s3t::SECRET_KEY)
}

fn presigning(expires: Duration) -> PresigningConfig {
    PresigningConfig::expires_in(expires).unwrap()
}

/// Sends a presigned request to the daemon: the URL's path and query and its headers as they
/// are, `Host` naming the forwarded host.
async fn send(
    daemon: &Daemon,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> reqwest::Response {
    send_from(reqwest::Client::new(), daemon, method, url, headers, body).await
}

/// [`send`] with `client` (one bound to another loopback address, say).
async fn send_from(
    client: reqwest::Client,
    daemon: &Daemon,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> reqwest::Response {
    let url: reqwest::Url = url.parse().unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut to_daemon = url.clone();
    to_daemon.set_host(Some("127.0.0.1")).unwrap();
    to_daemon.set_port(Some(daemon.s3.port())).unwrap();
    let mut request = client
        .request(method.parse().unwrap(), to_daemon)
        .header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    request.send().await.unwrap()
}

async fn send_presigned(
    daemon: &Daemon,
    presigned: &PresignedRequest,
    extra: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> reqwest::Response {
    let mut headers: Vec<(&str, &str)> = presigned.headers().collect();
    headers.extend_from_slice(extra);
    send(daemon, presigned.method(), presigned.uri(), &headers, body).await
}

async fn presigned_get(bucket: &str, key: &str) -> PresignedRequest {
    signer()
        .get_object()
        .bucket(bucket)
        .key(key)
        .presigned(presigning(Duration::from_secs(600)))
        .await
        .unwrap()
}

async fn presigned_put(bucket: &str, key: &str) -> PresignedRequest {
    signer()
        .put_object()
        .bucket(bucket)
        .key(key)
        .presigned(presigning(Duration::from_secs(600)))
        .await
        .unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

async fn counters(daemon: &Daemon) -> (f64, f64) {
    let text = metrics(daemon).await;
    (
        metric_value(&text, LOCAL_BYTES),
        metric_value(&text, S3_BYTES),
    )
}

async fn get_body(daemon: &Daemon, presigned: &PresignedRequest) -> (u16, Vec<u8>) {
    let response = send_presigned(daemon, presigned, &[], None).await;
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_put_get_head_are_authorized_by_s3_and_served_from_the_node() {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-presigned").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path());

    // PUT through the daemon: S3 has it, and so does the node.
    let uploaded = pattern(3 << 20, 1);
    let put = presigned_put(&bucket, "cache/archive.zip").await;
    let response = send_presigned(&daemon, &put, &[], Some(uploaded.clone())).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", hex::encode(Md5::digest(&uploaded))));
    assert_eq!(
        s3t::object(&s3, &bucket, "cache/archive.zip")
            .await
            .as_deref(),
        Some(&uploaded[..])
    );

    // GET: S3 answers 304 to the node's If-None-Match, the bytes come from the node.
    let get = presigned_get(&bucket, "cache/archive.zip").await;
    let (local_before, s3_before) = counters(&daemon).await;
    let (status, body) = get_body(&daemon, &get).await;
    assert_eq!(status, 200);
    assert!(body == uploaded, "GET after PUT returned other bytes");
    let (local, from_s3) = counters(&daemon).await;
    assert_eq!(local - local_before, uploaded.len() as f64);
    assert_eq!(from_s3, s3_before);

    // A range of the cached object is served locally too.
    let response = send_presigned(&daemon, &get, &[("range", "bytes=100-199")], None).await;
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 100-199/{}", uploaded.len()).as_str()
    );
    assert_eq!(&response.bytes().await.unwrap()[..], &uploaded[100..200]);
    assert_eq!(counters(&daemon).await.0 - local, 100.0);

    // HEAD goes to S3 and returns S3's headers.
    let head = signer()
        .head_object()
        .bucket(&bucket)
        .key("cache/archive.zip")
        .presigned(presigning(Duration::from_secs(600)))
        .await
        .unwrap();
    let response = send_presigned(&daemon, &head, &[], None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(
        response.headers()["content-length"],
        uploaded.len().to_string().as_str()
    );

    // An object written to S3 directly: the first GET streams from S3 (and fills), the
    // second is served from the node.
    let direct = pattern(700_000, 7);
    s3t::put_object(&s3, &bucket, "direct.bin", direct.clone()).await;
    let get = presigned_get(&bucket, "direct.bin").await;
    let (local_before, s3_before) = counters(&daemon).await;
    let (status, body) = get_body(&daemon, &get).await;
    assert_eq!(status, 200);
    assert!(body == direct);
    let (local_after_first, s3_after_first) = counters(&daemon).await;
    assert_eq!(s3_after_first - s3_before, direct.len() as f64);
    assert_eq!(local_after_first, local_before);
    let (status, body) = get_body(&daemon, &get).await;
    assert_eq!(status, 200);
    assert!(body == direct);
    let (local_after_second, s3_after_second) = counters(&daemon).await;
    assert_eq!(local_after_second - local_after_first, direct.len() as f64);
    assert_eq!(s3_after_second, s3_after_first);
    // The status page's reads count them as the forward mode's, by where the bytes came from:
    // three GETs served by the node (whole, ranged, the filled copy) and one streamed from S3.
    let text = metrics(&daemon).await;
    let reads = |tier: &str| {
        metric_value(
            &text,
            &format!(
                "build_cache_proxy_reads_total{{front=\"forward\",result=\"hit\",tier=\"{tier}\"}}"
            ),
        )
    };
    assert_eq!(reads("memory") + reads("disk"), 3.0);
    assert_eq!(reads("s3"), 1.0);
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_reads_total{front=\"s3\",result=\"hit\",tier=\"s3\"}"
        ),
        0.0
    );

    // Changed behind the node's back: served new, then the new bytes are local.
    let changed = pattern(500_000, 9);
    s3t::put_object(&s3, &bucket, "direct.bin", changed.clone()).await;
    let (status, body) = get_body(&daemon, &get).await;
    assert_eq!(status, 200);
    assert!(body == changed, "a changed object must be served new");
    let local_now = counters(&daemon).await.0;
    let (_, body) = get_body(&daemon, &get).await;
    assert!(body == changed);
    assert_eq!(counters(&daemon).await.0 - local_now, changed.len() as f64);

    // Deleted behind the node's back: S3's 404, and the copy is gone.
    s3.delete_object()
        .bucket(&bucket)
        .key("direct.bin")
        .send()
        .await
        .unwrap();
    let (status, body) = get_body(&daemon, &get).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("NoSuchKey"));

    let metrics_text = metrics(&daemon).await;
    assert!(
        metric_value(
            &metrics_text,
            "build_cache_proxy_forward_requests_total{operation=\"GetObject\",status=\"304\"}"
        ) >= 4.0,
        "{metrics_text}"
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_wrong_method_or_unknown_key_urls_get_403_even_when_cached() {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-refused").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path());
    let data = pattern(200_000, 3);
    let put = presigned_put(&bucket, "secret.bin").await;
    let response = send_presigned(&daemon, &put, &[], Some(data.clone())).await;
    assert_eq!(response.status(), 200);
    // Cached: a good GET is served from the node.
    let get = presigned_get(&bucket, "secret.bin").await;
    let (status, body) = get_body(&daemon, &get).await;
    assert_eq!((status, body == data), (200, true));
    let (local_cached, _) = counters(&daemon).await;
    assert_eq!(local_cached, data.len() as f64);

    // One character of the signature changed.
    let url = get.uri().to_string();
    let at = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let flipped = if &url[at..at + 1] == "0" { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &url[..at], &url[at + 1..]);
    let response = send(&daemon, "GET", &tampered, &[], None).await;
    assert_eq!(response.status(), 403);

    // Another key in the same URL (the signature was for secret.bin).
    let other = url.replace("/secret.bin?", "/secret.bim?");
    assert_eq!(send(&daemon, "GET", &other, &[], None).await.status(), 403);

    // Expired: valid for a minute, an hour ago.
    let expired = signer()
        .get_object()
        .bucket(&bucket)
        .key("secret.bin")
        .presigned(
            PresigningConfig::builder()
                .start_time(SystemTime::now() - Duration::from_secs(3600))
                .expires_in(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        send_presigned(&daemon, &expired, &[], None).await.status(),
        403
    );

    // The PUT URL used for a GET, and the GET URL for a HEAD.
    assert_eq!(
        send(&daemon, "GET", put.uri(), &[], None).await.status(),
        403
    );
    assert_eq!(
        send(&daemon, "HEAD", get.uri(), &[], None).await.status(),
        403
    );

    // Keys SeaweedFS does not know.
    let stranger = client_as(&forwarded_endpoint(), "AKSTRANGER", "not-the-secret")
        .get_object()
        .bucket(&bucket)
        .key("secret.bin")
        .presigned(presigning(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(
        send_presigned(&daemon, &stranger, &[], None).await.status(),
        403
    );

    // None of that was served from the copy.
    assert_eq!(counters(&daemon).await.0, local_cached);
    // A refused PUT leaves the copy as it was: the next good GET still gets the old bytes.
    let tampered_put = put.uri().replace("X-Amz-Expires=600", "X-Amz-Expires=601");
    let response = send(&daemon, "PUT", &tampered_put, &[], Some(pattern(1000, 5))).await;
    assert_eq!(response.status(), 403);
    let (status, body) = get_body(&daemon, &get).await;
    assert_eq!((status, body == data), (200, true));
    assert_eq!(s3t::object(&s3, &bucket, "secret.bin").await, Some(data));
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_holds_no_credentials_for_the_forwarded_endpoint() {
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path());
    let config = std::fs::read_to_string(work.path().join("config.toml")).unwrap();
    let parsed: toml::Table = config.parse().unwrap();
    // Nothing but the forward entry: no [s3] backend, no credentials, no keys or secrets.
    assert!(!parsed.contains_key("s3"), "{config}");
    let api = parsed["s3_api"].as_table().unwrap();
    assert_eq!(api.keys().collect::<Vec<_>>(), ["forward"], "{config}");
    for entry in api["forward"].as_array().unwrap() {
        let mut fields: Vec<&str> = entry
            .as_table()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        fields.sort();
        assert_eq!(fields, ["endpoint", "hosts", "namespace"], "{config}");
    }
    for secret in [s3t::ACCESS_KEY, s3t::SECRET_KEY] {
        assert!(!config.contains(&format!("\"{secret}\"")), "{config}");
    }
    // Nor in its environment.
    let environ = std::fs::read(format!("/proc/{}/environ", daemon.pid())).unwrap();
    for var in environ.split(|b| *b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some((name, value)) = var.split_once('=') {
            if CREDENTIAL_VARIABLES.contains(&name) {
                assert!(value.is_empty(), "the daemon has {name} set");
            }
        }
    }
}

/// The forwarded endpoint as clients that resolve the name to the daemon see it: the
/// daemon's port (SigV4 signs `Host` with its port, and S3 checks what it receives).
fn daemon_endpoint(daemon: &Daemon) -> String {
    format!("http://{FORWARDED_HOST}:{}", daemon.s3.port())
}

/// An HTTP client that resolves the forwarded host name to the daemon.
fn resolving_http() -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(FORWARDED_HOST, "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap()
}

/// A Python client whose resolver maps the forwarded host to the daemon.
fn python(work: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("python3");
    command
        .env("PYTHONPATH", format!("{CLIENTS}/resolve"))
        .env("BCP_TEST_RESOLVE", format!("{FORWARDED_HOST}=127.0.0.1"))
        .env("HOME", work)
        .env("AWS_CONFIG_FILE", work.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", work.join("aws-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_S3");
    command
}

/// The PUT, GET and HEAD URLs the runner's manager would make with `tool` for SeaweedFS's keys.
async fn runner_urls(
    work: &Path,
    tool: &str,
    daemon: &Daemon,
    bucket: &str,
    key: &str,
    cachekey: &str,
) -> [String; 3] {
    let mut command = python(work);
    command
        .arg(format!("{CLIENTS}/runner_presign.py"))
        .args(["presign", tool, &daemon_endpoint(daemon)])
        .args([
            s3t::ACCESS_KEY,
            s3t::SECRET_KEY,
            bucket,
            key,
            "600",
            cachekey,
        ]);
    let printed = run(command, "runner_presign.py").await;
    ["put", "get", "head"].map(|method| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(method)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {method} URL in {printed:?}"))
            .to_string()
    })
}

/// GitLab Runner's cache round trip with `tool`'s presigned URLs, signed with keys only S3
/// knows: the helper's PUT, HEAD, GET from the node, the `bytes=0-0` probe, a miss, a tampered
/// URL, and (boto3) the manager's GetBucketLocation through the forwarded name.
async fn runner_flow(tool: &str) {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, &format!("fwd-runner-{tool}")).await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(&work.path().join("node"));
    let http = resolving_http();
    let key = format!("runner/abc123/project/42/{tool}-default-protected");
    let cachekey = format!("{tool}-default-protected");
    let archive = pattern(5 << 20, 11);
    let [put_url, get_url, head_url] =
        runner_urls(work.path(), tool, &daemon, &bucket, &key, &cachekey).await;

    let mut put = http
        .put(&put_url)
        .header("content-type", "application/octet-stream")
        .header("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT");
    // minio presigns the host alone, and SeaweedFS (like S3 is documented to) refuses an
    // x-amz-meta-* header the signature does not cover: with minio's URLs the metadata cannot
    // travel, whoever forwards them. boto3 signs it into the URL.
    let signs_metadata = tool == "boto3";
    if signs_metadata {
        put = put.header("x-amz-meta-cachekey", &cachekey);
    }
    let put = put.body(archive.clone()).send().await.unwrap();
    assert_eq!(put.status(), 200, "PUT: {:?}", put.text().await);
    assert!(s3t::object(&s3, &bucket, &key).await == Some(archive.clone()));

    let head = http.head(&head_url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    if signs_metadata {
        assert_eq!(head.headers()["x-amz-meta-cachekey"], cachekey.as_str());
    }
    assert_eq!(
        head.headers()["content-length"],
        archive.len().to_string().as_str()
    );

    let (local_before, _) = counters(&daemon).await;
    let get = http.get(&get_url).send().await.unwrap();
    assert_eq!(get.status(), 200);
    if signs_metadata {
        assert_eq!(get.headers()["x-amz-meta-cachekey"], cachekey.as_str());
    }
    assert_eq!(get.headers()["content-type"], "application/octet-stream");
    assert!(get.headers().contains_key("last-modified"));
    assert!(get.bytes().await.unwrap() == archive[..]);
    assert_eq!(
        counters(&daemon).await.0 - local_before,
        archive.len() as f64,
        "the GET after the upload is served from the node"
    );

    let probe = http
        .get(&get_url)
        .header("range", "bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 206);
    assert_eq!(
        probe.headers()["content-range"],
        format!("bytes 0-0/{}", archive.len()).as_str()
    );
    assert_eq!(probe.bytes().await.unwrap()[..], archive[..1]);

    let [_, missing, _] = runner_urls(
        work.path(),
        tool,
        &daemon,
        &bucket,
        "runner/abc123/project/42/never",
        "never",
    )
    .await;
    let response = http.get(&missing).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().contains("NoSuchKey"));

    let at = get_url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let flipped = if &get_url[at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    let tampered = format!("{}{flipped}{}", &get_url[..at], &get_url[at + 1..]);
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);
    assert_eq!(
        http.put(&get_url).body("x").send().await.unwrap().status(),
        403
    );

    if tool == "boto3" {
        let mut command = python(work.path());
        command
            .arg(format!("{CLIENTS}/runner_presign.py"))
            .args(["location", &daemon_endpoint(&daemon)])
            .args([s3t::ACCESS_KEY, s3t::SECRET_KEY, &bucket]);
        let location = run(command, "GetBucketLocation").await;
        assert_eq!(
            location.trim(),
            "",
            "us-east-1 is the empty LocationConstraint"
        );
        let text = metrics(&daemon).await;
        assert_eq!(
            metric_value(
                &text,
                "build_cache_proxy_forward_requests_total{operation=\"GetBucketLocation\",status=\"200\"}"
            ),
            1.0,
            "{text}"
        );
    }
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_flow_with_minio_presigned_urls_for_s3() {
    runner_flow("minio").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_flow_with_boto3_presigned_urls_for_s3() {
    runner_flow("boto3").await;
}

/// The aws CLI with header auth, `--endpoint-url` naming the forwarded host (resolved to the
/// daemon): a multipart upload, a download served from the node after it was filled, `ls`,
/// `rm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_with_header_auth_through_the_forwarded_name() {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-awscli").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(&work.path().join("node"));
    let data = pattern(20 << 20, 13);
    let (file, back) = (work.path().join("up.bin"), work.path().join("down.bin"));
    std::fs::write(&file, &data).unwrap();
    let aws = |args: Vec<String>| {
        let mut command = python(work.path());
        command
            .args(["-m", "awscli", "--endpoint-url", &daemon_endpoint(&daemon)])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", s3t::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", s3t::SECRET_KEY)
            .env("AWS_DEFAULT_REGION", s3t::REGION);
        command
    };
    let target = format!("s3://{bucket}/dir/big.bin");
    let s = |v: &str| v.to_string();
    run(
        aws(vec![
            s("s3"),
            s("cp"),
            file.display().to_string(),
            target.clone(),
        ]),
        "aws s3 cp up",
    )
    .await;
    assert!(s3t::object(&s3, &bucket, "dir/big.bin").await == Some(data.clone()));
    // `s3 cp` downloads 20 MiB in ranged GETs: passed through (a range of an object the node
    // does not hold is not cached).
    run(
        aws(vec![
            s("s3"),
            s("cp"),
            target.clone(),
            back.display().to_string(),
        ]),
        "aws s3 cp down",
    )
    .await;
    assert!(std::fs::read(&back).unwrap() == data);
    // A whole-object GetObject, twice: the first fills the node (the multipart ETag is S3's,
    // kept as is), the second is served from it after S3's 304.
    for round in 0..2 {
        let local_before = counters(&daemon).await.0;
        run(
            aws(vec![
                s("s3api"),
                s("get-object"),
                s("--bucket"),
                bucket.clone(),
                s("--key"),
                s("dir/big.bin"),
                back.display().to_string(),
            ]),
            "aws s3api get-object",
        )
        .await;
        assert!(std::fs::read(&back).unwrap() == data);
        let served_locally = counters(&daemon).await.0 - local_before;
        let expected = if round == 0 { 0.0 } else { data.len() as f64 };
        assert_eq!(served_locally, expected, "round {round}");
    }
    let listed = run(
        aws(vec![s("s3"), s("ls"), format!("s3://{bucket}/dir/")]),
        "aws s3 ls",
    )
    .await;
    assert!(listed.contains("big.bin"), "{listed}");
    run(aws(vec![s("s3"), s("rm"), target.clone()]), "aws s3 rm").await;
    assert_eq!(s3t::object(&s3, &bucket, "dir/big.bin").await, None);
    let text = metrics(&daemon).await;
    assert!(
        metric_value(
            &text,
            "build_cache_proxy_forward_requests_total{operation=\"UploadPart\",status=\"200\"}"
        ) >= 3.0,
        "{text}"
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// The `s3Upload` step's SDK with header auth (aws-chunked `putObject` with Content-MD5, a
/// TransferManager multipart upload, both read back), its endpoint the forwarded host name
/// resolved to the daemon by the JVM's hosts file. Both objects reach SeaweedFS; the SDK
/// itself checks the ETags against its MD5s. The aws-chunked upload leaves a copy on the node
/// (its framing decoded, its signatures left to S3), so the SDK's read-back of it is S3's 304
/// and the node's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_sdk_v1_through_the_forwarded_name() {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-java").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(&work.path().join("node"));
    let (key, big_key) = ("releases/app-1.0.jar", "releases/app-1.0-dist.tar");
    let jar = pattern(3 << 20, 21);
    let dist = pattern(12 << 20, 22);
    let (jar_file, dist_file) = (work.path().join("app.jar"), work.path().join("dist.tar"));
    std::fs::write(&jar_file, &jar).unwrap();
    std::fs::write(&dist_file, &dist).unwrap();
    let hosts = work.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 {FORWARDED_HOST}\n")).unwrap();

    let mut command = tokio::process::Command::new("java");
    command
        .arg(format!("-Djdk.net.hosts.file={}", hosts.display()))
        .arg("-cp")
        .arg(java_sdk_jar())
        .arg(format!("{CLIENTS}/S3Upload.java"))
        .args([
            &daemon_endpoint(&daemon),
            s3t::ACCESS_KEY,
            s3t::SECRET_KEY,
            &bucket,
            key,
        ])
        .arg(&jar_file)
        .arg(big_key)
        .arg(&dist_file)
        .env("HOME", work.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION")
        .env_remove("JAVA_TOOL_OPTIONS");
    let printed = run(command, "java S3Upload").await;
    assert!(printed.contains("exists-before false"), "{printed}");
    assert!(
        printed.contains(&format!("put-etag {}", hex::encode(Md5::digest(&jar)))),
        "{printed}"
    );
    assert!(printed.contains("exists-after true"), "{printed}");
    assert!(
        printed.contains(&format!("read-back {big_key}")),
        "{printed}"
    );
    assert!(s3t::object(&s3, &bucket, key).await == Some(jar.clone()));
    assert!(s3t::object(&s3, &bucket, big_key).await == Some(dist.clone()));
    let text = metrics(&daemon).await;
    assert!(
        metric_value(
            &text,
            "build_cache_proxy_forward_requests_total{operation=\"PutObject\",status=\"200\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_forward_requests_total{operation=\"GetObject\",status=\"304\"}"
        ),
        1.0,
        "{text}"
    );
    // The putObject's object from the node; the multipart one (never kept) from S3.
    assert_eq!(metric_value(&text, LOCAL_BYTES), jar.len() as f64, "{text}");
    assert_eq!(metric_value(&text, S3_BYTES), dist.len() as f64, "{text}");
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// `Connection: host` (a client naming its own signed `Host` as hop-by-hop) once made the node
/// send S3 a request without `Host`. It still goes on: S3 checks the signature against it, and
/// the upload and the read both succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_host_still_sends_the_signed_host_to_s3() {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-connection-host").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path());
    let data = pattern(64 << 10, 23);
    let put = presigned_put(&bucket, "named.bin").await;
    let response =
        send_presigned(&daemon, &put, &[("connection", "host")], Some(data.clone())).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(
        s3t::object(&s3, &bucket, "named.bin").await.as_deref(),
        Some(&data[..])
    );
    let get = presigned_get(&bucket, "named.bin").await;
    let response = send_presigned(&daemon, &get, &[("connection", "host")], None).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap() == data, "other bytes");
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// S3 out of reach: a retryable S3 error from the node, never its copy (nobody could say
/// whether the request may read it), counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_s3_is_a_503_never_the_nodes_copy() {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-unreachable").await;
    let work = tempfile::tempdir().unwrap();
    // The node holds the object...
    let daemon = start(work.path());
    let data = pattern(100_000, 17);
    let put = presigned_put(&bucket, "held.bin").await;
    assert_eq!(
        send_presigned(&daemon, &put, &[], Some(data.clone()))
            .await
            .status(),
        200
    );
    assert!(daemon.stop().success());
    // ...and restarts on the same disk with S3 out of reach (a port nothing listens on).
    let config = forward_config().replace(&endpoint(), "http://127.0.0.1:9");
    let daemon = Daemon::start_spec(work.path(), DaemonSpec::new(&config));
    let get = presigned_get(&bucket, "held.bin").await;
    let response = send_presigned(&daemon, &get, &[], None).await;
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap();
    assert!(body.contains("<Code>ServiceUnavailable</Code>"), "{body}");
    let text = metrics(&daemon).await;
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_forward_requests_total{operation=\"GetObject\",status=\"unreachable\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(metric_value(&text, LOCAL_BYTES), 0.0);
    assert_eq!(
        metric_value(&text, "build_cache_proxy_disk_entries"),
        1.0,
        "the copy is on the node's disk: {text}"
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// The runner's parallel download on a cold node: the `bytes=0-0` probe and the ranges are S3's
/// answers, passed through, and the whole object is fetched once in the background (the URL
/// signs `host` only, so S3 authorizes it without the range); the next job's GET is local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_gets_on_a_cold_node_fetch_the_whole_object_once_in_the_background() {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-ranges").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path());
    let archive = pattern(6 << 20, 23);
    s3t::put_object(&s3, &bucket, "cache.zip", archive.clone()).await;
    let get = presigned_get(&bucket, "cache.zip").await;

    let probe = send_presigned(&daemon, &get, &[("range", "bytes=0-0")], None).await;
    assert_eq!(probe.status(), 206);
    assert_eq!(
        probe.headers()["content-range"],
        format!("bytes 0-0/{}", archive.len()).as_str()
    );
    let part = 2 << 20;
    let ranges: Vec<(usize, usize)> = (0..archive.len())
        .step_by(part)
        .map(|start| (start, (start + part).min(archive.len()) - 1))
        .collect();
    let fetched = futures_util::future::join_all(ranges.iter().map(|(start, end)| {
        let range = format!("bytes={start}-{end}");
        let (daemon, get) = (&daemon, &get);
        async move {
            let response = send_presigned(daemon, get, &[("range", &range)], None).await;
            assert_eq!(response.status(), 206);
            response.bytes().await.unwrap()
        }
    }))
    .await;
    let joined: Vec<u8> = fetched.iter().flat_map(|b| b.iter().copied()).collect();
    assert!(joined == archive, "the ranges put together are the object");

    let fill =
        "build_cache_proxy_forward_requests_total{operation=\"GetObjectFill\",status=\"200\"}";
    common::eventually("the background fill", Duration::from_secs(30), || async {
        let text = metrics(&daemon).await;
        metric_value(&text, "build_cache_proxy_disk_entries") == 1.0
    })
    .await;
    assert_eq!(metric_value(&metrics(&daemon).await, fill), 1.0);
    let local_before = counters(&daemon).await.0;
    let (status, body) = get_body(&daemon, &get).await;
    assert_eq!(status, 200);
    assert!(body == archive);
    assert_eq!(
        counters(&daemon).await.0 - local_before,
        archive.len() as f64
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// Concurrent cold GETs of one object: the first one's 200 fills the copy, and the others,
/// each sent to S3 with `If-None-Match: <the fill's ETag>` and answered 304 (so S3 authorized
/// every one of them), read the fill's bytes as they arrive. The object comes from S3 once,
/// not once per request; every client gets all of it. A GET signed for another key, made at
/// the same time, gets S3's 403 and none of the fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_gets_read_one_fill_after_s3_authorized_each() {
    use futures_util::StreamExt;
    const WAITERS: usize = 4;
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-flight").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path());
    let object = pattern(64 << 20, 31);
    let digest = hex::encode(Md5::digest(&object));
    s3t::put_object(&s3, &bucket, "cache/big.zip", object.clone()).await;
    let get = presigned_get(&bucket, "cache/big.zip").await;
    let forged = get.uri().replace("X-Amz-Signature=", "X-Amz-Signature=0");

    let whole_gets = futures_util::future::join_all((0..WAITERS).map(|_| {
        let (daemon, get) = (&daemon, &get);
        async move {
            let response = send_presigned(daemon, get, &[], None).await;
            assert_eq!(response.status(), 200);
            let mut body = response.bytes_stream();
            let (mut md5, mut len) = (Md5::new(), 0);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.unwrap();
                len += chunk.len();
                md5.update(&chunk);
            }
            (len, hex::encode(md5.finalize()))
        }
    }));
    let refused = async {
        let headers: Vec<(&str, &str)> = get.headers().collect();
        send(&daemon, "GET", &forged, &headers, None).await.status()
    };
    let (bodies, refused) = tokio::join!(whole_gets, refused);
    assert_eq!(refused, 403);
    for (len, md5) in bodies {
        assert_eq!((len, md5.as_str()), (object.len(), digest.as_str()));
    }
    let text = metrics(&daemon).await;
    let (local, from_s3) = (
        metric_value(&text, LOCAL_BYTES),
        metric_value(&text, S3_BYTES),
    );
    assert_eq!(from_s3, object.len() as f64, "{text}");
    assert_eq!(local, ((WAITERS - 1) * object.len()) as f64, "{text}");
    assert_eq!(
        metric_value(
            &text,
            "build_cache_proxy_forward_requests_total{operation=\"GetObject\",status=\"304\"}"
        ),
        (WAITERS - 1) as f64,
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "build_cache_proxy_single_flight_waiters"),
        0.0
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// Bodies stream both ways: a 512 MiB upload through the daemon (to S3 and into the copy), its
/// download from the node after S3's 304, and a download of a new version from S3 (to the
/// client and into the copy), all under 128 MiB of daemon RSS. The client bodies are streamed
/// too, so the test itself stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_stream_through_the_forward_mode_in_bounded_memory() {
    use futures_util::StreamExt;
    const LEN: u64 = 512 << 20;
    const PIECE: usize = 1 << 20;
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-large").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path());
    let piece = |i: usize, seed: u8| pattern(PIECE, seed.wrapping_add(i as u8));

    let put = presigned_put(&bucket, "big.bin").await;
    let pieces = futures_util::stream::iter(0..(LEN as usize / PIECE))
        .map(move |i| Ok::<_, std::io::Error>(piece(i, 1)));
    let url: reqwest::Url = put.uri().parse().unwrap();
    let mut to_daemon = url.clone();
    to_daemon.set_host(Some("127.0.0.1")).unwrap();
    to_daemon.set_port(Some(daemon.s3.port())).unwrap();
    let response = reqwest::Client::new()
        .put(to_daemon)
        .header("host", format!("{FORWARDED_HOST}:{}", s3_port()))
        .header("content-length", LEN)
        .body(reqwest::Body::wrap_stream(pieces))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    // Reads the whole body, checking it piece by piece against the pattern of `seed`.
    async fn read_checked(response: reqwest::Response, seed: u8) -> u64 {
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        let (mut at, mut pending) = (0usize, Vec::new());
        while let Some(chunk) = stream.next().await {
            pending.extend_from_slice(&chunk.unwrap());
            while pending.len() >= PIECE {
                let expected = pattern(PIECE, seed.wrapping_add((at / PIECE) as u8));
                assert!(pending[..PIECE] == expected[..], "bytes differ at {at}");
                pending.drain(..PIECE);
                at += PIECE;
            }
        }
        assert!(pending.is_empty());
        at as u64
    }
    let get = presigned_get(&bucket, "big.bin").await;
    let local_before = counters(&daemon).await.0;
    let got = read_checked(send_presigned(&daemon, &get, &[], None).await, 1).await;
    assert_eq!(got, LEN);
    assert_eq!(counters(&daemon).await.0 - local_before, LEN as f64);

    // A new version written to S3 directly: streamed from S3 through the node.
    const PART: usize = 64 << 20;
    s3t::put_large_object(&s3, &bucket, "big.bin", LEN, PART, |part| {
        (0..PART / PIECE)
            .flat_map(|i| piece(part * (PART / PIECE) + i, 101))
            .collect()
    })
    .await;
    let s3_before = counters(&daemon).await.1;
    let got = read_checked(send_presigned(&daemon, &get, &[], None).await, 101).await;
    assert_eq!(got, LEN);
    assert_eq!(counters(&daemon).await.1 - s3_before, LEN as f64);

    let peak = daemon.peak_rss();
    assert!(peak < 128 << 20, "daemon peak RSS {} MiB", peak >> 20);
    eprintln!(
        "forward mode, 3 × 512 MiB: daemon peak RSS {} MiB",
        peak >> 20
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// A GET presigned with `response%2Dcontent-encoding=gzip`: the parameter's name percent-encoded,
/// which S3 decodes (the signature holds, and S3 applies the override). Its answer is not the
/// object as stored: it fills no copy, and with a copy on the node it is still S3's to answer,
/// so later plain GETs never carry the override's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_overrides_neither_fill_a_copy_nor_are_served_from_one() {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-overrides").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path());
    let data = pattern(64 << 10, 41);
    s3t::put_object(&s3, &bucket, "lib.jar", data.clone()).await;
    let overridden = signer()
        .get_object()
        .bucket(&bucket)
        .key("lib.jar")
        .response_content_encoding("gzip")
        .response_content_type("text/html")
        .presigned(presigning(Duration::from_secs(600)))
        .await
        .unwrap();
    let encoded = overridden
        .uri()
        .replace("response-content-encoding=", "response%2Dcontent-encoding=")
        .replace("response-content-type=", "response%2Dcontent-type=");
    assert_ne!(encoded, overridden.uri());
    let headers: Vec<(&str, &str)> = overridden.headers().collect();
    let plain = presigned_get(&bucket, "lib.jar").await;
    let overrides = |response: &reqwest::Response| {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        (header("content-encoding"), header("content-type"))
    };

    // Cold: S3's answer with the overrides, passed through and kept nowhere.
    let (local_before, s3_before) = counters(&daemon).await;
    let response = send(&daemon, "GET", &encoded, &headers, None).await;
    assert_eq!(response.status(), 200);
    let seen = overrides(&response);
    assert_eq!(
        seen,
        (Some("gzip".into()), Some("text/html".into())),
        "S3 applies the encoded overrides"
    );
    assert!(response.bytes().await.unwrap() == data);
    assert_eq!(
        counters(&daemon).await,
        (local_before, s3_before + data.len() as f64)
    );
    assert_eq!(
        metric_value(&metrics(&daemon).await, "build_cache_proxy_disk_entries"),
        0.0,
        "the override's answer filled a copy"
    );

    // A plain GET: still cold (from S3), and S3's own headers.
    let response = send_presigned(&daemon, &plain, &[], None).await;
    assert_eq!(response.status(), 200);
    assert_ne!(overrides(&response).0.as_deref(), Some("gzip"));
    assert!(response.bytes().await.unwrap() == data);
    assert_eq!(
        counters(&daemon).await,
        (local_before, s3_before + 2.0 * data.len() as f64)
    );

    // Now the node has a copy: the override is still S3's to answer, with its headers...
    let response = send(&daemon, "GET", &encoded, &headers, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(overrides(&response), seen);
    assert!(response.bytes().await.unwrap() == data);
    assert_eq!(
        counters(&daemon).await,
        (local_before, s3_before + 3.0 * data.len() as f64)
    );
    // ... and plain GETs are served from the untouched copy.
    for _ in 0..2 {
        let response = send_presigned(&daemon, &plain, &[], None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(overrides(&response).0, None);
        assert_ne!(overrides(&response).1.as_deref(), Some("text/html"));
        assert!(response.bytes().await.unwrap() == data);
    }
    assert_eq!(
        counters(&daemon).await,
        (
            local_before + 2.0 * data.len() as f64,
            s3_before + 3.0 * data.len() as f64
        )
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// SSE-C: reading the object takes the customer's key, and SeaweedFS answers a keyless GET
/// with `If-None-Match: <its ETag>` with 304 (and gives SSE-C objects their plaintext's MD5 as
/// ETag). Neither the PUT through the node nor a GET with the key leaves a copy, so a request
/// without the key gets S3's refusal, never the node's plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_c_objects_are_passed_through_and_never_served_from_the_node() {
    use base64::Engine;
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-sse-c").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path());
    let key = [7u8; 32];
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (customer_key, customer_md5) = (b64(&key), b64(&Md5::digest(key)));
    let data = pattern(64 << 10, 43);

    let put = signer()
        .put_object()
        .bucket(&bucket)
        .key("secret.bin")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&customer_key)
        .sse_customer_key_md5(&customer_md5)
        .presigned(presigning(Duration::from_secs(600)))
        .await
        .unwrap();
    assert!(put
        .headers()
        .any(|(name, _)| name.starts_with("x-amz-server-side-encryption-customer-")));
    let response = send_presigned(&daemon, &put, &[], Some(data.clone())).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    let keyless = presigned_get(&bucket, "secret.bin").await;
    let with_key = signer()
        .get_object()
        .bucket(&bucket)
        .key("secret.bin")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&customer_key)
        .sse_customer_key_md5(&customer_md5)
        .presigned(presigning(Duration::from_secs(600)))
        .await
        .unwrap();
    let refused = |status: u16| (400..500).contains(&status);
    let (status, body) = get_body(&daemon, &keyless).await;
    assert!(refused(status), "keyless GET after the PUT: {status}");
    assert!(body != data);

    // With the key: S3's bytes each time, and still no copy for the keyless request.
    let (local_before, s3_before) = counters(&daemon).await;
    for _ in 0..2 {
        let (status, body) = get_body(&daemon, &with_key).await;
        assert_eq!(status, 200);
        assert!(body == data);
    }
    assert_eq!(
        counters(&daemon).await,
        (local_before, s3_before + 2.0 * data.len() as f64)
    );
    let (status, body) = get_body(&daemon, &keyless).await;
    assert!(
        refused(status),
        "keyless GET after GETs with the key: {status}"
    );
    assert!(body != data);
    assert_eq!(
        metric_value(&metrics(&daemon).await, "build_cache_proxy_disk_entries"),
        0.0
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// SeaweedFS behind a relay that adds `x-amz-server-side-encryption: aws:kms` to every answer,
/// as S3 does for a bucket encrypted with SSE-KMS by default (SeaweedFS needs a KMS of its own
/// to say so). Requests go on as they came, `Host` included, so signatures still hold.
struct KmsRelay {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl KmsRelay {
    async fn start() -> KmsRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(KmsRelay::relay);
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        KmsRelay { addr, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn relay(
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, hyper::Error> {
        use http_body_util::BodyExt;
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", endpoint().trim_end_matches('/'));
        let mut to_s3 = reqwest::Client::new().request(parts.method, url).body(body);
        for (name, value) in &parts.headers {
            to_s3 = to_s3.header(name, value);
        }
        let answer = to_s3.send().await.expect("SeaweedFS answers the relay");
        let mut response = hyper::Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            if name != "transfer-encoding" && name != "connection" {
                response = response.header(name, value);
            }
        }
        response = response.header("x-amz-server-side-encryption", "aws:kms");
        let body = answer.bytes().await.expect("SeaweedFS's body");
        Ok(response.body(http_body_util::Full::new(body)).unwrap())
    }
}

impl Drop for KmsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Two GETs of `data` through `daemon`, each answered as an SSE-KMS object: what the daemon
/// served of them from the node and from S3.
async fn two_gets(daemon: &Daemon, get: &PresignedRequest, data: &[u8], etag: &str) -> (f64, f64) {
    let before = counters(daemon).await;
    for _ in 0..2 {
        let response = send_presigned(daemon, get, &[], None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["x-amz-server-side-encryption"],
            "aws:kms"
        );
        assert_eq!(response.headers()["etag"], etag);
        assert!(response.bytes().await.unwrap() == data);
    }
    let after = counters(daemon).await;
    (after.0 - before.0, after.1 - before.1)
}

/// SSE-KMS objects are passed through unless the forward entry sets `cache_kms = true`; a copy
/// made while it did is remembered as one, and is not served once the entry no longer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_kms_objects_are_cached_only_where_the_entry_opts_in() {
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-kms").await;
    let relay = KmsRelay::start().await;
    let work = tempfile::tempdir().unwrap();
    let data = pattern(64 << 10, 47);
    s3t::put_object(&s3, &bucket, "sealed.bin", data.clone()).await;
    let get = presigned_get(&bucket, "sealed.bin").await;
    let head = s3.head_object().bucket(&bucket).key("sealed.bin");
    let etag = head.send().await.unwrap().e_tag().unwrap().to_string();
    let len = data.len() as f64;
    let daemon = start_with(work.path(), &forward_entry(&relay.endpoint(), ""));
    assert_eq!(
        two_gets(&daemon, &get, &data, &etag).await,
        (0.0, 2.0 * len),
        "cache_kms off"
    );
    drop(daemon);

    let opted_in = forward_entry(&relay.endpoint(), "cache_kms = true");
    let daemon = start_with(work.path(), &opted_in);
    assert_eq!(
        two_gets(&daemon, &get, &data, &etag).await,
        (len, len),
        "cache_kms = true"
    );
    drop(daemon);

    // The same disk, the entry no longer opted in: the copy is not the node's to serve.
    let daemon = start_with(work.path(), &forward_entry(&relay.endpoint(), ""));
    assert_eq!(
        metric_value(&metrics(&daemon).await, "build_cache_proxy_disk_entries"),
        1.0
    );
    assert_eq!(
        two_gets(&daemon, &get, &data, &etag).await,
        (0.0, 2.0 * len),
        "cache_kms off again"
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}

/// An aws-chunked PUT's `x-amz-decoded-content-length` is what its copy asks of the disk: it
/// counts against `max_upload_bytes_per_ip` (an 8 GiB declaration behind a 1000-byte body is
/// refused before anything is reserved), and a declaration its `Content-Length` cannot carry
/// keeps no copy. Meanwhile another address's upload keeps its copy on a disk that the
/// trickled declaration, promised up front, would have filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_lengths_count_per_address_and_a_trickled_declaration_starves_no_one() {
    const DECLARED: &str = "build_cache_proxy_uploads_declared_bytes";
    let s3 = client(&endpoint());
    let bucket = fresh_bucket(&s3, "fwd-decoded").await;
    let work = tempfile::tempdir().unwrap();
    let config = format!(
        "[disk]\nmax_size = \"16MiB\"\n\n[gradle]\nmax_entry_size = \"1MiB\"\n\n[limits]\nmax_upload_bytes_per_ip = \"15MiB\"\n{}",
        forward_config()
    );
    let daemon = start_with(work.path(), &config);
    let url = format!("{}/{bucket}/trickle.bin", forwarded_endpoint());
    let chunked = |decoded: u64| {
        vec![
            ("content-length".to_string(), "1000".to_string()),
            ("content-encoding".to_string(), "aws-chunked".to_string()),
            (
                "x-amz-content-sha256".to_string(),
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_string(),
            ),
            (
                "x-amz-decoded-content-length".to_string(),
                decoded.to_string(),
            ),
            ("x-amz-date".to_string(), "20260101T000000Z".to_string()),
            (
                "authorization".to_string(),
                "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, \
                 SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;\
                 x-amz-decoded-content-length, Signature=00"
                    .to_string(),
            ),
        ]
    };
    let send_chunked = |decoded: u64| {
        let headers = chunked(decoded);
        let (daemon, url) = (&daemon, &url);
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            send(daemon, "PUT", url, &headers, Some(vec![b'0'; 1000])).await
        }
    };

    // 8 GiB of data promised behind 1000 bytes: over the address's cap, refused at once.
    let response = send_chunked(8 << 30).await;
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("SlowDown"));
    assert_eq!(metric_value(&metrics(&daemon).await, DECLARED), 0.0);

    // 14 MiB promised behind 1000 bytes, trickled: within the cap, so it goes on to S3 (which
    // will judge it), and it holds 14 MiB of the address's share while it lasts. (SeaweedFS
    // may refuse its made-up signature at once; the node still holds the upload until its
    // body ends or stalls for `body_stall_timeout`, 30 s, far longer than this test.)
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let first = futures_util::stream::once(async { Ok::<_, std::io::Error>(vec![b'0'; 10]) });
    let rest = futures_util::stream::once(async move {
        let _ = hold.await;
        Ok::<_, std::io::Error>(vec![b'0'; 990])
    });
    let trickle = {
        let mut to_daemon: reqwest::Url = url.parse().unwrap();
        to_daemon.set_host(Some("127.0.0.1")).unwrap();
        to_daemon.set_port(Some(daemon.s3.port())).unwrap();
        let mut request = reqwest::Client::new()
            .put(to_daemon)
            .header("host", format!("{FORWARDED_HOST}:{}", s3_port()));
        for (name, value) in chunked(14 << 20) {
            request = request.header(name, value);
        }
        let body = reqwest::Body::wrap_stream(futures_util::StreamExt::chain(first, rest));
        tokio::spawn(request.body(body).send())
    };
    common::eventually("the trickle admitted", Duration::from_secs(10), || async {
        metric_value(&metrics(&daemon).await, DECLARED) == (14 << 20) as f64
    })
    .await;

    // The same address may not declare more than its share...
    let response = send_chunked(2 << 20).await;
    assert_eq!(response.status(), 503);
    // ... while another address's upload goes through and keeps its copy.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let data = pattern(2 << 20, 53);
    let put = presigned_put(&bucket, "other.bin").await;
    let headers: Vec<(&str, &str)> = put.headers().collect();
    let response = send_from(
        other,
        &daemon,
        "PUT",
        put.uri(),
        &headers,
        Some(data.clone()),
    )
    .await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let local_before = counters(&daemon).await.0;
    let (status, body) = get_body(&daemon, &presigned_get(&bucket, "other.bin").await).await;
    assert_eq!(status, 200);
    assert!(body == data);
    assert_eq!(
        counters(&daemon).await.0 - local_before,
        data.len() as f64,
        "the other address's upload kept no copy"
    );

    let _ = release.send(());
    let _ = trickle.await;
    let text = metrics(&daemon).await;
    assert!(
        metric_value(
            &text,
            "build_cache_proxy_dropped_puts_total{front=\"s3\",reason=\"max_upload_bytes_per_ip\"}"
        ) >= 2.0,
        "{text}"
    );
    drop(daemon);
    remove_bucket(&s3, &bucket).await;
}
