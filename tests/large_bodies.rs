//! Streaming with bounded memory: a 2 GiB entry through the daemon (a separate process) with
//! its peak resident set size under 128 MiB.

mod common;

use bytes::Bytes;
use futures_util::StreamExt;

use common::Daemon;

const KEY: &str = "feedfacefeedfacefeedfacefeedface";
const SIZE: u64 = 2 << 30;
const CHUNK: usize = 1 << 20;
const RSS_LIMIT: u64 = 128 << 20;

/// Chunk `i` of the generated body: cheap to produce, different per position.
fn chunk(i: u64) -> Bytes {
    let mut data = vec![(i % 251) as u8; CHUNK];
    data[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_put_and_get_with_bounded_memory() {
    let work = tempfile::tempdir().unwrap();
    let config = "[disk]\nmax_size = \"3GiB\"\n[gradle]\nmax_entry_size = \"3GiB\"\n";
    let daemon = Daemon::start(work.path(), config);
    let chunks = SIZE / CHUNK as u64;

    let body = futures_util::stream::iter((0..chunks).map(|i| Ok::<_, std::io::Error>(chunk(i))));
    let response = reqwest::Client::new()
        .put(daemon.entry_url(KEY))
        .header("content-length", SIZE)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let response = reqwest::get(daemon.entry_url(KEY)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(SIZE));
    let mut stream = response.bytes_stream();
    let mut pending = Vec::new();
    let mut index = 0u64;
    while let Some(part) = stream.next().await {
        pending.extend_from_slice(&part.unwrap());
        while pending.len() >= CHUNK {
            assert!(
                pending[..CHUNK] == chunk(index)[..],
                "chunk {index} differs"
            );
            pending.drain(..CHUNK);
            index += 1;
        }
    }
    assert!(pending.is_empty());
    assert_eq!(index, chunks);

    let peak = daemon.peak_rss();
    eprintln!("daemon peak RSS after 2 GiB PUT + GET: {} MiB", peak >> 20);
    assert!(
        peak < RSS_LIMIT,
        "peak RSS {} MiB is not under 128 MiB",
        peak >> 20
    );
}
