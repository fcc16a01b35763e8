//! The S3 front driven by the real clients of the pipeline it serves, SeaweedFS behind it:
//! GitLab Runner's cache flow with URLs presigned by python `minio` and `boto3` (the HTTP side
//! sent from here, as the runner's helper sends it), the aws CLI, and hand-made requests that a
//! client library would never send wrong on purpose (a bad chunk signature, a body that does not
//! match its signed sha256 or its Content-MD5).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::clients::{java_sdk_jar, run};
use common::s3::{self as s3t, client, client_as, endpoint, fresh_bucket, remove_bucket};
use common::{metric_value, metrics, Daemon};
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

/// The keys the runner (and the CLI) would be given, as the front's `[[s3_api.credentials]]`.
const RUNNER_KEY: &str = "runner";
const RUNNER_SECRET: &str = "runner-secret-0123456789";
/// The bucket the node exposes, stored under `cache/` in the backend bucket.
const BUCKET: &str = "ci-cache";
const BACKEND_PREFIX: &str = "cache/";
const REGION: &str = "us-east-1";
const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

fn node_config(backend: &str, write: &str) -> String {
    s3t::config(
        backend,
        &endpoint(),
        "",
        &format!(
            r#"
[[s3_api.buckets]]
name = "{BUCKET}"
backend_bucket = "{backend}"
backend_prefix = "{BACKEND_PREFIX}"
write = "{write}"
freshness = "revalidate"

[[s3_api.credentials]]
access_key = "{RUNNER_KEY}"
secret_key = "{RUNNER_SECRET}"
buckets = {{ "{BUCKET}" = "readwrite" }}
"#
        ),
    )
}

/// A daemon in `work` exposing `BUCKET` on `backend` with the `write` policy.
fn start(work: &Path, backend: &str, write: &str) -> Daemon {
    Daemon::start_spec(work, s3t::spec(&node_config(backend, write)))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed)
                .wrapping_add((i >> 12) as u8)
        })
        .collect()
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The object as SeaweedFS holds it under the bucket's prefix.
async fn in_backend(backend: &str, key: &str) -> Option<Vec<u8>> {
    s3t::object(
        &client(&endpoint()),
        backend,
        &format!("{BACKEND_PREFIX}{key}"),
    )
    .await
}

async fn received_from_s3(daemon: &Daemon) -> f64 {
    metric_value(
        &metrics(daemon).await,
        "build_cache_proxy_s3_received_bytes_total",
    )
}

/// Runs `tests/clients/runner_presign.py` with `args`.
async fn runner_presign(args: &[&str]) -> String {
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(format!("{CLIENTS}/runner_presign.py"))
        .args(args);
    run(command, &format!("runner_presign.py {}", args[0])).await
}

/// The PUT, GET and HEAD URLs the runner's manager hands its helper for one cache key.
struct Presigned {
    put: String,
    get: String,
    head: String,
}

async fn presign(
    tool: &str,
    daemon: &Daemon,
    key: &str,
    expires: u32,
    cachekey: &str,
) -> Presigned {
    let printed = runner_presign(&[
        "presign",
        tool,
        &daemon.s3_url(),
        RUNNER_KEY,
        RUNNER_SECRET,
        BUCKET,
        key,
        &expires.to_string(),
        cachekey,
    ])
    .await;
    let url = |method: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(method)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {method} URL in {printed:?}"))
            .to_string()
    };
    Presigned {
        put: url("put"),
        get: url("get"),
        head: url("head"),
    }
}

/// The helper's upload: one PUT with Content-Length, `Content-Type` and `Last-Modified` unsigned,
/// the cache key as user metadata.
async fn helper_put(
    http: &reqwest::Client,
    url: &str,
    cachekey: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    http.put(url)
        .header("content-type", "application/octet-stream")
        .header("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")
        .header("x-amz-meta-cachekey", cachekey)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", response.headers()))
        .to_str()
        .unwrap()
}

