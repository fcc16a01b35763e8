//! The S3 tier against a real S3 server (SeaweedFS, started by `scripts/test.sh`, endpoint in
//! `BCP_TEST_S3_ENDPOINT`): nodes sharing entries, single-flight, outages, crashes, large
//! read-throughs and mid-stream failures. Each test uses its own bucket.

mod common;

use std::time::{Duration, Instant};

use common::older_s3::OlderS3;
use common::s3::{self, Forwarder};
use common::{eventually, metric_value, metrics, Daemon};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// Test bodies: a seeded random 64 KiB block, repeated, each copy stamped with its position, so
/// that lost, repeated or reordered blocks all show (and a GiB is quick to make in a debug build).
fn data(seed: u64, len: usize) -> Vec<u8> {
    const BLOCK: usize = 64 * 1024;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut block = vec![0u8; BLOCK];
    rng.fill(&mut block);
    let mut out = Vec::with_capacity(len);
    let mut n = 0u64;
    while out.len() < len {
        let take = BLOCK.min(len - out.len());
        let start = out.len();
        out.extend_from_slice(&block[..take]);
        let stamp = (seed << 32 ^ n).to_le_bytes();
        let end = (start + 8).min(out.len());
        out[start..end].copy_from_slice(&stamp[..end - start]);
        n += 1;
    }
    out
}

fn key(seed: u64) -> String {
    hex::encode(Sha256::digest(seed.to_le_bytes()))[..32].to_string()
}

fn series(name: &str, labels: &str) -> String {
    format!("build_cache_proxy_{name}{{{labels}}}")
}

async fn metric(daemon: &Daemon, name: &str, labels: &str) -> f64 {
    let text = metrics(daemon).await;
    if labels.is_empty() {
        metric_value(&text, &format!("build_cache_proxy_{name}"))
    } else {
        metric_value(&text, &series(name, labels))
    }
}

/// Every S3 GET the daemon made, whatever its result.
async fn s3_gets(daemon: &Daemon) -> f64 {
    let text = metrics(daemon).await;
    [
        "ok",
        "miss",
        "not_modified",
        "precondition_failed",
        "unsatisfiable",
        "error",
        "timeout",
    ]
    .iter()
    .map(|r| {
        metric_value(
            &text,
            &series("s3_requests_total", &format!("op=\"get\",result=\"{r}\"")),
        )
    })
    .sum()
}

async fn put(http: &reqwest::Client, daemon: &Daemon, key: &str, body: Vec<u8>) {
    let response = http
        .put(daemon.entry_url(key))
        .header(
            "content-type",
            "application/vnd.gradle.build-cache-artifact.v1",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "PUT {key}");
    assert!(
        response
            .headers()
            .get("x-build-cache-proxy-dropped")
            .is_none(),
        "PUT {key} was dropped, not stored; log:\n{}",
        daemon.log()
    );
}

