use std::ops::Range;
use std::time::Duration;

use super::*;
use crate::store::backend::fake::FakeBackend;
use crate::store::backend::{ListRequest, PartLayout};
use crate::store::policy::{NamespacePolicy, Policies, WriteMode};
use crate::store::testing::{body, eventually, key, pattern, read_body, Local};
use crate::store::write_back::WriteBackSettings;
use crate::store::{Namespace, ObjectAttrs};

/// The tiers over the fake backend, with a write-back queue (not started) beside them.
pub(super) async fn with_policies(local: &Local, policies: Policies) -> TieredStore<FakeBackend> {
    let read = ReadThrough::new(
        local.backend.clone(),
        local.disk.clone(),
        local.memory.clone(),
        local.metrics.clone(),
    );
    let queue = WriteBack::load(
        WriteBackSettings {
            disk_dir: local.dir.path().join("data"),
            max_entries: 10,
            concurrency: 1,
            max_backoff: Duration::from_millis(100),
            jitter: || 0.5,
        },
        local.disk.clone(),
        local.backend.clone(),
        local.metrics.clone(),
    )
    .await
    .unwrap();
    TieredStore::new(
        local.memory.clone(),
        local.disk.clone(),
        local.metrics.clone(),
    )
    .with_remote(Remote {
        read,
        queue: Some(queue),
    })
    .with_policies(policies)
}

/// Every namespace writing back (Gradle's policy), or through.
pub(super) async fn tiered(local: &Local, write_back: bool) -> TieredStore<FakeBackend> {
    let write = if write_back {
        WriteMode::Back
    } else {
        WriteMode::Through
    };
    with_policies(
        local,
        Policies::new(NamespacePolicy {
            write,
            ..NamespacePolicy::default()
        }),
    )
    .await
}

pub(super) fn queue(store: &TieredStore<FakeBackend>) -> WriteBack<FakeBackend> {
    store.remote().unwrap().queue.clone().unwrap()
}

fn options(range: &str, if_none_match: Option<&str>) -> GetOptions {
    GetOptions {
        range: crate::store::backend::ByteRange::parse(range),
        conditions: crate::store::backend::Conditions {
            if_none_match: if_none_match.map(str::to_string),
            ..Default::default()
        },
    }
}

async fn found(read: Read) -> (Range<u64>, Vec<u8>) {
    match read {
        Read::Found { object, span } => (span, read_body(object).await.unwrap()),
        other => panic!("expected the object, got {other:?}"),
    }
}