/// The status and body of a response, for asserting on S3 errors.
async fn status_and_body(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// GitLab Runner's cache round trip with one presigning library: the helper's PUT, HEAD, GET
/// (metadata and Last-Modified back), the `bytes=0-0` probe, a miss, and the URLs the front
/// must refuse.
async fn runner_flow(tool: &str) {
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, &format!("runner-{tool}")).await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path(), &backend, "through");
    let http = reqwest::Client::new();
    let key = format!("runner/abc123/project/42/{tool}-default-protected");
    let cachekey = format!("{tool}-default-protected");
    let archive = pattern(5 << 20, 7);
    let urls = presign(tool, &daemon, &key, 600, &cachekey).await;

    // Upload, as the helper does after the job.
    let before_put = std::time::SystemTime::now() - Duration::from_secs(2);
    let put = helper_put(&http, &urls.put, &cachekey, archive.clone()).await;
    let etag = header(&put, "etag").to_string();
    let (status, body) = status_and_body(put).await;
    assert_eq!(status, 200, "PUT: {body}");
    assert_eq!(
        etag,
        format!("\"{}\"", md5_hex(&archive)),
        "ETag is the MD5"
    );
    assert!(
        in_backend(&backend, &key).await == Some(archive.clone()),
        "a write-through PUT is in the bucket when it is answered"
    );

    // The next job: HEAD, then the whole GET.
    let head = http.head(&urls.head).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), archive.len().to_string());
    assert_eq!(header(&head, "x-amz-meta-cachekey"), cachekey);
    assert_eq!(header(&head, "etag"), etag);
    let get = http.get(&urls.get).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(header(&get, "x-amz-meta-cachekey"), cachekey);
    assert_eq!(header(&get, "content-type"), "application/octet-stream");
    // The helper compares Last-Modified with its local copy: it must be the upload's time,
    // not the `Last-Modified` the PUT carried (S3 ignores that request header too).
    let modified = httpdate::parse_http_date(header(&get, "last-modified")).unwrap();
    assert!(
        modified >= before_put && modified <= std::time::SystemTime::now() + Duration::from_secs(2),
        "Last-Modified {:?} is not the upload's time",
        header(&get, "last-modified")
    );
    assert!(
        get.bytes().await.unwrap() == archive[..],
        "GET bytes differ"
    );

    // FF_USE_PARALLEL_CACHE_TRANSFER's probe: 206 and the total in Content-Range.
    let probe = http
        .get(&urls.get)
        .header("range", "bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 206);
    assert_eq!(
        header(&probe, "content-range"),
        format!("bytes 0-0/{}", archive.len())
    );
    assert_eq!(probe.bytes().await.unwrap()[..], archive[..1]);

    // A cache key nobody uploaded: a miss the helper recognises.
    let missing = presign(
        tool,
        &daemon,
        "runner/abc123/project/42/never",
        600,
        "never",
    )
    .await;
    let (status, body) = status_and_body(http.get(&missing.get).send().await.unwrap()).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("<Code>NoSuchKey</Code>"), "{body}");
    assert_eq!(http.head(&missing.head).send().await.unwrap().status(), 404);

    // URLs the front must refuse: a changed signature, a GET URL used to write or to HEAD.
    let signature_at = urls.get.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut tampered = urls.get.clone().into_bytes();
    tampered[signature_at] = if tampered[signature_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let tampered = String::from_utf8(tampered).unwrap();
    let (status, body) = status_and_body(http.get(&tampered).send().await.unwrap()).await;
    assert_eq!(status, 403, "tampered signature: {body}");
    assert!(
        body.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{body}"
    );
    let overwrite = helper_put(&http, &urls.get, &cachekey, pattern(1000, 9)).await;
    assert_eq!(overwrite.status(), 403, "the GET URL wrote");
    assert_eq!(http.head(&urls.get).send().await.unwrap().status(), 403);
    if tool == "boto3" {
        // The cache key is signed into this PUT URL: another value is another request.
        let relabelled = helper_put(&http, &urls.put, "someone-else", pattern(1000, 9)).await;
        let (status, body) = status_and_body(relabelled).await;
        assert_eq!(status, 403, "a changed signed header was accepted: {body}");
        assert!(
            body.contains("<Code>SignatureDoesNotMatch</Code>"),
            "{body}"
        );
    }
    assert!(
        http.get(&urls.get)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            == archive[..],
        "a refused PUT changed the object"
    );

    // An expired URL.
    let short = presign(tool, &daemon, &key, 1, &cachekey).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = status_and_body(http.get(&short.get).send().await.unwrap()).await;
    assert_eq!(status, 403, "expired URL: {body}");
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");

    drop(daemon);
    remove_bucket(&s3, &backend).await;
}

