//! The S3 tier's [`Backend`] contract against a real S3 server (SeaweedFS, started by
//! `scripts/test.sh`): the same semantics the in-memory fake gives the unit tests — ranges,
//! preconditions, ETags of single and multipart puts, listings with a delimiter and
//! continuation, deletes. The backend has no HTTP face of its own, so this drives the library's
//! S3 tier directly; everything else drives the daemon.

mod common;

use std::io::Write;
use std::sync::Arc;

use build_cache_proxy::config::S3Config;
use build_cache_proxy::metrics::Metrics;
use build_cache_proxy::store::backend::{
    md5_of, multipart_etag, single_etag, Backend, ByteRange, Conditions, Fetch, GetOptions,
    ListRequest, PartLayout, Upload,
};
use build_cache_proxy::store::s3::S3Tier;
use build_cache_proxy::store::{Key, Namespace, ObjectAttrs};
use common::s3;
use futures_util::StreamExt;

const MIB: usize = 1024 * 1024;

fn tier(bucket: &str, client: aws_sdk_s3::Client) -> S3Tier {
    let config = S3Config {
        bucket: bucket.to_string(),
        prefix: "pre".to_string(),
        multipart_part_size: bytesize::ByteSize::mib(5),
        ..S3Config::default()
    };
    S3Tier::new(client, &config, Arc::new(Metrics::new()))
}

fn key(name: &str) -> Key {
    Key::object(Namespace::new("objects").unwrap(), name).unwrap()
}

fn upload(key: &Key, file: &tempfile::NamedTempFile, len: usize, parts: PartLayout) -> Upload {
    Upload {
        key: key.clone(),
        file: Arc::new(file.reopen().unwrap()),
        offset: 3,
        len: len as u64,
        crc32c: Some(0x1234abcd),
        attrs: ObjectAttrs {
            content_type: Some("application/zip".into()),
            user: vec![("origin".into(), "test".into())],
            ..Default::default()
        },
        parts,
    }
}

/// A file with 3 bytes of header before `data`, as entry files have.
fn file_with(data: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"hdr").unwrap();
    file.write_all(data).unwrap();
    file
}