/// Ranges and preconditions are answered the same from S3 (through a fill), from disk
/// (from the blocks alone) and from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_preconditions_read_the_same_from_every_tier() {
    let local = Local::new().await;
    let store = tiered(&local, true).await;
    let (small, large) = (key(7), key(8));
    let small_data = pattern(50_000, 7);
    let large_data = pattern(2_000_000, 8);
    local.backend.insert(&small, small_data.clone());
    local.backend.insert(&large, large_data.clone());
    let etag = local.backend.meta(&large).unwrap().etag.unwrap();

    for round in ["s3", "local"] {
        let (span, got) = found(
            store
                .read(&large, &options("bytes=1000-1999", None))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(span, 1000..2000, "{round}");
        assert!(got == large_data[1000..2000], "{round}");
        let (span, got) = found(
            store
                .read(&small, &options("bytes=-10", None))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(span, 49_990..50_000, "{round}");
        assert!(got == small_data[49_990..], "{round}");
        assert!(matches!(
            store
                .read(&large, &options("bytes=5000000-", None))
                .await
                .unwrap(),
            Read::RangeNotSatisfiable(2_000_000)
        ));
        assert!(matches!(
            store
                .read(&large, &options("", Some(&format!("\"{etag}\""))))
                .await
                .unwrap(),
            Read::NotModified(_)
        ));
        assert!(matches!(
            store
                .read(&key(99), &options("bytes=0-0", None))
                .await
                .unwrap(),
            Read::Missing
        ));
        // Wait for both fills to be committed locally before the local round.
        let read = store.remote().unwrap().read.clone();
        eventually("the fills to end", || read.fills_in_flight() == 0).await;
    }
    // The local round read the large entry's range from disk, the small one from memory:
    // the backend was asked for them once each, by the first round's fills (and for the
    // missing key in both rounds: misses are not cached).
    assert_eq!(local.backend.calls("get"), 4, "two fills and two misses");
    assert!(local.memory.held(&small).await.is_some());
}

/// A completed multipart upload is written as the namespace says, and what reaches the
/// backend has the client's part boundaries and so the ETag the client was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_completions_keep_the_clients_parts_on_the_way_to_the_backend() {
    use crate::store::multipart::{Multipart, MultipartSettings};
    for write in [WriteMode::Through, WriteMode::Back] {
        let local = Local::new().await;
        let store = with_policies(
            &local,
            Policies::new(NamespacePolicy {
                write,
                ..NamespacePolicy::default()
            }),
        )
        .await;
        let uploads = Multipart::open(
            local.disk.clone(),
            MultipartSettings {
                min_part_size: 1000,
                ..MultipartSettings::default()
            },
        )
        .await
        .unwrap();
        let k = key(9);
        let id = uploads
            .create(&k, ObjectAttrs::default(), None)
            .await
            .unwrap();
        let (first, second) = (pattern(300_000, 1), pattern(1234, 2));
        let mut listed = Vec::new();
        for (n, data) in [(1, &first), (2, &second)] {
            let etag = uploads
                .put_part(&k, &id, n, data.len() as u64, body(data))
                .await
                .unwrap()
                .etag;
            listed.push((n, etag));
        }
        let meta = store
            .complete_multipart(
                &uploads,
                &k,
                &id,
                &listed,
                &Default::default(),
                &Default::default(),
            )
            .await
            .unwrap();
        assert!(meta.etag.as_deref().unwrap().ends_with("-2"), "{write:?}");
        if write == WriteMode::Back {
            let queue = queue(&store);
            let (_stop_tx, stop) = tokio::sync::watch::channel(false);
            queue.start(stop);
            eventually("the upload", || queue.is_empty()).await;
        }
        assert_eq!(
            local.backend.parts(&k),
            Some(vec![300_000, 1234]),
            "{write:?}"
        );
        assert_eq!(local.backend.meta(&k).unwrap().etag, meta.etag, "{write:?}");
        let whole: Vec<u8> = first.iter().chain(&second).copied().collect();
        assert!(
            read_body(store.get(&k).await.unwrap().unwrap())
                .await
                .unwrap()
                == whole
        );
        assert!(!local.disk.is_pinned(&k), "{write:?}");
    }
}

/// An object's attributes and its ETag (the MD5 of its body) are read back the same from
/// memory and disk, and a write-through upload carries them to the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_metadata_travels_with_the_entry() {
    let local = Local::new().await;
    let store = tiered(&local, false).await;
    let attrs = ObjectAttrs {
        content_type: Some("application/zip".into()),
        user: vec![("cachekey".into(), "build-jar".into())],
        ..ObjectAttrs::default()
    };
    let (small, large) = (key(3), key(4));
    for (k, data) in [(&small, pattern(1000, 3)), (&large, pattern(3_000_000, 4))] {
        let stored = store
            .put(
                k,
                data.len() as u64,
                body(&data),
                &PutOptions::object(attrs.clone()),
            )
            .await
            .unwrap();
        let md5 = crate::store::backend::single_etag(&data);
        assert_eq!(stored.etag.as_deref(), Some(md5.as_str()));
        assert_eq!(stored.attrs, attrs);
        let object = store.get(k).await.unwrap().unwrap();
        assert_eq!(object.meta.etag, stored.etag, "{:?}", object.tier);
        assert_eq!(object.meta.attrs, attrs, "{:?}", object.tier);
        assert_eq!(store.head(k).await.unwrap().unwrap(), object.meta);
        let uploaded = local.backend.meta(k).unwrap();
        assert_eq!(uploaded.etag, stored.etag);
        assert_eq!(uploaded.attrs, attrs);
    }
    assert!(local.memory.held(&small).await.is_some());
    assert!(local.memory.held(&large).await.is_none());
}

/// A fill that started before a client's PUT of the same key commits nothing over it, and
/// the write-back upload sends the client's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_never_replaces_a_newer_write() {
    let local = Local::new().await;
    let store = tiered(&local, true).await;
    let k = key(1);
    let older = pattern(500_000, 1);
    let newer = pattern(500_000, 2);
    local.backend.insert(&k, older.clone());
    local.backend.hold(true);
    let reader = {
        let store = store.clone();
        let k = k.clone();
        tokio::spawn(async move { read_body(store.get(&k).await.unwrap().unwrap()).await })
    };
    let backend = local.backend.clone();
    eventually("the fill to ask the backend", || backend.calls("get") == 1).await;
    store
        .put(&k, newer.len() as u64, body(&newer), &PutOptions::default())
        .await
        .unwrap();
    local.backend.hold(false);
    assert!(
        reader.await.unwrap().unwrap() == older,
        "the fill's reader gets what the backend had when it asked"
    );
    // The reader is released before the fill's commit: wait for the fill's very end.
    let read = store.remote().unwrap().read.clone();
    eventually("the fill to end", || read.fills_in_flight() == 0).await;
    let local_copy = store.get(&k).await.unwrap().unwrap();
    assert!(
        read_body(local_copy).await.unwrap() == newer,
        "the fill replaced the write"
    );

    let queue = queue(&store);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    queue.start(stop);
    eventually("the upload", || queue.is_empty()).await;
    assert!(
        local.backend.object(&k).unwrap() == newer,
        "stale bytes uploaded"
    );
}