/// The runner's legacy adapter presigns with minio (host signed only, so the helper's
/// `x-amz-meta-cachekey` travels unsigned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_cache_flow_with_minio_presigned_urls() {
    runner_flow("minio").await;
}

/// The runner's s3v2 adapter presigns with the AWS SDK, `x-amz-meta-cachekey` signed into the
/// PUT URL; boto3 presigns the same way. When `BucketLocation` is empty the manager asks the
/// ServerAddress with a header-signed GetBucketLocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_cache_flow_with_boto3_presigned_urls_and_bucket_location() {
    runner_flow("boto3").await;

    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "location").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path(), &backend, "through");
    let location = runner_presign(&[
        "location",
        &daemon.s3_url(),
        RUNNER_KEY,
        RUNNER_SECRET,
        BUCKET,
    ])
    .await;
    assert_eq!(
        location.trim(),
        "",
        "us-east-1 is the empty LocationConstraint"
    );
    drop(daemon);
    remove_bucket(&s3, &backend).await;
}

/// The runner's parallel download of a 128 MiB archive nobody on this node has yet: the probe,
/// then eight 16 MiB ranges at once, all through presigned GETs. The bytes are right and the
/// node fetched the archive from S3 at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runners_parallel_download_of_a_cold_archive_fetches_it_once() {
    const PART: usize = 16 << 20;
    const PARTS: usize = 8;
    const LEN: u64 = (PART * PARTS) as u64;
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "runner-cold").await;
    let key = "runner/abc123/project/7/gradle-caches";
    let chunk = |i: usize| pattern(PART, 40 + i as u8);
    s3t::put_large_object(
        &s3,
        &backend,
        &format!("{BACKEND_PREFIX}{key}"),
        LEN,
        PART,
        chunk,
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path(), &backend, "through");
    let urls = presign("boto3", &daemon, key, 600, "gradle-caches").await;
    let http = reqwest::Client::new();

    let probe = http
        .get(&urls.get)
        .header("range", "bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 206);
    assert_eq!(header(&probe, "content-range"), format!("bytes 0-0/{LEN}"));
    assert_eq!(probe.bytes().await.unwrap()[..], chunk(0)[..1]);

    let mut reads = tokio::task::JoinSet::new();
    for part in 0..PARTS {
        let (http, url) = (http.clone(), urls.get.clone());
        reads.spawn(async move {
            let first = part * PART;
            let response = http
                .get(&url)
                .header("range", format!("bytes={first}-{}", first + PART - 1))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let range = response
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_string());
            let body = response.bytes().await.unwrap();
            (part, status, range, body)
        });
    }
    while let Some(done) = reads.join_next().await {
        let (part, status, range, body) = done.unwrap();
        let first = part * PART;
        assert_eq!(status, 206, "part {part}");
        assert_eq!(
            range.as_deref(),
            Some(format!("bytes {first}-{}/{LEN}", first + PART - 1).as_str())
        );
        assert!(body == chunk(part)[..], "part {part} differs");
    }
    // Once, give or take a read buffer (under 1 MiB) of the fill's first GET, the one GET of
    // the whole object: where it meets a segment another download has, it stops with those
    // bytes received. Every other download asks for its segments' bytes exactly.
    let fetched = received_from_s3(&daemon).await;
    let ranged = metric_value(
        &metrics(&daemon).await,
        "build_cache_proxy_fill_ranged_downloads_total",
    );
    assert!(
        fetched <= (LEN + (1 << 20)) as f64,
        "{fetched} bytes came from S3 for a {LEN}-byte archive ({ranged} ranged downloads)"
    );
    drop(daemon);
    remove_bucket(&s3, &backend).await;
}