async fn get(http: &reqwest::Client, daemon: &Daemon, key: &str) -> (u16, Vec<u8>) {
    let response = http.get(daemon.entry_url(key)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn wait_queue_empty(daemon: &Daemon, deadline: Duration) {
    eventually("the write-back queue to drain", deadline, || async {
        metric(daemon, "upload_queue_entries", "").await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_entries_through_s3() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "two-nodes").await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &endpoint, "", "");
    let a = Daemon::start_spec(&work.path().join("a"), s3::spec(&config));
    let b = Daemon::start_spec(&work.path().join("b"), s3::spec(&config));
    let http = reqwest::Client::new();

    // One entry small enough for memory, one that only fits on disk.
    let entries = [(key(1), data(1, 200 * 1024)), (key(2), data(2, 3 * MIB))];
    for (k, body) in &entries {
        put(&http, &a, k, body.clone()).await;
    }
    wait_queue_empty(&a, Duration::from_secs(30)).await;
    for (k, body) in &entries {
        let stored = s3::object(&client, &bucket, &s3::gradle_object(k)).await;
        assert!(stored.as_ref() == Some(body), "S3 has {k} from node A");
        let meta = s3::object_metadata(&client, &bucket, &s3::gradle_object(k)).await;
        assert_eq!(
            meta.get("build-cache-proxy-crc32c").map(String::as_str),
            Some(format!("{:08x}", crc32c::crc32c(body)).as_str()),
            "our uploads carry the CRC32C"
        );
    }

    // Node B: a local miss, read through from S3.
    for (k, body) in &entries {
        let (status, got) = get(&http, &b, k).await;
        assert_eq!(status, 200, "node B reads {k} through S3");
        assert!(&got == body, "node B's body for {k} is node A's");
    }
    let gets = s3_gets(&b).await;
    assert_eq!(gets, 2.0, "one S3 GET per entry on node B");
    assert_eq!(
        metric(&b, "lookups_total", "result=\"hit\",tier=\"s3\"").await,
        2.0
    );

    // Again on node B: served locally, S3 not asked.
    for (k, body) in &entries {
        let (status, got) = get(&http, &b, k).await;
        assert_eq!(status, 200);
        assert!(&got == body);
    }
    assert_eq!(s3_gets(&b).await, gets, "second reads on node B are local");

    // A key nobody has is a miss on both tiers, and S3 says so.
    let (status, _) = get(&http, &b, &key(99)).await;
    assert_eq!(status, 404);
    assert_eq!(
        metric(&b, "s3_requests_total", "op=\"get\",result=\"miss\"").await,
        1.0
    );
    let ready = reqwest::get(b.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().await.unwrap().contains("s3: up"));
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_s3_get() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "single-flight").await;
    let k = key(3);
    let body = std::sync::Arc::new(data(3, 50 * MIB));
    // Written by someone else: no CRC32C metadata, the length check alone applies.
    s3::put_object(&client, &bucket, &s3::gradle_object(&k), body.to_vec()).await;

    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &endpoint, "", "");
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    let http = reqwest::Client::new();
    let mut readers = Vec::new();
    for _ in 0..20 {
        let http = http.clone();
        let url = daemon.entry_url(&k);
        let expected = body.clone();
        readers.push(tokio::spawn(async move {
            let response = http.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            // Compared as it streams (a hash is slow in a debug build; memcmp is not).
            let mut at = 0usize;
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                let end = at + chunk.len();
                assert!(end <= expected.len(), "body longer than the object");
                assert!(chunk[..] == expected[at..end], "body differs at {at}");
                at = end;
            }
            at
        }));
    }
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            body.len(),
            "every body is the whole object"
        );
    }
    assert_eq!(
        s3_gets(&daemon).await,
        1.0,
        "exactly one S3 GET for 20 misses"
    );
    assert_eq!(
        metric(&daemon, "single_flight_waiters", "").await,
        0.0,
        "no waiter left behind"
    );
    assert_eq!(
        metric(&daemon, "s3_received_bytes_total", "").await,
        (50 * MIB) as f64
    );
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_first_reader_does_not_strand_the_others() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "cancel").await;
    let k = key(5);
    let body = data(5, 24 * MIB);
    s3::put_object(&client, &bucket, &s3::gradle_object(&k), body.clone()).await;
    // Slow S3, so that the first reader can give up while the fill is running.
    let fwd = Forwarder::start(&endpoint).await;
    fwd.throttle(8 * MIB as u64);
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &fwd.endpoint(), "", "");
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));

    let leader = reqwest::Client::new();
    let response = leader.get(daemon.entry_url(&k)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut leading = response.bytes_stream();
    leading.next().await.unwrap().unwrap();

    let follower = {
        let url = daemon.entry_url(&k);
        tokio::spawn(async move { reqwest::get(url).await.unwrap().bytes().await })
    };
    eventually(
        "the second reader to join the fill",
        Duration::from_secs(10),
        || async { metric(&daemon, "single_flight_waiters", "").await == 1.0 },
    )
    .await;
    // The first reader disconnects half way.
    drop(leading);
    drop(leader);

    let got = follower
        .await
        .unwrap()
        .expect("the second reader's body completes");
    assert!(
        got[..] == body[..],
        "the second reader gets the whole object"
    );
    assert_eq!(s3_gets(&daemon).await, 1.0, "one S3 GET for both readers");
    let (status, again) = get(&reqwest::Client::new(), &daemon, &k).await;
    assert_eq!(status, 200);
    assert!(again == body);
    assert_eq!(
        s3_gets(&daemon).await,
        1.0,
        "committed: the third read is local"
    );
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_keeps_local_hits_and_queues_writes() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "outage").await;
    let fwd = Forwarder::start(&endpoint).await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(
        &bucket,
        &fwd.endpoint(),
        "read_timeout = \"2s\"\nbreaker_failures = 2\nbreaker_cooldown = \"1s\"\nretry_max_backoff = \"1s\"",
        "",
    );
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    let http = reqwest::Client::new();

    let local = key(10);
    let local_body = data(10, 64 * 1024);
    put(&http, &daemon, &local, local_body.clone()).await;
    wait_queue_empty(&daemon, Duration::from_secs(30)).await;

    fwd.stop().await;
    // Local hits keep working.
    for _ in 0..3 {
        let (status, got) = get(&http, &daemon, &local).await;
        assert_eq!(status, 200);
        assert!(got == local_body);
    }
    // Misses are quick 404s; after a few failures the breaker skips S3 altogether.
    for i in 0..6 {
        let started = Instant::now();
        let (status, _) = get(&http, &daemon, &key(100 + i)).await;
        assert_eq!(status, 404);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a miss with S3 down took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(metric(&daemon, "s3_up", "").await, 0.0, "breaker open");
    assert!(
        metric(
            &daemon,
            "s3_requests_total",
            "op=\"get\",result=\"skipped\""
        )
        .await
            >= 1.0,
        "misses skip S3 while the breaker is open"
    );
    let ready = reqwest::get(daemon.admin_url("/readyz")).await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "S3 down does not make the node unready"
    );
    assert!(ready.text().await.unwrap().contains("s3: down"));
    let health = reqwest::get(daemon.admin_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    // Writes are acknowledged and queued.
    let queued: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (key(20 + i), data(20 + i, 100 * 1024 + i as usize)))
        .collect();
    for (k, body) in &queued {
        put(&http, &daemon, k, body.clone()).await;
    }
    eventually(
        "failed uploads to be counted",
        Duration::from_secs(10),
        || async { metric(&daemon, "upload_failures_total", "").await >= 1.0 },
    )
    .await;
    assert_eq!(metric(&daemon, "upload_queue_entries", "").await, 3.0);
    assert!(metric(&daemon, "disk_pinned_bytes", "").await > 0.0);
    for (k, _) in &queued {
        assert!(s3::object(&client, &bucket, &s3::gradle_object(k))
            .await
            .is_none());
    }

    // S3 back: the queue drains into the bucket.
    fwd.restart().await;
    wait_queue_empty(&daemon, Duration::from_secs(30)).await;
    for (k, body) in &queued {
        let stored = s3::object(&client, &bucket, &s3::gradle_object(k)).await;
        assert!(stored.as_ref() == Some(body), "{k} reached S3 intact");
    }
    assert_eq!(metric(&daemon, "disk_pinned_bytes", "").await, 0.0);
    eventually("the breaker to close", Duration::from_secs(10), || async {
        metric(&daemon, "s3_up", "").await == 1.0
    })
    .await;
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_s3_costs_one_timeout_then_the_breaker_skips_it() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "hung").await;
    let fwd = Forwarder::start(&endpoint).await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(
        &bucket,
        &fwd.endpoint(),
        "read_timeout = \"1s\"\nbreaker_failures = 2\nbreaker_cooldown = \"30s\"",
        "",
    );
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    let http = reqwest::Client::new();
    let local = key(80);
    put(&http, &daemon, &local, data(80, 1000)).await;
    wait_queue_empty(&daemon, Duration::from_secs(30)).await;

    // S3 accepts connections and never answers. The daemon's pooled connections to it are
    // dropped too, so every request meets the hang.
    fwd.hang(true);
    fwd.stop().await;
    fwd.restart().await;
    for i in 0..5 {
        let started = Instant::now();
        let (status, _) = get(&http, &daemon, &key(200 + i)).await;
        let took = started.elapsed();
        assert_eq!(status, 404);
        assert!(took < Duration::from_secs(3), "a miss took {took:?}");
    }
    // Two misses waited out the timeout and opened the breaker; the rest never asked S3.
    assert_eq!(
        metric(
            &daemon,
            "s3_requests_total",
            "op=\"get\",result=\"timeout\""
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &daemon,
            "s3_requests_total",
            "op=\"get\",result=\"skipped\""
        )
        .await,
        3.0
    );
    let (status, _) = get(&http, &daemon, &local).await;
    assert_eq!(status, 200, "local hits are unaffected");
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_writes_and_counts_them() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "full-queue").await;
    let fwd = Forwarder::start(&endpoint).await;
    fwd.stop().await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(
        &bucket,
        &fwd.endpoint(),
        "queue_max_entries = 2\nretry_max_backoff = \"1s\"",
        "",
    );
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    let http = reqwest::Client::new();
    put(&http, &daemon, &key(90), data(90, 1000)).await;
    put(&http, &daemon, &key(91), data(91, 1000)).await;
    // Writing a queued key again needs no new slot.
    put(&http, &daemon, &key(91), data(91, 1000)).await;
    // Large enough that the client is still sending when the answer is decided: the daemon
    // reads it to the end, and the connection stays usable.
    let response = http
        .put(daemon.entry_url(&key(92)))
        .body(data(92, 4 * MIB))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "Gradle must never see a non-2xx");
    assert_eq!(
        response
            .headers()
            .get("x-build-cache-proxy-dropped")
            .and_then(|v| v.to_str().ok()),
        Some("store-error")
    );
    assert_eq!(
        metric(
            &daemon,
            "dropped_puts_total",
            "front=\"gradle\",reason=\"store_error\""
        )
        .await,
        1.0
    );
    assert_eq!(metric(&daemon, "upload_queue_entries", "").await, 2.0);
    let (status, _) = get(&http, &daemon, &key(92)).await;
    assert_eq!(status, 404, "the refused write stored nothing");

    fwd.restart().await;
    wait_queue_empty(&daemon, Duration::from_secs(30)).await;
    put(&http, &daemon, &key(92), data(92, 1000)).await;
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_survives_kill_9_and_drains_after_restart() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "kill9").await;
    let fwd = Forwarder::start(&endpoint).await;
    fwd.stop().await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(
        &bucket,
        &fwd.endpoint(),
        "read_timeout = \"2s\"\nretry_max_backoff = \"1s\"",
        // A disk tier barely larger than the queued entries: were the pins not restored, the
        // writes after the restart would evict them.
        "[disk]\nmax_size = \"12MiB\"\n[memory]\nmax_size = \"0\"\nmax_entry_size = \"0\"\n[gradle]\nmax_entry_size = \"4MiB\"",
    );
    let http = reqwest::Client::new();
    let entries: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (key(30 + i), data(30 + i, MIB + i as usize)))
        .collect();

    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    for (k, body) in &entries {
        put(&http, &daemon, k, body.clone()).await;
    }
    assert_eq!(metric(&daemon, "upload_queue_entries", "").await, 5.0);
    daemon.kill9();

    // Restart with S3 still down: the queue and its pins are back before anything else.
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    assert_eq!(metric(&daemon, "upload_queue_entries", "").await, 5.0);
    assert!(metric(&daemon, "disk_pinned_bytes", "").await >= (5 * MIB) as f64);
    // Press on the disk tier: more writes than fit beside the queued entries. They may be
    // refused (answered with a counted 2xx drop before their body is read, which can also
    // surface as a reset connection), but they must never evict a queued entry.
    let filler = reqwest::Client::new();
    for i in 0..8 {
        let _ = filler
            .put(daemon.entry_url(&key(60 + i)))
            .body(data(60 + i, MIB))
            .send()
            .await;
    }
    for (k, body) in &entries {
        let (status, got) = get(&http, &daemon, k).await;
        assert_eq!(status, 200, "queued {k} was not evicted");
        assert!(&got == body);
    }
    // SIGTERM leaves the queue on disk as well.
    assert!(daemon.stop().success());

    // Restart with S3 up: everything acknowledged reaches the bucket.
    fwd.restart().await;
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    wait_queue_empty(&daemon, Duration::from_secs(60)).await;
    for (k, body) in &entries {
        let stored = s3::object(&client, &bucket, &s3::gradle_object(k)).await;
        assert!(stored.as_ref() == Some(body), "{k} reached S3 intact");
    }
    assert_eq!(metric(&daemon, "disk_pinned_bytes", "").await, 0.0);
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_read_through_streams_early_with_bounded_memory() {
    const LEN: u64 = 1 << 30;
    const PART: usize = 16 * MIB;
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "one-gib").await;
    let k = key(40);
    let part = |i: usize| data(4000 + i as u64, PART);
    let started = Instant::now();
    s3::put_large_object(&client, &bucket, &s3::gradle_object(&k), LEN, PART, part).await;
    eprintln!("1 GiB uploaded to S3 in {:?}", started.elapsed());

    // Throttled so the download takes seconds: the first bytes must arrive long before.
    let fwd = Forwarder::start(&endpoint).await;
    fwd.throttle(256 * MIB as u64);
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &fwd.endpoint(), "", "");
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));

    let started = Instant::now();
    let response = reqwest::get(daemon.entry_url(&k)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(LEN));
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let downloaded = metric(&daemon, "s3_received_bytes_total", "").await;
    eprintln!(
        "first {} bytes at the client after {} of {LEN} bytes from S3",
        first.len(),
        downloaded
    );
    assert!(
        downloaded < LEN as f64,
        "the client got its first bytes only after the whole download"
    );

    let mut pending = first.to_vec();
    let mut index = 0usize;
    let mut total = first.len() as u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        while pending.len() >= PART {
            assert!(pending[..PART] == part(index)[..], "part {index} differs");
            pending.drain(..PART);
            index += 1;
        }
    }
    assert_eq!(total, LEN);
    assert_eq!(index * PART, LEN as usize);
    eprintln!("1 GiB read through in {:?}", started.elapsed());
    let peak = daemon.peak_rss();
    eprintln!(
        "daemon peak RSS after a 1 GiB read-through: {} MiB",
        peak >> 20
    );
    assert!(peak < 128 * MIB as u64, "peak RSS {} MiB", peak >> 20);

    // Committed: the next read is local.
    fwd.throttle(0);
    let gets = s3_gets(&daemon).await;
    let response = reqwest::get(daemon.entry_url(&k)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut again = 0u64;
    while let Some(chunk) = stream.next().await {
        again += chunk.unwrap().len() as u64;
    }
    assert_eq!(again, LEN);
    assert_eq!(s3_gets(&daemon).await, gets, "second read from disk");
    s3::remove_bucket(&client, &bucket).await;
}