/// A fill that started before a delete of the same key does not bring the key back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_never_brings_back_a_deleted_key() {
    let local = Local::new().await;
    // Written back, so that the delete is local at once (queued for the backend, which
    // is held here) while the fill runs.
    let store = tiered(&local, true).await;
    let k = key(1);
    let data = pattern(500_000, 1);
    local.backend.insert(&k, data.clone());
    local.backend.hold(true);
    let reader = {
        let store = store.clone();
        let k = k.clone();
        tokio::spawn(async move { read_body(store.get(&k).await.unwrap().unwrap()).await })
    };
    let backend = local.backend.clone();
    eventually("the fill to ask the backend", || backend.calls("get") == 1).await;
    assert!(!store.delete(&k).await.unwrap(), "nothing local yet");
    local.backend.hold(false);
    assert!(reader.await.unwrap().unwrap() == data);
    let read = store.remote().unwrap().read.clone();
    eventually("the fill to end", || read.fills_in_flight() == 0).await;
    assert!(!local.disk.contains(&k), "the fill brought the key back");
    assert!(local.memory.held(&k).await.is_none());
}

#[tokio::test]
async fn backend_errors_reach_the_caller_and_local_hits_do_not_need_it() {
    let local = Local::new().await;
    let store = tiered(&local, false).await;
    let k = key(2);
    store
        .put(&k, 100, body(&pattern(100, 2)), &PutOptions::default())
        .await
        .unwrap();
    local.backend.fail_next(10);
    // Local hits are served without the backend.
    assert!(store.get(&k).await.unwrap().is_some());
    assert!(store.head(&k).await.unwrap().is_some());
    assert_eq!(local.backend.calls("get") + local.backend.calls("head"), 0);
    // A miss asks the backend, and its failure is an error, not a miss.
    assert!(matches!(
        store.get(&key(3)).await,
        Err(StoreError::Remote(_))
    ));
    assert!(matches!(
        store.head(&key(3)).await,
        Err(StoreError::Remote(_))
    ));
    local.backend.fail_next(0);
    assert!(store.get(&key(3)).await.unwrap().is_none());
    assert!(store.head(&key(3)).await.unwrap().is_none());
}

fn runner() -> Namespace {
    Namespace::new("runner").unwrap()
}

pub(super) fn object(name: &str) -> Key {
    Key::object(runner(), name).unwrap()
}

/// The S3 front's kind of namespace: hits confirmed with the backend.
fn revalidated(max_object_size: Option<u64>) -> Policies {
    revalidated_with(WriteMode::Through, max_object_size)
}

pub(super) fn revalidated_with(write: WriteMode, max_object_size: Option<u64>) -> Policies {
    Policies::default().with(
        runner(),
        NamespacePolicy {
            write,
            freshness: Freshness::Revalidate,
            max_object_size,
            location: None,
        },
    )
}

fn revalidations(local: &Local, result: &str) -> u64 {
    local
        .metrics
        .revalidations
        .with_label_values(&[result])
        .get()
}

/// Reads the whole object and waits for its fill (if any) to end.
pub(super) async fn read_all(store: &TieredStore<FakeBackend>, k: &Key) -> Option<(Tier, Vec<u8>)> {
    let object = store.get(k).await.unwrap()?;
    let tier = object.tier;
    let data = read_body(object).await.unwrap();
    let read = store.remote().unwrap().read.clone();
    eventually("the fill to end", || read.fills_in_flight() == 0).await;
    Some((tier, data))
}