/// The aws CLI (v1, botocore) with the daemon's keys and nothing from this machine's AWS
/// config.
struct AwsCli {
    home: PathBuf,
    endpoint: String,
}

impl AwsCli {
    fn new(home: &Path, daemon: &Daemon) -> AwsCli {
        std::fs::create_dir_all(home).unwrap();
        AwsCli {
            home: home.to_path_buf(),
            endpoint: daemon.s3_url(),
        }
    }

    async fn run(&self, args: &[&str]) -> String {
        let mut command = tokio::process::Command::new("python3");
        command
            .args(["-m", "awscli", "--endpoint-url", &self.endpoint])
            .args(args)
            .env("HOME", &self.home)
            .env("AWS_CONFIG_FILE", self.home.join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.home.join("credentials"))
            .env("AWS_ACCESS_KEY_ID", RUNNER_KEY)
            .env("AWS_SECRET_ACCESS_KEY", RUNNER_SECRET)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3");
        run(command, &format!("aws {}", args.join(" "))).await
    }
}

/// `aws s3 cp` of 100 MiB up (multipart, 8 MiB parts) into a write-through bucket and down
/// again, `ls`, `sync` of a directory (twice: the second finds nothing to do), and `rm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_copies_lists_syncs_and_removes() {
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "awscli").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(&work.path().join("node"), &backend, "through");
    let aws = AwsCli::new(&work.path().join("home"), &daemon);
    let front = client_as(&daemon.s3_url(), RUNNER_KEY, RUNNER_SECRET);

    let jar = pattern(100 << 20, 3);
    let up = work.path().join("app.jar");
    std::fs::write(&up, &jar).unwrap();
    let key = "releases/app.jar";
    aws.run(&[
        "s3",
        "cp",
        up.to_str().unwrap(),
        &format!("s3://{BUCKET}/{key}"),
    ])
    .await;
    let head = front
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap().ends_with("-13\""),
        "100 MiB in 8 MiB parts is a 13-part multipart ETag, got {:?}",
        head.e_tag()
    );
    assert!(
        in_backend(&backend, key).await == Some(jar.clone()),
        "the write-through upload is not in SeaweedFS with the same bytes"
    );
    let down = work.path().join("down.jar");
    aws.run(&[
        "s3",
        "cp",
        &format!("s3://{BUCKET}/{key}"),
        down.to_str().unwrap(),
    ])
    .await;
    assert!(
        std::fs::read(&down).unwrap() == jar,
        "downloaded bytes differ"
    );

    let listed = aws
        .run(&["s3", "ls", &format!("s3://{BUCKET}/releases/")])
        .await;
    assert!(
        listed
            .lines()
            .any(|l| l.ends_with(&format!(" {} app.jar", jar.len()))),
        "ls: {listed}"
    );

    let dir = work.path().join("reports");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let files = [
        ("index.html", pattern(2000, 1)),
        ("style.css", pattern(300, 2)),
        ("nested/data.bin", pattern(1 << 20, 3)),
    ];
    // Dated a minute back: `sync` uploads a file newer than its object, and a backend that keeps
    // whole seconds (SeaweedFS) would otherwise date an object uploaded within the file's own
    // second before the file.
    let written = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for (name, data) in &files {
        std::fs::write(dir.join(name), data).unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.join(name))
            .unwrap()
            .set_modified(written)
            .unwrap();
    }
    let synced = aws
        .run(&[
            "s3",
            "sync",
            dir.to_str().unwrap(),
            &format!("s3://{BUCKET}/reports/"),
        ])
        .await;
    assert_eq!(
        synced.matches("upload:").count(),
        files.len(),
        "sync: {synced}"
    );
    for (name, data) in &files {
        let key = format!("reports/{name}");
        assert!(
            in_backend(&backend, &key).await.as_ref() == Some(data),
            "{key} not in SeaweedFS"
        );
    }
    // Sizes and times in the listing match the files: nothing to upload again.
    let again = aws
        .run(&[
            "s3",
            "sync",
            dir.to_str().unwrap(),
            &format!("s3://{BUCKET}/reports/"),
        ])
        .await;
    assert!(
        !again.contains("upload:"),
        "second sync uploaded again: {again}"
    );
    let recursive = aws
        .run(&[
            "s3",
            "ls",
            "--recursive",
            &format!("s3://{BUCKET}/reports/"),
        ])
        .await;
    assert_eq!(
        recursive.lines().count(),
        files.len(),
        "ls --recursive: {recursive}"
    );

    aws.run(&["s3", "rm", &format!("s3://{BUCKET}/{key}")])
        .await;
    let gone = front.head_object().bucket(BUCKET).key(key).send().await;
    assert_eq!(
        gone.err()
            .and_then(|e| e.raw_response().map(|r| r.status().as_u16())),
        Some(404)
    );
    assert_eq!(
        in_backend(&backend, key).await,
        None,
        "rm did not reach SeaweedFS"
    );
    let listed = aws
        .run(&["s3", "ls", &format!("s3://{BUCKET}/releases/")])
        .await;
    assert!(!listed.contains("app.jar"), "ls after rm: {listed}");

    drop(daemon);
    remove_bucket(&s3, &backend).await;
}