/// S3 cutting a download off once: the fill resumes from where it stopped with a ranged GET,
/// the client gets the whole body without noticing, and the entry is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_s3_cut_mid_body_is_resumed() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "cut-once").await;
    let k = key(51);
    let body = data(51, 20 * MIB);
    s3::put_object(&client, &bucket, &s3::gradle_object(&k), body.clone()).await;

    let fwd = Forwarder::start(&endpoint).await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &fwd.endpoint(), "max_attempts = 1", "");
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    fwd.cut_once_after(5 * MIB as u64);

    let http = reqwest::Client::new();
    let (status, got) = get(&http, &daemon, &k).await;
    assert_eq!(status, 200);
    assert!(got == body, "full, correct body through a cut");
    assert_eq!(s3_gets(&daemon).await, 2.0, "one GET and one ranged resume");

    // Committed: the next read is local.
    let (status, again) = get(&http, &daemon, &k).await;
    assert_eq!(status, 200);
    assert!(again == body);
    assert_eq!(s3_gets(&daemon).await, 2.0, "second read from disk");
    assert_eq!(metric(&daemon, "disk_entries", "").await, 1.0);
    s3::remove_bucket(&client, &bucket).await;
}

/// S3 cutting every connection: the resumes run out, the response ends in an error (never a
/// clean short body), and nothing is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_cut_that_persists_fails_the_response_and_commits_nothing() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "cut").await;
    let k = key(50);
    let body = data(50, 20 * MIB);
    s3::put_object(&client, &bucket, &s3::gradle_object(&k), body.clone()).await;

    let fwd = Forwarder::start(&endpoint).await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &fwd.endpoint(), "max_attempts = 1", "");
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    // Every connection carries at most 2 MiB: the GET and its 3 resumes cannot reach 20 MiB.
    fwd.cut_after(2 * MIB as u64);

    let response = reqwest::get(daemon.entry_url(&k)).await.unwrap();
    assert_eq!(response.status(), 200, "headers come before the failure");
    let mut stream = response.bytes_stream();
    let mut received = 0usize;
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => received += c.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "the response must end in an error, not a clean end after {received} bytes"
    );
    assert!(received < body.len());
    assert!(received > 2 * MIB, "the resumes carried bytes too");
    assert_eq!(s3_gets(&daemon).await, 4.0, "one GET, then three resumes");
    assert_eq!(metric(&daemon, "disk_entries", "").await, 0.0);

    // Nothing was committed: with S3 healthy again the entry comes from S3, whole.
    fwd.cut_after(0);
    let gets = s3_gets(&daemon).await;
    let http = reqwest::Client::new();
    let (status, got) = get(&http, &daemon, &k).await;
    assert_eq!(status, 200);
    assert!(got == body, "full, correct body after S3 recovered");
    assert_eq!(s3_gets(&daemon).await, gets + 1.0, "read from S3 again");
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_failing_its_checksum_is_never_served_whole_or_cached() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "bad-crc").await;
    let k = key(55);
    let body = data(55, 3 * MIB);
    let wrong = format!("{:08x}", crc32c::crc32c(&body) ^ 1);
    client
        .put_object()
        .bucket(&bucket)
        .key(s3::gradle_object(&k))
        // The first release's name for our checksum, still honoured for Gradle entries.
        .metadata("crc32c", wrong)
        .body(body.clone().into())
        .customize()
        .disable_payload_signing()
        .send()
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &endpoint, "", "");
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));

    for attempt in 0..2 {
        let response = reqwest::get(daemon.entry_url(&k)).await.unwrap();
        assert_eq!(response.status(), 200);
        let result = response.bytes().await;
        assert!(
            result.is_err(),
            "attempt {attempt}: a body failing its checksum must end in an error"
        );
    }
    assert_eq!(s3_gets(&daemon).await, 2.0, "nothing was cached");
    assert_eq!(metric(&daemon, "disk_entries", "").await, 0.0);
    s3::remove_bucket(&client, &bucket).await;
}

