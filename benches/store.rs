//! Micro-benchmark of the store tiers, without HTTP: how fast the disk tier writes (temp file,
//! checksum, fsync, rename) and reads back (verify, stream), and what the memory tier adds.
//!
//! `cargo bench --bench store` prints throughput per case. It compares tiers with each other and
//! with a plain `std::fs` copy of the same bytes measured in the same run, so the numbers read as
//! ratios against what this machine's disk can do at all.

use std::io::Write;
use std::time::{Duration, Instant};

use build_cache_proxy::metrics::Metrics;
use build_cache_proxy::store::disk::{DiskSettings, DiskTier};
use build_cache_proxy::store::memory::MemoryTier;
use build_cache_proxy::store::tiered::TieredStore;
use build_cache_proxy::store::{bytes_stream, Key, PutOptions, Store};
use bytes::Bytes;
use futures_util::StreamExt;

fn key(n: u64) -> Key {
    Key::gradle(&format!("{n:032x}")).unwrap()
}

async fn drain(store: &impl Store, key: &Key) -> u64 {
    let object = store.get(key).await.unwrap().expect("entry present");
    let mut body = object.body;
    let mut n = 0;
    while let Some(chunk) = body.next().await {
        n += chunk.unwrap().len() as u64;
    }
    n
}

fn report(case: &str, ops: u64, bytes: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{case:<44} {:>10.0} ops/s {:>10.1} MiB/s",
        ops as f64 / secs,
        bytes as f64 / secs / 1048576.0
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(DiskSettings {
        dir: dir.path().join("data"),
        max_size: 4 << 30,
        verify_before_serve: 128 << 20,
        min_free: 0,
    })
    .await
    .unwrap();
    let memory = MemoryTier::new(256 << 20, 1 << 20);
    let tiered: TieredStore =
        TieredStore::new(memory, disk.clone(), std::sync::Arc::new(Metrics::new()));

    let small = Bytes::from(vec![7u8; 32 * 1024]);
    let count = 2000u64;
    let started = Instant::now();
    for n in 0..count {
        disk.put(
            &key(n),
            small.len() as u64,
            bytes_stream(small.clone()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    }
    report(
        "disk put 32 KiB (fsync each)",
        count,
        count * small.len() as u64,
        started.elapsed(),
    );

    let started = Instant::now();
    let mut total = 0;
    for n in 0..count {
        total += drain(&disk, &key(n)).await;
    }
    report(
        "disk get 32 KiB (verified)",
        count,
        total,
        started.elapsed(),
    );

    for n in 0..count {
        drain(&tiered, &key(n)).await; // promote into memory
    }
    let started = Instant::now();
    let mut total = 0;
    for n in 0..count {
        total += drain(&tiered, &key(n)).await;
    }
    report(
        "tiered get 32 KiB (memory hit)",
        count,
        total,
        started.elapsed(),
    );

    let large_len = 512u64 << 20;
    let chunk = Bytes::from(vec![3u8; 1 << 20]);
    let chunks = large_len / chunk.len() as u64;
    let body = futures_util::stream::iter((0..chunks).map(move |_| Ok(chunk.clone())));
    let started = Instant::now();
    disk.put(
        &key(1 << 40),
        large_len,
        Box::pin(body),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    report("disk put 512 MiB", 1, large_len, started.elapsed());
    let started = Instant::now();
    let n = drain(&disk, &key(1 << 40)).await;
    report(
        "disk get 512 MiB (verified while streaming)",
        1,
        n,
        started.elapsed(),
    );

    // The baseline: the same bytes through plain std::fs, write + fsync, then read.
    let path = dir.path().join("baseline");
    let buf = vec![3u8; 1 << 20];
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).unwrap();
    for _ in 0..chunks {
        file.write_all(&buf).unwrap();
    }
    file.sync_all().unwrap();
    report(
        "baseline: std::fs write + fsync 512 MiB",
        1,
        large_len,
        started.elapsed(),
    );
    let started = Instant::now();
    let read = std::fs::read(&path).unwrap().len() as u64;
    report("baseline: std::fs read 512 MiB", 1, read, started.elapsed());
}