/// SigV4 header signing with the front's keys, for requests no SDK would send.
struct Signer {
    amz_date: String,
    scope: String,
    key: [u8; 32],
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl Signer {
    fn now() -> Signer {
        let now = time::OffsetDateTime::now_utc();
        let date = format!("{:04}{:02}{:02}", now.year(), now.month() as u8, now.day());
        let amz_date = format!(
            "{date}T{:02}{:02}{:02}Z",
            now.hour(),
            now.minute(),
            now.second()
        );
        let mut key = hmac_sha256(format!("AWS4{RUNNER_SECRET}").as_bytes(), date.as_bytes());
        for part in [REGION, "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        Signer {
            scope: format!("{date}/{REGION}/s3/aws4_request"),
            amz_date,
            key,
        }
    }

    /// Signs a request for `path` (no query) whose headers are `headers` plus host, x-amz-date
    /// and x-amz-content-sha256, all of them signed. Returns every header to send, the
    /// Authorization included, and the signature (the seed of a chunked body).
    fn sign(
        &self,
        method: &str,
        host: &str,
        path: &str,
        payload_hash: &str,
        headers: &[(&str, String)],
    ) -> (Vec<(String, String)>, [u8; 32]) {
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .chain([
                ("host".to_string(), host.to_string()),
                ("x-amz-date".to_string(), self.amz_date.clone()),
                ("x-amz-content-sha256".to_string(), payload_hash.to_string()),
            ])
            .collect();
        all.sort();
        let canonical_headers: String = all.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let signed: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let signed = signed.join(";");
        let canonical =
            format!("{method}\n{path}\n\n{canonical_headers}\n{signed}\n{payload_hash}");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            sha256_hex(canonical.as_bytes())
        );
        let signature = hmac_sha256(&self.key, to_sign.as_bytes());
        all.retain(|(n, _)| n != "host");
        all.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={RUNNER_KEY}/{}, SignedHeaders={signed}, Signature={}",
                self.scope,
                hex::encode(signature)
            ),
        ));
        (all, signature)
    }

    /// An aws-chunked body (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`) of `chunks`, each signature
    /// chained from the previous, the first from `seed`.
    fn chunked_body(&self, seed: [u8; 32], chunks: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let empty_hash = sha256_hex(b"");
        let mut previous = seed;
        let mut body = Vec::new();
        let mut signature_offsets = Vec::new();
        for chunk in chunks.iter().copied().chain([&b""[..]]) {
            let to_sign = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{empty_hash}\n{}",
                self.amz_date,
                self.scope,
                hex::encode(previous),
                sha256_hex(chunk)
            );
            let signature = hmac_sha256(&self.key, to_sign.as_bytes());
            let head = format!("{:x};chunk-signature=", chunk.len());
            body.extend_from_slice(head.as_bytes());
            signature_offsets.push(body.len());
            body.extend_from_slice(format!("{}\r\n", hex::encode(signature)).as_bytes());
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
            previous = signature;
        }
        (body, signature_offsets)
    }
}