/// An S3-compatible store without full-object checksums refuses the multipart upload a
/// write-through starts while the body arrives: the daemon then uploads bodies once received,
/// with their CRC32C in metadata, asks no more, and no PUT fails on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_full_object_checksums_gets_write_throughs_once_received() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "older").await;
    let older = OlderS3::start(&endpoint).await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(
        &bucket,
        &older.endpoint(),
        "multipart_part_size = \"5MiB\"\nmax_attempts = 1",
        "[gradle]\nwrite = \"through\"",
    );
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    let http = reqwest::Client::new();

    for seed in [74, 75] {
        let (k, body) = (key(seed), data(seed, 12 * MIB));
        put(&http, &daemon, &k, body.clone()).await;
        let object = s3::gradle_object(&k);
        let stored = s3::object(&client, &bucket, &object).await;
        assert!(
            stored == Some(body.clone()),
            "{k} is in S3 when the PUT returns"
        );
        let meta = s3::object_metadata(&client, &bucket, &object).await;
        assert_eq!(
            meta.get("build-cache-proxy-crc32c").map(String::as_str),
            Some(format!("{:08x}", crc32c::crc32c(&body)).as_str()),
            "uploaded once received, its CRC32C in metadata"
        );
    }
    assert_eq!(older.refused(), 1, "asked once, then remembered");
    assert_eq!(
        daemon
            .log()
            .matches("S3 refused a multipart upload with a full-object CRC32C")
            .count(),
        1
    );
    drop(daemon);
    s3::remove_bucket(&client, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_acknowledges_once_s3_has_the_object() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "through").await;
    let fwd = Forwarder::start(&endpoint).await;
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(
        &bucket,
        &fwd.endpoint(),
        "multipart_part_size = \"5MiB\"\nmax_attempts = 1",
        "[gradle]\nwrite = \"through\"",
    );
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    let http = reqwest::Client::new();

    // Small (one PUT) and multipart (12 MiB in 5 MiB parts): in S3 as soon as acknowledged.
    for (k, body) in [(key(70), data(70, 1000)), (key(71), data(71, 12 * MIB))] {
        put(&http, &daemon, &k, body.clone()).await;
        let stored = s3::object(&client, &bucket, &s3::gradle_object(&k)).await;
        assert!(stored == Some(body), "{k} is in S3 when the PUT returns");
    }
    assert!(
        metric(
            &daemon,
            "s3_requests_total",
            "op=\"upload_part\",result=\"ok\""
        )
        .await
            >= 3.0
    );

    // The multipart one went up while its body arrived: S3 keeps the body's CRC32C as its
    // full-object checksum, checked against the parts it received.
    let streamed = s3::gradle_object(&key(71));
    let meta = s3::object_metadata(&client, &bucket, &streamed).await;
    assert!(
        !meta.contains_key("build-cache-proxy-crc32c"),
        "not in metadata: the upload began before the body's CRC was known"
    );
    assert_eq!(
        s3::object_crc32c(&client, &bucket, &streamed).await,
        Some(crc32c::crc32c(&data(71, 12 * MIB))),
        "the streamed upload's full-object CRC32C"
    );

    // A body cut off after two parts' worth: the upload begun for it is aborted, nothing of it
    // is in S3, and the node has no copy.
    let cut = key(73);
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(daemon.gradle).await.unwrap();
        let head = format!(
            "PUT /cache/{cut} HTTP/1.1\r\nHost: node\r\nContent-Length: {}\r\n\r\n",
            12 * MIB
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&data(73, 11 * MIB)).await.unwrap();
        // Until two parts are surely in S3 (the third has not arrived), then the client goes.
        eventually("two parts uploaded", Duration::from_secs(10), || async {
            metric(
                &daemon,
                "s3_requests_total",
                "op=\"upload_part\",result=\"ok\"",
            )
            .await
                >= 5.0
        })
        .await;
        stream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
    }
    eventually(
        "the cut upload aborted",
        Duration::from_secs(10),
        || async {
            let open = client
                .list_multipart_uploads()
                .bucket(&bucket)
                .send()
                .await
                .unwrap();
            open.uploads().is_empty()
        },
    )
    .await;
    assert!(s3::object(&client, &bucket, &s3::gradle_object(&cut))
        .await
        .is_none());
    let response = http.get(daemon.entry_url(&cut)).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // S3 down: the write cannot be acknowledged as stored; Gradle gets its counted 2xx drop.
    fwd.stop().await;
    let response = http
        .put(daemon.entry_url(&key(72)))
        .body(data(72, 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-build-cache-proxy-dropped")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("store-error".to_string())
    );
    s3::remove_bucket(&client, &bucket).await;
}