/// A local hit of a revalidated namespace costs one conditional GET: a 304 serves the local
/// bytes, a changed object is served and refilled from that same GET, a deleted one drops
/// the local copy, and a failing backend leaves the local copy served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidated_hits_are_confirmed_with_one_conditional_get() {
    let local = Local::new().await;
    let store = tiered(&local, false).await.with_policies(revalidated(None));
    // One that memory holds, one only disk does.
    let (small, large) = (object("small.zip"), object("cache.zip"));
    local.backend.insert(&small, pattern(1000, 1));
    local.backend.insert(&large, pattern(300_000, 2));
    for k in [&small, &large] {
        assert_eq!(read_all(&store, k).await.unwrap().0, Tier::S3);
    }
    assert!(local.memory.held(&small).await.is_some());
    assert_eq!(local.backend.calls("get"), 2);

    // Unchanged: 304, local bytes.
    for (k, seed, tier) in [(&small, 1, Tier::Memory), (&large, 2, Tier::Disk)] {
        let (served_from, data) = read_all(&store, k).await.unwrap();
        assert_eq!(served_from, tier);
        assert!(data == pattern(data.len(), seed));
    }
    assert_eq!(local.backend.calls("get"), 4, "one conditional GET per hit");
    assert_eq!(
        local.backend.served_spans().len(),
        2,
        "no body but the fills'"
    );
    assert_eq!(revalidations(&local, "not_modified"), 2);

    // Overwritten through another node: the new bytes, from one GET that also refills.
    local.backend.insert(&small, pattern(2000, 3));
    local.backend.insert(&large, pattern(400_000, 4));
    for (k, seed) in [(&small, 3), (&large, 4)] {
        let (tier, data) = read_all(&store, k).await.unwrap();
        assert_eq!(tier, Tier::S3);
        assert!(data == pattern(data.len(), seed));
        let copy = local.disk.head(k).await.unwrap().unwrap();
        assert_eq!(copy.etag, local.backend.meta(k).unwrap().etag, "refilled");
    }
    assert_eq!(local.backend.calls("get"), 6);
    assert_eq!(revalidations(&local, "changed"), 2);
    let (tier, data) = read_all(&store, &small).await.unwrap();
    assert_eq!(tier, Tier::Memory, "the refill replaced the memory copy");
    assert!(data == pattern(2000, 3));

    // Failing backend: the local copy, counted.
    local.backend.fail_next(1);
    let (tier, data) = read_all(&store, &large).await.unwrap();
    assert_eq!(tier, Tier::Disk);
    assert!(data == pattern(400_000, 4));
    assert_eq!(revalidations(&local, "error"), 1);

    // Deleted through another node: a miss, and the local copies are gone.
    for k in [&small, &large] {
        local.backend.delete(k).await.unwrap();
        assert!(store.get(k).await.unwrap().is_none());
        assert!(!local.disk.contains(k));
        assert!(store.local().memory_copy(k).await.is_none());
    }
    assert_eq!(revalidations(&local, "gone"), 2);
}

/// Concurrent reads of one stale key share one revalidation, and a ranged read gets its
/// range of the new object; a client's own preconditions are decided on the confirmed copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revalidations_share_one_request_and_ranges_apply_after_it() {
    let local = Local::new().await;
    let store = tiered(&local, false).await.with_policies(revalidated(None));
    let k = object("cache.zip");
    local.backend.insert(&k, pattern(300_000, 1));
    read_all(&store, &k).await.unwrap();
    let newer = pattern(500_000, 2);
    local.backend.insert(&k, newer.clone());
    let before = local.backend.calls("get");
    local.backend.hold(true);
    let readers: Vec<_> = (0..3u64)
        .map(|i| {
            let store = store.clone();
            let k = k.clone();
            let range = format!("bytes={}-{}", i * 100_000, i * 100_000 + 999);
            tokio::spawn(async move {
                found(store.read(&k, &options(&range, None)).await.unwrap()).await
            })
        })
        .collect();
    let metrics = local.metrics.clone();
    eventually("two reads to join the first one's revalidation", || {
        metrics.single_flight_waiters.get() == 2
    })
    .await;
    local.backend.hold(false);
    for (i, reader) in readers.into_iter().enumerate() {
        let (span, data) = reader.await.unwrap();
        let start = i * 100_000;
        assert_eq!(span, start as u64..start as u64 + 1000);
        assert!(data == newer[start..start + 1000]);
    }
    assert_eq!(
        local.backend.calls("get"),
        before + 1,
        "one GET for three reads"
    );
    let read = store.remote().unwrap().read.clone();
    eventually("the refill to end", || read.fills_in_flight() == 0).await;

    // The client's If-None-Match is decided on the revalidated (now current) copy.
    let etag = local.backend.meta(&k).unwrap().etag.unwrap();
    assert!(matches!(
        store.read(&k, &options("", Some(&etag))).await.unwrap(),
        Read::NotModified(_)
    ));
    let (span, data) = found(store.read(&k, &options("bytes=-10", None)).await.unwrap()).await;
    assert_eq!(span, 499_990..500_000);
    assert!(data == newer[499_990..]);
    assert_eq!(revalidations(&local, "not_modified"), 2);
}

