//! Streaming with bounded memory through the S3 front: a 2 GiB PutObject and GetObject, signed
//! by aws-sdk-s3, with the daemon's peak resident set size under 128 MiB. The bucket is local
//! (no S3 behind it), so the test measures the front and the local tiers alone.

mod common;

use std::io::Write;

use aws_sdk_s3::primitives::ByteStream;
use common::s3::client_as;
use common::Daemon;
use md5::{Digest, Md5};

const SIZE: u64 = 2 << 30;
const CHUNK: usize = 1 << 20;
const RSS_LIMIT: u64 = 128 << 20;

/// Chunk `i` of the body: cheap to produce, different per position.
fn chunk(i: u64) -> Vec<u8> {
    let mut data = vec![(i % 251) as u8; CHUNK];
    data[..8].copy_from_slice(&i.to_le_bytes());
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_put_object_and_get_object_with_bounded_memory() {
    let work = tempfile::tempdir().unwrap();
    let config = r#"
[disk]
max_size = "3GiB"

[[s3_api.buckets]]
name = "big"
write = "local"

[[s3_api.credentials]]
access_key = "writer"
secret_key = "writer-secret"
buckets = { big = "readwrite" }
"#;
    let daemon = Daemon::start(&work.path().join("daemon"), config);
    // A file body: the SDK knows its length and sends it as it reads it.
    let source = work.path().join("body");
    let mut md5 = Md5::new();
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source).unwrap());
        for i in 0..SIZE / CHUNK as u64 {
            let data = chunk(i);
            md5.update(&data);
            file.write_all(&data).unwrap();
        }
        file.flush().unwrap();
    }
    let expected_etag = format!("\"{}\"", hex::encode(md5.finalize()));

    let client = client_as(&daemon.s3_url(), "writer", "writer-secret");
    let put = client
        .put_object()
        .bucket("big")
        .key("archives/cache.zip")
        .body(ByteStream::from_path(&source).await.unwrap())
        .customize()
        // Hashing 2 GiB up front would only slow the test; the front checks what is signed.
        .disable_payload_signing()
        .send()
        .await
        .unwrap_or_else(|e| panic!("put: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
    assert_eq!(put.e_tag(), Some(expected_etag.as_str()));
    std::fs::remove_file(&source).unwrap();

    let got = client
        .get_object()
        .bucket("big")
        .key("archives/cache.zip")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_length(), Some(SIZE as i64));
    assert_eq!(got.e_tag(), Some(expected_etag.as_str()));
    let mut body = got.body;
    let mut pending = Vec::new();
    let mut index = 0u64;
    while let Some(part) = body.next().await {
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
    assert_eq!(index, SIZE / CHUNK as u64);

    let peak = daemon.peak_rss();
    eprintln!(
        "daemon peak RSS after a 2 GiB PutObject + GetObject: {} MiB",
        peak >> 20
    );
    assert!(
        peak < RSS_LIMIT,
        "peak RSS {} MiB is over {} MiB",
        peak >> 20,
        RSS_LIMIT >> 20
    );
}