/// Sends a hand-signed PUT of `body` to `key`.
async fn signed_put(
    daemon: &Daemon,
    key: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> (u16, String) {
    let mut request = reqwest::Client::new().put(format!("{}/{BUCKET}/{key}", daemon.s3_url()));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.body(body).send().await {
        Ok(response) => status_and_body(response).await,
        Err(e) => panic!("PUT {key}: {e}"),
    }
}

/// The object is nowhere: the front answers 404 and SeaweedFS has nothing.
async fn assert_not_stored(daemon: &Daemon, backend: &str, key: &str) {
    let front = client_as(&daemon.s3_url(), RUNNER_KEY, RUNNER_SECRET);
    let answer = front.head_object().bucket(BUCKET).key(key).send().await;
    assert_eq!(
        answer
            .err()
            .and_then(|e| e.raw_response().map(|r| r.status().as_u16())),
        Some(404),
        "{key} is visible through the front"
    );
    assert_eq!(
        in_backend(backend, key).await,
        None,
        "{key} reached SeaweedFS"
    );
}

/// A signed aws-chunked upload (what the Java SDK's putObject sends over http) is stored; the
/// same upload with one flipped byte in the second chunk's signature is refused and leaves
/// nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_chunked_upload_with_one_bad_chunk_signature_stores_nothing() {
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "bad-chunk").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path(), &backend, "through");
    let data = pattern(3 * 65536 + 1000, 5);
    let chunks: Vec<&[u8]> = data.chunks(65536).collect();
    let host = daemon.s3.to_string();

    for (key, flip) in [("jars/good.jar", None), ("jars/bad.jar", Some(1))] {
        let signer = Signer::now();
        let extra = [
            ("content-encoding", "aws-chunked".to_string()),
            ("x-amz-decoded-content-length", data.len().to_string()),
            (
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(Md5::digest(&data)),
            ),
        ];
        let (headers, seed) = signer.sign(
            "PUT",
            &host,
            &format!("/{BUCKET}/{key}"),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            &extra,
        );
        let (mut body, signatures) = signer.chunked_body(seed, &chunks);
        if let Some(chunk) = flip {
            let at = signatures[chunk];
            body[at] = if body[at] == b'a' { b'b' } else { b'a' };
        }
        let (status, answer) = signed_put(&daemon, key, headers, body).await;
        match flip {
            None => {
                assert_eq!(status, 200, "the correctly signed body: {answer}");
                assert!(in_backend(&backend, key).await == Some(data.clone()));
            }
            Some(_) => {
                assert_eq!(status, 403, "{answer}");
                assert!(
                    answer.contains("<Code>SignatureDoesNotMatch</Code>"),
                    "{answer}"
                );
                assert_not_stored(&daemon, &backend, key).await;
            }
        }
    }
    drop(daemon);
    remove_bucket(&s3, &backend).await;
}

