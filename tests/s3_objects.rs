//! Objects through two nodes on one bucket: the store's object semantics (revalidation of
//! mutable keys, deletes that reach the bucket, ranged reads on a cold miss, objects larger
//! than the disk tier) driven through the real daemon's S3 front with aws-sdk-s3, SeaweedFS
//! behind both nodes.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::s3::{self as s3t, client, client_as, endpoint, fresh_bucket, remove_bucket};
use common::{eventually, metric_value, metrics, Daemon};

/// The keys the runner would be given, as the front's `[[s3_api.credentials]]`.
const RUNNER_KEY: &str = "runner";
const RUNNER_SECRET: &str = "runner-secret-0123456789";
/// The bucket the nodes expose.
const BUCKET: &str = "ci-cache";

/// A node exposing `BUCKET`, stored in `backend` under `cache/`, with `write` as its policy.
fn node_config(backend: &str, write: &str, extra: &str) -> String {
    s3t::config(
        backend,
        &endpoint(),
        "",
        &format!(
            r#"
[[s3_api.buckets]]
name = "{BUCKET}"
backend_bucket = "{backend}"
backend_prefix = "cache/"
write = "{write}"
freshness = "revalidate"

[[s3_api.credentials]]
access_key = "{RUNNER_KEY}"
secret_key = "{RUNNER_SECRET}"
buckets = {{ "{BUCKET}" = "readwrite" }}

{extra}
"#
        ),
    )
}

fn start(work: &std::path::Path, config: &str) -> Daemon {
    Daemon::start_spec(work, s3t::spec(config))
}

fn front(daemon: &Daemon) -> aws_sdk_s3::Client {
    client_as(&daemon.s3_url(), RUNNER_KEY, RUNNER_SECRET)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn put(client: &aws_sdk_s3::Client, key: &str, data: Vec<u8>) -> String {
    let out = client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .content_type("application/zip")
        .metadata("cachekey", "build-jar")
        .body(ByteStream::from(data))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
    out.e_tag().unwrap().to_string()
}

/// The object's bytes, or `None` on a 404.
async fn get(client: &aws_sdk_s3::Client, key: &str) -> Option<Vec<u8>> {
    match client.get_object().bucket(BUCKET).key(key).send().await {
        Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => None,
        Err(e) => panic!("get {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)),
    }
}

async fn metric(daemon: &Daemon, series: &str) -> f64 {
    metric_value(&metrics(daemon).await, series)
}

async fn queue_drained(daemon: &Daemon) {
    eventually(
        "the upload queue to drain",
        Duration::from_secs(60),
        || async { metric(daemon, "build_cache_proxy_upload_queue_entries").await == 0.0 },
    )
    .await;
}

/// A cache archive overwritten through node A is read new through node B, which held the old
/// one: B's local hit is revalidated against the bucket, not served stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_through_one_node_is_read_new_through_the_other() {
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "overwrite").await;
    let work = tempfile::tempdir().unwrap();
    let config = node_config(&backend, "through", "");
    let a = start(&work.path().join("a"), &config);
    let b = start(&work.path().join("b"), &config);
    let key = "runner/x/project/42/build-jar/main-protected";
    let (old, new) = (pattern(3 << 20, 1), pattern(3 << 20, 2));

    let old_etag = put(&front(&a), key, old.clone()).await;
    assert!(get(&front(&b), key).await == Some(old.clone()), "B fills");
    let head = front(&b)
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), Some(old_etag.as_str()), "B reads A's ETag");
    assert_eq!(
        head.metadata().unwrap().get("cachekey").map(String::as_str),
        Some("build-jar")
    );
    let fetched = metric(&b, "build_cache_proxy_s3_received_bytes_total").await;
    assert!(get(&front(&b), key).await == Some(old.clone()), "B's hit");
    assert_eq!(
        metric(&b, "build_cache_proxy_s3_received_bytes_total").await,
        fetched,
        "a confirmed hit downloads no body"
    );

    let new_etag = put(&front(&a), key, new.clone()).await;
    assert_ne!(new_etag, old_etag);
    assert!(
        get(&front(&b), key).await == Some(new.clone()),
        "B served the old archive"
    );
    let head = front(&b)
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), Some(new_etag.as_str()));
    assert!(
        s3t::object(&s3, &backend, &format!("cache/{key}")).await == Some(new),
        "the bucket holds the new archive under the configured prefix"
    );
    drop((a, b));
    remove_bucket(&s3, &backend).await;
}