async fn body_of(fetch: Fetch) -> (std::ops::Range<u64>, Vec<u8>) {
    let Fetch::Found(found) = fetch else {
        panic!("expected the object");
    };
    let mut out = Vec::new();
    let mut body = found.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    (found.span, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_tier_keeps_the_backend_contract() {
    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "backend").await;
    let tier = tier(&bucket, client.clone());

    // Multipart with the caller's boundaries (5 MiB + 5 MiB + 1 byte): S3's ETag is the one
    // computed from the parts.
    let data: Vec<u8> = (0..10 * MIB + 1).map(|i| (i % 251) as u8).collect();
    let file = file_with(&data);
    let k = key("dir/big");
    let sizes = vec![5 * MIB as u64, 5 * MIB as u64, 1];
    let etag = tier
        .put(&upload(&k, &file, data.len(), PartLayout::Sizes(sizes)))
        .await
        .unwrap()
        .unwrap();
    let expected = multipart_etag(&[
        md5_of(&data[..5 * MIB]),
        md5_of(&data[5 * MIB..10 * MIB]),
        md5_of(&data[10 * MIB..]),
    ]);
    assert_eq!(etag, expected);
    let stored = s3::object(&client, &bucket, "pre/objects/dir/big").await;
    assert!(
        stored.unwrap() == data,
        "the file region, under the documented key"
    );

    let meta = tier.head(&k).await.unwrap().unwrap();
    assert_eq!(meta.len, data.len() as u64);
    assert_eq!(meta.etag.as_deref(), Some(expected.as_str()));
    assert_eq!(meta.crc32c, Some(0x1234abcd));
    assert_eq!(meta.attrs.content_type.as_deref(), Some("application/zip"));
    assert_eq!(
        meta.attrs.user,
        vec![("origin".to_string(), "test".to_string())]
    );

    // A single PUT: the hex MD5.
    let small = key("dir/small");
    let small_data = b"hello".to_vec();
    let small_file = file_with(&small_data);
    let small_etag = tier
        .put(&upload(&small, &small_file, 5, PartLayout::Auto))
        .await
        .unwrap();
    assert_eq!(small_etag, Some(single_etag(b"hello")));

    // Ranges.
    let ranged = |range| GetOptions {
        range: Some(range),
        ..Default::default()
    };
    let (span, bytes) = body_of(
        tier.get(
            &k,
            &ranged(ByteRange::Bounded {
                first: 5 * MIB as u64 - 2,
                last: 5 * MIB as u64 + 1,
            }),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(span, 5 * MIB as u64 - 2..5 * MIB as u64 + 2);
    assert_eq!(bytes, data[5 * MIB - 2..5 * MIB + 2]);
    let (span, bytes) = body_of(tier.get(&k, &ranged(ByteRange::Suffix(3))).await.unwrap()).await;
    assert_eq!(span, data.len() as u64 - 3..data.len() as u64);
    assert_eq!(bytes, data[data.len() - 3..]);
    assert!(matches!(
        tier.get(&small, &ranged(ByteRange::From(5))).await.unwrap(),
        Fetch::RangeNotSatisfiable
    ));

    // Preconditions.
    let when = |conditions| GetOptions {
        range: None,
        conditions,
    };
    assert!(matches!(
        tier.get(
            &small,
            &when(Conditions {
                if_none_match: small_etag.clone(),
                ..Default::default()
            })
        )
        .await
        .unwrap(),
        Fetch::NotModified
    ));
    assert!(matches!(
        tier.get(&small, &when(Conditions::if_match("0123")))
            .await
            .unwrap(),
        Fetch::PreconditionFailed
    ));
    let resumed = tier
        .get(
            &small,
            &GetOptions {
                range: Some(ByteRange::From(2)),
                conditions: Conditions::if_match(small_etag.as_deref().unwrap()),
            },
        )
        .await
        .unwrap();
    assert_eq!(body_of(resumed).await.1, b"llo");
    assert!(matches!(
        tier.get(&key("none"), &GetOptions::default())
            .await
            .unwrap(),
        Fetch::Missing
    ));

    // Listing with a delimiter, a page at a time.
    for name in ["a/1", "a/2", "b", "c"] {
        tier.put(&upload(&key(name), &small_file, 5, PartLayout::Auto))
            .await
            .unwrap();
    }
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    let mut continuation = None;
    for _ in 0..10 {
        let page = tier
            .list(&ListRequest {
                namespace: Namespace::new("objects").unwrap(),
                prefix: String::new(),
                delimiter: Some("/".into()),
                continuation: continuation.take(),
                start_after: None,
                max_keys: 2,
            })
            .await
            .unwrap();
        assert!(page.objects.len() + page.common_prefixes.len() <= 2);
        objects.extend(page.objects.iter().map(|o| o.name.clone()));
        prefixes.extend(page.common_prefixes);
        continuation = page.next;
        if continuation.is_none() {
            break;
        }
    }
    assert_eq!(objects, ["b", "c"]);
    assert_eq!(prefixes, ["a/", "dir/"]);
    let after_b = tier
        .list(&ListRequest {
            namespace: Namespace::new("objects").unwrap(),
            prefix: String::new(),
            delimiter: None,
            continuation: None,
            start_after: Some("b".into()),
            max_keys: 100,
        })
        .await
        .unwrap();
    assert_eq!(after_b.objects.first().map(|o| o.name.as_str()), Some("c"));
    assert!(after_b.objects.iter().all(|o| o.name.as_str() > "b"));

    // Deletes, of present and missing objects alike.
    tier.delete(&small).await.unwrap();
    tier.delete(&small).await.unwrap();
    assert!(tier.head(&small).await.unwrap().is_none());
    s3::remove_bucket(&client, &bucket).await;
}

/// The multipart uploads of `bucket` still open (neither completed nor aborted).
async fn open_uploads(client: &aws_sdk_s3::Client, bucket: &str) -> usize {
    let listed = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    listed.uploads().len()
}

/// Polls `check` until it holds (the abort of a dropped upload runs in the background).
async fn eventually(mut check: impl AsyncFnMut() -> bool, what: &str) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("not within 5 s: {what}");
}

/// A write-through that starts while its body arrives: parts go to S3 as the file holds them,
/// nothing is visible until `finish`, which S3 accepts only with the body's CRC32C (kept as
/// the object's full-object checksum, read back as its CRC), and an upload dropped or failed
/// leaves neither an object nor an open upload behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_begun_while_its_body_arrives_is_visible_only_when_finished_with_its_crc() {
    use build_cache_proxy::store::backend::{Growing, StreamedPut};
    use std::os::unix::fs::FileExt;

    let endpoint = s3::endpoint();
    let client = s3::client(&endpoint);
    let bucket = s3::fresh_bucket(&client, "streamed").await;
    let tier = tier(&bucket, client.clone());
    let data: Vec<u8> = (0..12 * MIB + 77).map(|i| (i % 241) as u8).collect();
    let crc = crc32c::crc32c(&data);
    let attrs = ObjectAttrs {
        content_type: Some("application/zip".into()),
        user: vec![("origin".into(), "streamed".into())],
        ..Default::default()
    };
    // A growing file: 3 header bytes, then the body as it is "received".
    let begin = |name: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().write_all_at(b"hdr", 0).unwrap();
        let (written, growing) = tokio::sync::watch::channel(0u64);
        let body = Growing {
            key: key(name),
            file: Arc::new(file.reopen().unwrap()),
            offset: 3,
            len: data.len() as u64,
            attrs: attrs.clone(),
            written: growing,
        };
        (file, written, body)
    };
    let receive =
        |file: &tempfile::NamedTempFile, written: &tokio::sync::watch::Sender<u64>, to: usize| {
            let from = *written.borrow() as usize;
            file.as_file()
                .write_all_at(&data[from..to], 3 + from as u64)
                .unwrap();
            written.send_replace(to as u64);
        };

    let (file, written, body) = begin("grown");
    let streamed = tier
        .begin_put(body)
        .await
        .expect("a body of three parts is streamed");
    // The first part goes up while the rest of the body has not arrived.
    receive(&file, &written, 6 * MIB);
    let object_key = "pre/objects/grown".to_string();
    eventually(
        async || {
            let Some(upload) = client
                .list_multipart_uploads()
                .bucket(&bucket)
                .send()
                .await
                .unwrap()
                .uploads()
                .first()
                .and_then(|u| u.upload_id().map(str::to_string))
            else {
                return false;
            };
            let parts = client
                .list_parts()
                .bucket(&bucket)
                .key(&object_key)
                .upload_id(upload)
                .send()
                .await
                .unwrap();
            !parts.parts().is_empty()
        },
        "a part in S3 before the body is complete",
    )
    .await;
    assert!(
        tier.head(&key("grown")).await.unwrap().is_none(),
        "not visible yet"
    );
    receive(&file, &written, data.len());
    drop(written);
    let etag = streamed.finish(crc).await.unwrap();
    assert!(etag.is_some_and(|e| e.ends_with("-3")), "three parts");
    let meta = tier.head(&key("grown")).await.unwrap().unwrap();
    assert_eq!(meta.len, data.len() as u64);
    assert_eq!(
        meta.crc32c,
        Some(crc),
        "S3's full-object CRC32C is read as ours"
    );
    assert_eq!(meta.attrs.content_type.as_deref(), Some("application/zip"));
    assert_eq!(
        meta.attrs.user,
        vec![("origin".to_string(), "streamed".to_string())]
    );
    let (_, got) = body_of(
        tier.get(&key("grown"), &GetOptions::default())
            .await
            .unwrap(),
    )
    .await;
    assert!(got == data);
    if let Fetch::Found(found) = tier
        .get(&key("grown"), &GetOptions::default())
        .await
        .unwrap()
    {
        assert_eq!(
            found.meta.crc32c,
            Some(crc),
            "a whole-object GET reads it too"
        );
    }

    // Finished with another CRC than its bytes': S3 refuses it, the object stays as it was.
    let (file, written, body) = begin("grown");
    let streamed = tier.begin_put(body).await.unwrap();
    receive(&file, &written, data.len());
    drop(written);
    assert!(streamed.finish(crc ^ 1).await.is_err());
    assert_eq!(
        tier.head(&key("grown")).await.unwrap().unwrap().crc32c,
        Some(crc)
    );

    // Dropped halfway (the client's body cut off): no object, and the upload is aborted.
    let (file, written, body) = begin("cut");
    let streamed = tier.begin_put(body).await.unwrap();
    receive(&file, &written, 7 * MIB);
    drop(written);
    drop(streamed);
    eventually(
        async || open_uploads(&client, &bucket).await == 0,
        "every unfinished upload aborted",
    )
    .await;
    assert!(tier.head(&key("cut")).await.unwrap().is_none());

    // One part's worth is not streamed: it goes as one PUT once received.
    let (written_small, growing) = tokio::sync::watch::channel(0u64);
    let small = Growing {
        key: key("small"),
        file: Arc::new(file_with(b"tiny").reopen().unwrap()),
        offset: 3,
        len: 4,
        attrs: ObjectAttrs::default(),
        written: growing,
    };
    assert!(tier.begin_put(small).await.is_none());
    drop(written_small);
    s3::remove_bucket(&client, &bucket).await;
}