/// A local copy without an ETag (a Gradle-style entry) cannot be confirmed: it is refilled.
/// An entry still waiting for upload is newer than the backend's: served without asking.
/// HEADs are confirmed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_without_etag_are_refilled_and_pending_uploads_are_not_asked_about() {
    let local = Local::new().await;
    let store = tiered(&local, true)
        .await
        .with_policies(revalidated_with(WriteMode::Back, None));
    let k = object("no-etag");
    local
        .disk
        .put(&k, 100, body(&pattern(100, 1)), &PutOptions::default())
        .await
        .unwrap();
    local.backend.insert(&k, pattern(200, 2));
    let (tier, data) = read_all(&store, &k).await.unwrap();
    assert_eq!((tier, data), (Tier::S3, pattern(200, 2)));
    assert_eq!(
        local.disk.head(&k).await.unwrap().unwrap().etag,
        local.backend.meta(&k).unwrap().etag
    );

    // A write-back put: pinned until uploaded (the queue is not started here).
    let pending = object("pending");
    let data = pattern(300, 3);
    store
        .put(
            &pending,
            300,
            body(&data),
            &PutOptions::object(Default::default()),
        )
        .await
        .unwrap();
    let gets = local.backend.calls("get");
    assert_eq!(read_all(&store, &pending).await.unwrap().1, data);
    assert!(store.head(&pending).await.unwrap().is_some());
    assert_eq!(local.backend.calls("get"), gets);
    assert_eq!(local.backend.calls("head"), 0);

    // HEAD: the backend's metadata once changed, a miss once gone.
    local.backend.insert(&k, pattern(300, 4));
    let head = store.head(&k).await.unwrap().unwrap();
    assert_eq!(head.etag, local.backend.meta(&k).unwrap().etag);
    assert_eq!(head.len, 300);
    local.backend.delete(&k).await.unwrap();
    assert!(store.head(&k).await.unwrap().is_none());
    assert!(!local.disk.contains(&k));
}

/// An object above the namespace's largest cached size streams through from the backend
/// and is not cached; a range of it is a ranged GET; a stale local copy of it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_too_large_to_cache_stream_through() {
    let local = Local::new().await;
    let store = tiered(&local, false)
        .await
        .with_policies(revalidated(Some(100_000)));
    let k = object("big.zip");
    let big = pattern(300_000, 1);
    local.backend.insert(&k, big.clone());
    let (tier, data) = read_all(&store, &k).await.unwrap();
    assert_eq!(tier, Tier::S3);
    assert!(data == big);
    assert!(!local.disk.contains(&k), "not cached");
    assert_eq!(
        local.backend.served_spans(),
        vec![0..300_000],
        "the fill's own GET served it"
    );
    let (span, data) = found(
        store
            .read(&k, &options("bytes=1000-1999", None))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(span, 1000..2000);
    assert!(data == big[1000..2000]);
    assert_eq!(
        local.backend.served_spans().last(),
        Some(&(1000..2000)),
        "a ranged GET, not a download of the whole"
    );
    assert!(matches!(
        store
            .read(&k, &options("bytes=400000-", None))
            .await
            .unwrap(),
        Read::RangeNotSatisfiable(300_000)
    ));
    let through = |reason| {
        local
            .metrics
            .stream_through
            .with_label_values(&[reason])
            .get()
    };
    assert_eq!(through("too_large"), 2);

    // A small cached copy that the backend replaced with a too large object.
    let small = object("grew.zip");
    local.backend.insert(&small, pattern(1000, 2));
    read_all(&store, &small).await.unwrap();
    assert!(local.disk.contains(&small));
    local.backend.insert(&small, big.clone());
    assert!(read_all(&store, &small).await.unwrap().1 == big);
    assert!(!local.disk.contains(&small), "the stale copy was dropped");
    assert!(store.local().memory_copy(&small).await.is_none());
}

/// An object the disk tier can never hold is served through, not failed (Gradle's
/// namespace too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_larger_than_the_disk_tier_stream_through() {
    let mut local = Local::new().await;
    local.disk = DiskTier::open(crate::store::disk::DiskSettings {
        dir: local.dir.path().join("small-disk"),
        max_size: 200_000,
        verify_before_serve: 1 << 20,
        min_free: 0,
    })
    .await
    .unwrap();
    let store = tiered(&local, false).await;
    let k = key(9);
    let big = pattern(300_000, 9);
    local.backend.insert(&k, big.clone());
    let (tier, data) = read_all(&store, &k).await.unwrap();
    assert_eq!(tier, Tier::S3);
    assert!(data == big);
    assert!(!local.disk.contains(&k));
    assert_eq!(
        local
            .metrics
            .stream_through
            .with_label_values(&["no_room"])
            .get(),
        1
    );
}