/// A fill that started before a client's PUT of the same key must never replace that write:
/// the node keeps serving the client's bytes, and the write-back upload sends them to S3, not
/// the fill's older ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_never_replaces_a_newer_write() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "fill-race").await;
    let k = key(6);
    let older = data(6, 8 * MIB);
    let newer = data(7, 8 * MIB);
    s3::put_object(&client, &bucket, &s3::gradle_object(&k), older.clone()).await;
    // Slow S3: the fill of 8 MiB takes about 4 s, the local PUT well under that.
    let fwd = Forwarder::start(&endpoint).await;
    fwd.throttle(2 * MIB as u64);
    let work = tempfile::tempdir().unwrap();
    let config = s3::config(&bucket, &fwd.endpoint(), "", "");
    let daemon = Daemon::start_spec(work.path(), s3::spec(&config));
    let http = reqwest::Client::new();

    let reader = {
        let url = daemon.entry_url(&k);
        tokio::spawn(async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() })
    };
    eventually("the fill to start", Duration::from_secs(10), || async {
        s3_gets(&daemon).await == 1.0
    })
    .await;
    put(&http, &daemon, &k, newer.clone()).await;
    // The reader that started the fill gets what S3 had when it asked.
    assert!(reader.await.unwrap()[..] == older[..]);
    wait_queue_empty(&daemon, Duration::from_secs(60)).await;

    let (status, local) = get(&http, &daemon, &k).await;
    assert_eq!(status, 200);
    assert!(local == newer, "the fill replaced the newer write");
    let shared = s3::object(&client, &bucket, &s3::gradle_object(&k)).await;
    assert!(shared.unwrap() == newer, "S3 got the fill's stale bytes");
    s3::remove_bucket(&client, &bucket).await;
}
