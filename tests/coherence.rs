//! Coherence over real sockets, SeaweedFS behind the nodes: after a write or a delete is
//! acknowledged, no tier, node or upload brings back what it replaced.
//!
//! - Another node's v1 is in the bucket; on node B a cold GET (a fill from S3) races a PUT of
//!   v2 or a DELETE sent 0–3 ms after it; every later GET on B answers v2 or 404. In each write
//!   mode (through, back) and freshness (immutable, revalidate) of B's bucket.
//! - Two write-through PUTs of one key with different 48 MiB bodies at once, parts sent one at a
//!   time: S3 holds exactly one of the bodies with that body's checksum, the node serves the
//!   same, and a third node reads it whole.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::s3::{self as s3t, client, client_as, endpoint, fresh_bucket, remove_bucket};
use common::Daemon;

const RUNNER_KEY: &str = "runner";
const RUNNER_SECRET: &str = "runner-secret-0123456789";
const BUCKET: &str = "ci-cache";
const PREFIX: &str = "cache/";

/// A node exposing `BUCKET` over `backend`, with the given write mode and freshness.
fn node_config(backend: &str, write: &str, freshness: &str, extra_s3: &str) -> String {
    s3t::config(
        backend,
        &endpoint(),
        extra_s3,
        &format!(
            r#"
[[s3_api.buckets]]
name = "{BUCKET}"
backend_bucket = "{backend}"
backend_prefix = "{PREFIX}"
write = "{write}"
freshness = "{freshness}"

[[s3_api.credentials]]
access_key = "{RUNNER_KEY}"
secret_key = "{RUNNER_SECRET}"
buckets = {{ "{BUCKET}" = "readwrite" }}
"#
        ),
    )
}

fn front(daemon: &Daemon) -> aws_sdk_s3::Client {
    client_as(&daemon.s3_url(), RUNNER_KEY, RUNNER_SECRET)
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, data: Vec<u8>) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
}

/// The object's bytes through a node, or `None` on a 404.
async fn get(client: &aws_sdk_s3::Client, key: &str) -> Option<Vec<u8>> {
    match client.get_object().bucket(BUCKET).key(key).send().await {
        Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => None,
        Err(e) => panic!("get {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)),
    }
}

const ROUNDS: usize = 200;

/// Runs the race on node B for one bucket policy: `ROUNDS` rounds with a PUT and as many with
/// a DELETE. Returns the stale answers seen, described.
async fn race(write: &str, freshness: &str) -> Vec<String> {
    let direct = client(&endpoint());
    let backend = fresh_bucket(&direct, &format!("race-{write}-{freshness}")).await;
    let work = tempfile::tempdir().unwrap();
    let config = node_config(&backend, write, freshness, "");
    let node = Daemon::start_spec(work.path(), s3t::spec(&config));
    let b = front(&node);
    let mut stale = Vec::new();
    for round in 0..2 * ROUNDS {
        let delete = round % 2 == 1;
        let key = format!("race/{round}.zip");
        let (v1, v2) = (
            pattern(64 * 1024, 2 * round as u64),
            pattern(64 * 1024, 2 * round as u64 + 1),
        );
        // Another node's write: v1 is in the bucket, node B has never seen the key.
        put(&direct, &backend, &format!("{PREFIX}{key}"), v1.clone()).await;
        let fill = {
            let (b, key) = (b.clone(), key.clone());
            tokio::spawn(async move { get(&b, &key).await })
        };
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3000))).await;
        if delete {
            b.delete_object()
                .bucket(BUCKET)
                .key(&key)
                .send()
                .await
                .unwrap();
        } else {
            put(&b, BUCKET, &key, v2.clone()).await;
        }
        // The racing read answered something current when it was asked: v1 or the change.
        let raced = fill.await.unwrap();
        assert!(
            raced.is_none() || raced.as_ref() == Some(&v1) || raced.as_ref() == Some(&v2),
            "round {round}: the racing read got bytes nobody wrote"
        );
        let expected = (!delete).then_some(v2);
        for attempt in 0..3 {
            let got = get(&b, &key).await;
            if got != expected {
                let what = match &got {
                    None => "404".to_string(),
                    Some(data) if *data == v1 => "v1".to_string(),
                    Some(data) => format!("{} other bytes", data.len()),
                };
                stale.push(format!(
                    "round {round} ({}), read {attempt}: {what}",
                    if delete { "delete" } else { "put" }
                ));
            }
        }
    }
    remove_bucket(&direct, &backend).await;
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_racing_a_write_or_a_delete_never_serves_stale_bytes_after_the_ack() {
    let mut stale = Vec::new();
    for (write, freshness) in [
        ("through", "immutable"),
        ("through", "revalidate"),
        ("back", "immutable"),
        ("back", "revalidate"),
    ] {
        for line in race(write, freshness).await {
            stale.push(format!("write={write} freshness={freshness}: {line}"));
        }
    }
    assert!(
        stale.is_empty(),
        "stale reads after an acknowledgement:\n{}",
        stale.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_write_through_puts_leave_s3_holding_one_whole_body() {
    const LEN: usize = 48 << 20;
    let direct = client(&endpoint());
    let backend = fresh_bucket(&direct, "concurrent-puts").await;
    let work = tempfile::tempdir().unwrap();
    let extra = "multipart_part_size = \"8MiB\"\nmultipart_concurrency = 1";
    let config = node_config(&backend, "through", "immutable", extra);
    let a = Daemon::start_spec(&work.path().join("a"), s3t::spec(&config));
    let (front_a, direct_key) = (front(&a), |key: &str| format!("{PREFIX}{key}"));
    for round in 0..8u64 {
        let key = format!("concurrent/{round}.zip");
        let bodies = [pattern(LEN, 100 + 2 * round), pattern(LEN, 101 + 2 * round)];
        let puts: Vec<_> = bodies
            .iter()
            .map(|body| {
                let (client, key, body) = (front_a.clone(), key.clone(), body.clone());
                tokio::spawn(async move { put(&client, BUCKET, &key, body).await })
            })
            .collect();
        for acked in puts {
            acked.await.unwrap();
        }
        let stored = s3t::object(&direct, &backend, &direct_key(&key))
            .await
            .expect("S3 has the object");
        let which = bodies.iter().position(|b| *b == stored);
        assert!(
            which.is_some(),
            "round {round}: S3 holds a mix of the two bodies"
        );
        assert_eq!(
            s3t::object_crc32c(&direct, &backend, &direct_key(&key)).await,
            Some(crc32c::crc32c(&stored)),
            "round {round}: S3's CRC32C of the object is its body's"
        );
        assert!(
            get(&front_a, &key).await == Some(stored.clone()),
            "round {round}: the node serves what S3 holds"
        );
        // A third node, cold: reads S3's object whole, its checksum verified.
        let c_work = tempfile::tempdir().unwrap();
        let c = Daemon::start_spec(c_work.path(), s3t::spec(&config));
        assert!(
            get(&front(&c), &key).await == Some(stored),
            "round {round}: a third node reads it whole"
        );
    }
    remove_bucket(&direct, &backend).await;
}