#[tokio::test]
async fn write_through_acknowledges_once_the_backend_has_it() {
    let local = Local::new().await;
    let store = tiered(&local, false).await;
    let k = key(4);
    let data = pattern(300_000, 4);
    store
        .put(&k, data.len() as u64, body(&data), &PutOptions::default())
        .await
        .unwrap();
    assert!(local.backend.object(&k).unwrap() == data);
    assert_eq!(local.disk.usage().pinned_entries, 0);

    local.backend.fail_next(1);
    let other = key(5);
    assert!(store
        .put(&other, 10, body(&[1; 10]), &PutOptions::default())
        .await
        .is_err());
    assert!(local.backend.object(&other).is_none());
    assert!(
        !local.disk.contains(&other),
        "a write the backend refused leaves no copy"
    );
    assert_eq!(local.disk.usage().pinned_entries, 0);
    assert_eq!(local.disk.usage().entries, 1);
}

fn in_ns(namespace: &str, name: &str) -> Key {
    Key::object(crate::store::Namespace::new(namespace).unwrap(), name).unwrap()
}

/// Gradle (the default) writes back; one bucket each writes back, through, or locally.
fn mixed() -> Policies {
    let with = |write| NamespacePolicy {
        write,
        ..NamespacePolicy::default()
    };
    let ns = |n| crate::store::Namespace::new(n).unwrap();
    Policies::new(with(WriteMode::Back))
        .with(ns("back"), with(WriteMode::Back))
        .with(ns("through"), with(WriteMode::Through))
        .with(ns("local"), with(WriteMode::Local))
}