/// A delete through node A (written back) reaches the bucket, and node B, which held a copy,
/// answers 404 afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_through_one_node_is_gone_from_the_other_and_the_bucket() {
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "delete").await;
    let work = tempfile::tempdir().unwrap();
    let config = node_config(&backend, "back", "");
    let a = start(&work.path().join("a"), &config);
    let b = start(&work.path().join("b"), &config);
    let key = "project/7/cache-key";
    let data = pattern(100_000, 3);

    put(&front(&a), key, data.clone()).await;
    queue_drained(&a).await;
    assert!(get(&front(&b), key).await == Some(data), "B fills");

    front(&a)
        .delete_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(get(&front(&a), key).await, None, "A forgot it at once");
    queue_drained(&a).await;
    assert_eq!(
        s3t::object(&s3, &backend, &format!("cache/{key}")).await,
        None,
        "the delete reached the bucket"
    );
    assert_eq!(
        get(&front(&b), key).await,
        None,
        "B served a deleted object"
    );
    drop((a, b));
    remove_bucket(&s3, &backend).await;
}

/// Ranged reads of a 1 GiB object nobody has yet, as GitLab's parallel download makes them:
/// the node fetches the object from S3 at most once, whatever the ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_ranged_read_of_a_gib_fetches_it_from_s3_at_most_once() {
    const LEN: u64 = 1 << 30;
    const PART: usize = 16 << 20;
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "cold-range").await;
    let key = "project/1/big";
    let chunk = |i: usize| pattern(PART, i as u8);
    s3t::put_large_object(&s3, &backend, &format!("cache/{key}"), LEN, PART, chunk).await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(
        work.path(),
        &node_config(&backend, "back", "[disk]\nmax_size = \"2GiB\"\n"),
    );

    // The runner's probe, then ranges from both ends and the middle at once.
    let probe = front(&daemon)
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .range("bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.content_range(), Some("bytes 0-0/1073741824"));
    let parts = [63usize, 0, 31, 62, 1, 32];
    let mut reads = tokio::task::JoinSet::new();
    for part in parts {
        let client = front(&daemon);
        reads.spawn(async move {
            let first = part * PART;
            let out = client
                .get_object()
                .bucket(BUCKET)
                .key(key)
                .range(format!("bytes={first}-{}", first + PART - 1))
                .send()
                .await
                .unwrap();
            let got = out.body.collect().await.unwrap().into_bytes();
            (part, got == chunk(part)[..])
        });
    }
    while let Some(done) = reads.join_next().await {
        let (part, equal) = done.unwrap();
        assert!(equal, "part {part} differs");
    }
    // The far ranges did not wait for the download from the start: they started their own.
    let ranged = metric(&daemon, "build_cache_proxy_fill_ranged_downloads_total").await;
    assert!(ranged >= 1.0, "{ranged} ranged downloads");
    // Each byte came once. A download that reaches a segment another one has stops there, with
    // at most one read buffer (hyper's, under 1 MiB) of that segment already received.
    let fetched = metric(&daemon, "build_cache_proxy_s3_received_bytes_total").await;
    let allowance = (ranged + 1.0) * (1 << 20) as f64;
    assert!(
        fetched <= LEN as f64 + allowance,
        "{fetched} bytes came from S3 for a {LEN}-byte object ({ranged} ranged downloads)"
    );
    drop(daemon);
    remove_bucket(&s3, &backend).await;
}

/// An object larger than the whole disk tier is served through from S3, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_larger_than_the_disk_tier_is_served_through() {
    const LEN: u64 = 96 << 20;
    const PART: usize = 8 << 20;
    let s3 = client(&endpoint());
    let backend = fresh_bucket(&s3, "through").await;
    let key = "project/2/huge";
    let chunk = |i: usize| pattern(PART, 100 + i as u8);
    s3t::put_large_object(&s3, &backend, &format!("cache/{key}"), LEN, PART, chunk).await;
    let work = tempfile::tempdir().unwrap();
    let daemon = start(
        work.path(),
        &node_config(
            &backend,
            "back",
            "[disk]\nmax_size = \"32MiB\"\nmin_free = \"0B\"\n[gradle]\nmax_entry_size = \"8MiB\"\n",
        ),
    );
    for round in 0..2 {
        let got = get(&front(&daemon), key).await.expect("served");
        assert_eq!(got.len() as u64, LEN, "round {round}");
        let expected: Vec<u8> = (0..(LEN as usize / PART)).flat_map(chunk).collect();
        assert!(got == expected, "round {round}: bytes differ");
    }
    let disk = metric(&daemon, "build_cache_proxy_disk_bytes").await;
    assert!(disk <= (32 << 20) as f64, "disk holds {disk} bytes");
    drop(daemon);
    remove_bucket(&s3, &backend).await;
}