/// A body that is not the one whose sha256 was signed is refused with
/// `XAmzContentSHA256Mismatch`; one that does not match its Content-MD5 with `BadDigest`. Neither
/// leaves anything behind; the same requests with the right body are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_body_does_not_match_its_sha256_or_md5_stores_nothing() {
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "bad-digest").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(work.path(), &backend, "through");
    let host = daemon.s3.to_string();
    let signed_body = pattern(300_000, 11);
    let mut other_body = signed_body.clone();
    other_body[150_000] ^= 1;

    // Payload hash in x-amz-content-sha256.
    for (key, body) in [
        ("sha/right", signed_body.clone()),
        ("sha/wrong", other_body.clone()),
    ] {
        let (headers, _) = Signer::now().sign(
            "PUT",
            &host,
            &format!("/{BUCKET}/{key}"),
            &sha256_hex(&signed_body),
            &[],
        );
        let (status, answer) = signed_put(&daemon, key, headers, body.clone()).await;
        if body == signed_body {
            assert_eq!(status, 200, "{answer}");
            assert!(in_backend(&backend, key).await == Some(body));
        } else {
            assert_eq!(status, 400, "{answer}");
            assert!(
                answer.contains("<Code>XAmzContentSHA256Mismatch</Code>"),
                "{answer}"
            );
            assert_not_stored(&daemon, &backend, key).await;
        }
    }

    // Content-MD5, the payload unsigned (as the runner's helper signs it).
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&signed_body));
    for (key, body) in [
        ("md5/right", signed_body.clone()),
        ("md5/wrong", other_body.clone()),
    ] {
        let (headers, _) = Signer::now().sign(
            "PUT",
            &host,
            &format!("/{BUCKET}/{key}"),
            "UNSIGNED-PAYLOAD",
            &[("content-md5", md5.clone())],
        );
        let (status, answer) = signed_put(&daemon, key, headers, body.clone()).await;
        if body == signed_body {
            assert_eq!(status, 200, "{answer}");
            assert!(in_backend(&backend, key).await == Some(body));
        } else {
            assert_eq!(status, 400, "{answer}");
            assert!(answer.contains("<Code>BadDigest</Code>"), "{answer}");
            assert_not_stored(&daemon, &backend, key).await;
        }
    }
    drop(daemon);
    remove_bucket(&s3, &backend).await;
}

/// The `s3Upload` step with the SDK the gradle-s3 plugin uses: a HEAD miss, `putObject` (an
/// aws-chunked body with chunk signatures and Content-MD5; the SDK itself fails unless the ETag
/// is the MD5), a TransferManager multipart upload, both read back through the front and found
/// in SeaweedFS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_sdk_v1_uploads_as_the_s3upload_step_does() {
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "java-sdk").await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(&work.path().join("node"), &backend, "through");
    let (key, big_key) = ("releases/app-1.0.jar", "releases/app-1.0-dist.tar");
    let jar = pattern(3 << 20, 21);
    let dist = pattern(12 << 20, 22);
    let (jar_file, dist_file) = (work.path().join("app.jar"), work.path().join("dist.tar"));
    std::fs::write(&jar_file, &jar).unwrap();
    std::fs::write(&dist_file, &dist).unwrap();

    let mut command = tokio::process::Command::new("java");
    command
        .arg("-cp")
        .arg(java_sdk_jar())
        .arg(format!("{CLIENTS}/S3Upload.java"))
        .args([&daemon.s3_url(), RUNNER_KEY, RUNNER_SECRET, BUCKET, key])
        .arg(&jar_file)
        .arg(big_key)
        .arg(&dist_file)
        // Nothing from this machine's AWS setup.
        .env("HOME", work.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION")
        .env_remove("JAVA_TOOL_OPTIONS");
    let printed = run(command, "java S3Upload").await;
    let line = |step: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(step)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {step} in {printed}"))
            .to_string()
    };
    assert_eq!(line("exists-before"), "false", "doesObjectExist on a miss");
    assert_eq!(
        line("put-etag"),
        md5_hex(&jar),
        "putObject's ETag is the MD5"
    );
    assert!(
        line("multipart-etag").ends_with("-3"),
        "12 MiB in 5 MiB parts is a 3-part upload: {printed}"
    );
    assert_eq!(line("exists-after"), "true");
    assert_eq!(line("read-back"), key);
    assert!(
        printed.contains(&format!("read-back {big_key}")),
        "{printed}"
    );
    assert!(
        in_backend(&backend, key).await == Some(jar),
        "{key} in SeaweedFS"
    );
    assert!(
        in_backend(&backend, big_key).await == Some(dist),
        "{big_key} in SeaweedFS"
    );
    drop(daemon);
    remove_bucket(&s3, &backend).await;
}