async fn put(store: &TieredStore<FakeBackend>, k: &Key, data: &[u8]) -> ObjectMeta {
    store
        .put(k, data.len() as u64, body(data), &PutOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn each_namespace_writes_as_its_policy_says() {
    let local = Local::new().await;
    let store = with_policies(&local, mixed()).await;
    let queue = queue(&store);
    let (gradle, back, through, own) = (
        key(1),
        in_ns("back", "a"),
        in_ns("through", "a"),
        in_ns("local", "a"),
    );
    for k in [&gradle, &back, &through, &own] {
        put(&store, k, &pattern(1000, 1)).await;
        assert!(local.disk.contains(k), "{k}");
    }
    assert_eq!(store.write_mode(gradle.namespace()), WriteMode::Back);
    assert_eq!(store.write_mode(own.namespace()), WriteMode::Local);
    assert_eq!(queue.pending(&gradle), Some(Op::put(1000)));
    assert_eq!(queue.pending(&back), Some(Op::put(1000)));
    assert_eq!(queue.len(), 2);
    assert_eq!(local.backend.calls("put"), 1, "only write-through uploaded");
    assert!(local.backend.object(&through).is_some());
    assert!(local.backend.object(&own).is_none());
    assert_eq!(local.disk.usage().pinned_entries, 2, "the queued ones");

    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    queue.start(stop);
    let q = queue.clone();
    eventually("the queue to drain", || q.is_empty()).await;
    assert!(local.backend.object(&back).is_some());
    assert!(local.backend.object(&gradle).is_some());
    assert!(local.backend.object(&own).is_none(), "local stays local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_reach_the_backend_as_the_namespace_says() {
    let local = Local::new().await;
    let store = with_policies(&local, mixed()).await;
    let queue = queue(&store);
    let (back, through, own) = (
        in_ns("back", "k"),
        in_ns("through", "k"),
        in_ns("local", "k"),
    );
    for k in [&back, &through, &own] {
        local.backend.insert(k, pattern(10, 7));
        put(&store, k, &pattern(100, 1)).await;
    }
    let queued_uploads = queue.len();

    // Through: the backend first, then the local copies.
    assert!(store.delete(&through).await.unwrap());
    assert!(local.backend.object(&through).is_none());
    assert!(store.get(&through).await.unwrap().is_none());

    // Local: the backend is never asked.
    assert!(store.delete(&own).await.unwrap());
    assert_eq!(local.backend.calls("delete"), 1);
    assert!(local.backend.object(&own).is_some());

    // Back: queued durably; until applied, the key reads as missing without a fill.
    assert!(store.delete(&back).await.unwrap());
    assert_eq!(queue.pending(&back), Some(Op::Delete));
    assert_eq!(
        queue.len(),
        queued_uploads,
        "the delete replaced the upload"
    );
    assert!(local.backend.object(&back).is_some(), "not applied yet");
    let gets = local.backend.calls("get");
    assert!(store.get(&back).await.unwrap().is_none());
    assert!(store.head(&back).await.unwrap().is_none());
    assert!(matches!(
        store.read(&back, &GetOptions::default()).await.unwrap(),
        Read::Missing
    ));
    assert_eq!(local.backend.calls("get"), gets, "no fill of a deleted key");
    assert_eq!(local.disk.usage().pinned_entries, 0);

    // A restart finds the delete in its marker.
    let restarted = with_policies(&local, mixed()).await;
    let queue = self::queue(&restarted);
    assert_eq!(queue.pending(&back), Some(Op::Delete));
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    queue.start(stop);
    let q = queue.clone();
    eventually("the queue to drain", || q.is_empty()).await;
    assert!(local.backend.object(&back).is_none());
    assert_eq!(
        local.backend.calls("put"),
        1,
        "only write-through's upload ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_after_a_delete_brings_the_object_back() {
    let local = Local::new().await;
    let store = with_policies(&local, mixed()).await;
    let k = in_ns("back", "cache.zip");
    put(&store, &k, &pattern(100, 1)).await;
    store.delete(&k).await.unwrap();
    let newer = pattern(200, 2);
    let stored = put(&store, &k, &newer).await;
    assert_eq!(stored.len, 200);
    assert!(
        read_body(store.get(&k).await.unwrap().unwrap())
            .await
            .unwrap()
            == newer
    );
    let queue = queue(&store);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    queue.start(stop);
    let q = queue.clone();
    eventually("the queue to drain", || q.is_empty()).await;
    assert!(local.backend.object(&k).unwrap() == newer);
    assert_eq!(
        local.backend.calls("delete"),
        0,
        "the put superseded the delete"
    );
}

fn list_request(ns: &str, prefix: &str, delimiter: Option<&str>, max_keys: usize) -> ListRequest {
    ListRequest {
        namespace: crate::store::Namespace::new(ns).unwrap(),
        prefix: prefix.into(),
        delimiter: delimiter.map(str::to_string),
        continuation: None,
        start_after: None,
        max_keys,
    }
}

/// Every page of a listing, followed through its continuations: (names, common prefixes,
/// pages).
async fn list_all(
    store: &TieredStore<FakeBackend>,
    request: ListRequest,
) -> (Vec<String>, Vec<String>, usize) {
    let (mut names, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut request = request;
    loop {
        let page = store.list(&request).await.unwrap();
        pages += 1;
        assert!(page.objects.len() + page.common_prefixes.len() <= request.max_keys);
        names.extend(page.objects.iter().map(|o| o.name.clone()));
        prefixes.extend(page.common_prefixes.clone());
        match page.next {
            Some(next) => request.continuation = Some(next),
            None => return (names, prefixes, pages),
        }
        assert!(pages < 100, "the listing does not end");
    }
}

#[tokio::test]
async fn a_listing_shows_queued_writes_and_hides_queued_deletes() {
    let local = Local::new().await;
    let store = with_policies(&local, mixed()).await;
    for name in ["a/1", "a/2", "b", "c/x", "d", "f/1"] {
        local.backend.insert(&in_ns("back", name), pattern(10, 1));
    }
    // Not uploaded yet (the queue is not started): new names, and one overwritten.
    put(&store, &in_ns("back", "b"), &pattern(300, 2)).await;
    let newer = store.head(&in_ns("back", "b")).await.unwrap().unwrap();
    for name in ["a/3", "e", "new/x"] {
        put(&store, &in_ns("back", name), &pattern(20, 3)).await;
    }
    // Not applied yet: the only object under c/, one of two under f/... and d.
    for name in ["c/x", "d"] {
        store.delete(&in_ns("back", name)).await.unwrap();
    }

    let whole = store
        .list(&list_request("back", "", None, 1000))
        .await
        .unwrap();
    let names: Vec<&str> = whole.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["a/1", "a/2", "a/3", "b", "e", "f/1", "new/x"]);
    assert_eq!(whole.next, None);
    let b = &whole.objects[3];
    assert_eq!(b.len, 300, "the local write's size");
    assert_eq!(b.etag, newer.etag);
    assert_eq!(b.modified, newer.modified);

    let rolled = store
        .list(&list_request("back", "", Some("/"), 1000))
        .await
        .unwrap();
    let names: Vec<&str> = rolled.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["b", "e"]);
    assert_eq!(
        rolled.common_prefixes,
        ["a/", "f/", "new/"],
        "c/ holds only a deleted name; new/ only a queued one"
    );

    // Pages of every size give the same lines, each once.
    for max_keys in 1..=4 {
        let (names, prefixes, pages) =
            list_all(&store, list_request("back", "", Some("/"), max_keys)).await;
        assert_eq!(names, ["b", "e"], "{max_keys}");
        assert_eq!(prefixes, ["a/", "f/", "new/"], "{max_keys}");
        assert_eq!(pages, 5_usize.div_ceil(max_keys), "{max_keys}");
        let (names, _, _) = list_all(&store, list_request("back", "a/", None, max_keys)).await;
        assert_eq!(names, ["a/1", "a/2", "a/3"], "{max_keys}");
    }
    let after = store
        .list(&ListRequest {
            start_after: Some("b".into()),
            ..list_request("back", "", Some("/"), 1000)
        })
        .await
        .unwrap();
    assert_eq!(after.objects.len(), 1);
    assert_eq!(after.common_prefixes, ["f/", "new/"]);

    // Once the queue has run, the backend alone lists the same.
    let queue = queue(&store);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    queue.start(stop);
    let q = queue.clone();
    eventually("the queue to drain", || q.is_empty()).await;
    let (names, prefixes, _) = list_all(&store, list_request("back", "", Some("/"), 2)).await;
    assert_eq!(names, ["b", "e"]);
    assert_eq!(prefixes, ["a/", "f/", "new/"]);
}

#[tokio::test]
async fn a_local_namespace_lists_its_disk_entries() {
    let local = Local::new().await;
    let store = with_policies(&local, mixed()).await;
    let mut stored = Vec::new();
    for name in ["x/1", "x/2", "y", "z/deep/1", "z/deep/2", "zz"] {
        stored.push(put(&store, &in_ns("local", name), name.as_bytes()).await);
    }
    // Another namespace's entries are not listed.
    put(&store, &in_ns("back", "y"), b"other").await;
    store.delete(&in_ns("local", "zz")).await.unwrap();

    let whole = store
        .list(&list_request("local", "", None, 100))
        .await
        .unwrap();
    let names: Vec<&str> = whole.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["x/1", "x/2", "y", "z/deep/1", "z/deep/2"]);
    assert_eq!(whole.objects[2].len, 1);
    assert_eq!(whole.objects[2].etag, stored[2].etag);
    assert_eq!(local.backend.calls("list"), 0);

    for max_keys in 1..=3 {
        let (names, prefixes, _) =
            list_all(&store, list_request("local", "", Some("/"), max_keys)).await;
        assert_eq!(names, ["y"], "{max_keys}");
        assert_eq!(prefixes, ["x/", "z/"], "{max_keys}");
        let (_, prefixes, _) =
            list_all(&store, list_request("local", "z/", Some("/"), max_keys)).await;
        assert_eq!(prefixes, ["z/deep/"], "{max_keys}");
    }
}

/// An assembled entry is uploaded with its client's part boundaries, through or back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_entry_keeps_its_part_layout() {
    let local = Local::new().await;
    let store = with_policies(&local, mixed()).await;
    let data = pattern(3000, 5);
    let parts = PartLayout::Sizes(vec![1500, 1000, 500]);
    for ns in ["through", "back", "local"] {
        let k = in_ns(ns, "assembled");
        let spool = local
            .disk
            .receive(&k, 3000, body(&data), &PutOptions::default())
            .await
            .unwrap();
        let stored = store.put_spooled(&k, spool, parts.clone()).await.unwrap();
        assert_eq!(stored.len, 3000);
    }
    assert_eq!(
        local.backend.parts(&in_ns("through", "assembled")).unwrap(),
        vec![1500, 1000, 500]
    );
    let queue = queue(&store);
    let back = in_ns("back", "assembled");
    assert_eq!(
        queue.pending(&back),
        Some(Op::Put {
            bytes: 3000,
            parts: parts.clone()
        })
    );
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    queue.start(stop);
    let q = queue.clone();
    eventually("the queue to drain", || q.is_empty()).await;
    assert_eq!(local.backend.parts(&back).unwrap(), vec![1500, 1000, 500]);
    assert!(local
        .backend
        .meta(&back)
        .unwrap()
        .etag
        .unwrap()
        .ends_with("-3"));
    assert!(local.backend.object(&in_ns("local", "assembled")).is_none());
}
