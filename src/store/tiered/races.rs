//! Forced interleavings of the operations on one key (the transitions in `docs/coherence.md`):
//! each test stops one operation at an await point (a held backend call, a stalled S3 body),
//! runs another to its acknowledgement, lets the first go on, and then checks that the node
//! serves what the last acknowledged operation left, from every tier, twice (the second read
//! is the one a late memory copy would answer).

use std::time::Duration;

use super::tests::{object, queue, read_all, revalidated_with, tiered, with_policies};
use super::TieredStore;
use crate::store::backend::fake::FakeBackend;
use crate::store::policy::WriteMode;
use crate::store::testing::{body, eventually, key, pattern, Local};
use crate::store::{Key, PutOptions, Store};

/// The store and a key of a namespace that writes `write` and is immutable or revalidated.
async fn store_for(
    local: &Local,
    write: WriteMode,
    revalidate: bool,
) -> (TieredStore<FakeBackend>, Key) {
    if revalidate {
        let store = with_policies(local, revalidated_with(write, None)).await;
        (store, object("race.zip"))
    } else {
        (tiered(local, write == WriteMode::Back).await, key(7))
    }
}

async fn put(store: &TieredStore<FakeBackend>, k: &Key, data: &[u8]) {
    store
        .put(
            k,
            data.len() as u64,
            body(data),
            &PutOptions::object(Default::default()),
        )
        .await
        .unwrap();
}

/// What the node serves for `k` now, read twice.
async fn served(store: &TieredStore<FakeBackend>, k: &Key) -> [Option<Vec<u8>>; 2] {
    let first = read_all(store, k).await.map(|(_, data)| data);
    let second = read_all(store, k).await.map(|(_, data)| data);
    [first, second]
}

/// A fill from S3 (another node's v1) stalled half way while a client of this node writes v2
/// or deletes the key: the fill's reader gets v1 (current when it asked), and after the
/// acknowledgement the node serves v2 or nothing, in every write mode and freshness, for a
/// small object (memory) and a large one (disk only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_stalled_across_a_write_or_a_delete_never_comes_back() {
    for write in [WriteMode::Through, WriteMode::Back] {
        for revalidate in [false, true] {
            for len in [40_000, 300_000] {
                for delete in [false, true] {
                    let case =
                        format!("{write:?} revalidate={revalidate} len={len} delete={delete}");
                    let local = Local::new().await;
                    let (store, k) = store_for(&local, write, revalidate).await;
                    let (v1, v2) = (pattern(len, 1), pattern(len, 2));
                    local.backend.insert(&k, v1.clone());
                    local.backend.stall_next_body(0);
                    let reader = {
                        let (store, k) = (store.clone(), k.clone());
                        tokio::spawn(async move { read_all(&store, &k).await })
                    };
                    let read = store.remote().unwrap().read.clone();
                    eventually("the fill to start", || read.fills_in_flight() == 1).await;
                    if delete {
                        store.delete(&k).await.unwrap();
                    } else {
                        put(&store, &k, &v2).await;
                    }
                    local.backend.release_stalls();
                    let (_, got) = reader
                        .await
                        .unwrap()
                        .expect("the reader asked before the change");
                    assert!(got == v1, "{case}: the fill's reader got S3's bytes");
                    let expected = (!delete).then(|| v2.clone());
                    assert_eq!(
                        served(&store, &k).await,
                        [expected.clone(), expected],
                        "{case}"
                    );
                }
            }
        }
    }
}

/// Two write-through PUTs of one key at once: the first one's upload is held at the backend
/// while the second has its body sealed. S3 and the node end with the same, second body (the
/// key's lock orders them), and each upload sent only its own bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_write_through_puts_leave_one_body_everywhere() {
    for len in [40_000, 300_000] {
        let local = Local::new().await;
        let (store, k) = store_for(&local, WriteMode::Through, false).await;
        let (a, b) = (pattern(len, 3), pattern(len, 4));
        local.backend.hold(true);
        let first = {
            let (store, k, a) = (store.clone(), k.clone(), a.clone());
            tokio::spawn(async move { put(&store, &k, &a).await })
        };
        let backend = local.backend.clone();
        eventually("the first upload to reach S3", || backend.calls("put") == 1).await;
        let second = {
            let (store, k, b) = (store.clone(), k.clone(), b.clone());
            tokio::spawn(async move { put(&store, &k, &b).await })
        };
        // The second PUT is sealed and waits for the key; give it every chance to overtake.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            local.backend.calls("put"),
            1,
            "the second upload waits for the first"
        );
        local.backend.hold(false);
        first.await.unwrap();
        second.await.unwrap();
        assert!(local.backend.object(&k).unwrap() == b);
        assert_eq!(
            local.backend.meta(&k).unwrap().crc32c,
            Some(crc32c::crc32c(&b)),
            "S3's metadata is its body's"
        );
        assert_eq!(served(&store, &k).await, [Some(b.clone()), Some(b)]);
    }
}

/// A write-through PUT that the backend refuses while an older version is on the node: the
/// older version stays served (S3 still has it too), and the refused body is nowhere.
#[tokio::test]
async fn a_refused_write_through_leaves_the_older_version() {
    let local = Local::new().await;
    let (store, k) = store_for(&local, WriteMode::Through, false).await;
    let (v1, v2) = (pattern(30_000, 5), pattern(30_000, 6));
    put(&store, &k, &v1).await;
    local.backend.fail_next(1);
    let refused = store
        .put(&k, v2.len() as u64, body(&v2), &PutOptions::default())
        .await;
    assert!(refused.is_err());
    assert!(local.backend.object(&k).unwrap() == v1);
    assert_eq!(served(&store, &k).await, [Some(v1.clone()), Some(v1)]);
}

/// The write-back queue uploads v1 (held at the backend) while v2 is committed, pinned, and
/// not queued yet: the end of v1's upload must not unpin v2, which S3 does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_back_upload_unpins_only_the_version_it_uploaded() {
    let local = Local::new().await;
    let (store, k) = store_for(&local, WriteMode::Back, false).await;
    let (v1, v2) = (pattern(30_000, 7), pattern(30_000, 8));
    put(&store, &k, &v1).await;
    local.backend.hold(true);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let queue = queue(&store);
    queue.start(stop);
    let backend = local.backend.clone();
    eventually("v1's upload to reach S3", || backend.calls("put") == 1).await;
    // v2 committed as a write-back commits it, before its marker is written.
    local
        .disk
        .put_entry(&k, v2.len() as u64, body(&v2), &PutOptions::default(), true)
        .await
        .unwrap();
    local.backend.hold(false);
    eventually("v1's upload to end", || queue.is_empty()).await;
    assert!(
        local.backend.object(&k).unwrap() == v1,
        "the upload read v1's own file"
    );
    assert!(
        local.disk.is_pinned(&k),
        "v2 has not reached S3: it stays pinned"
    );
    assert_eq!(served(&store, &k).await, [Some(v2.clone()), Some(v2)]);
}

/// Two conditional creates (`If-None-Match: *`) of one key through this node, the first held
/// at S3 in its check while the second arrives: the first is stored, the second refused (its
/// check waits for the first's commit), and S3 (once the queue ran) and the node hold the
/// first's body, in both write modes that reach S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_creates_of_one_key_store_one() {
    use crate::store::backend::Conditions;
    use crate::store::StoreError;
    for write in [WriteMode::Through, WriteMode::Back] {
        let local = Local::new().await;
        let (store, k) = store_for(&local, write, false).await;
        let create = |data: Vec<u8>| {
            let (store, k) = (store.clone(), k.clone());
            let options = PutOptions {
                conditions: Conditions {
                    if_none_match: Some("*".into()),
                    ..Conditions::default()
                },
                ..PutOptions::object(Default::default())
            };
            tokio::spawn(async move {
                store
                    .put(&k, data.len() as u64, body(&data), &options)
                    .await
            })
        };
        let (a, b) = (pattern(20_000, 1), pattern(20_000, 2));
        local.backend.hold(true);
        let first = create(a.clone());
        let backend = local.backend.clone();
        eventually("the first check to reach S3", || backend.calls("head") == 1).await;
        let second = create(b);
        // The second is received and sealed, and waits for the key.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            local.backend.calls("head"),
            1,
            "{write:?}: the second waits"
        );
        local.backend.hold(false);
        assert!(first.await.unwrap().is_ok(), "{write:?}");
        assert!(
            matches!(second.await.unwrap(), Err(StoreError::PreconditionFailed)),
            "{write:?}"
        );
        if write == WriteMode::Back {
            let (_stop_tx, stop) = tokio::sync::watch::channel(false);
            let queue = queue(&store);
            queue.start(stop);
            eventually("the upload", || queue.is_empty()).await;
        }
        assert!(local.backend.object(&k).unwrap() == a, "{write:?}");
        assert_eq!(served(&store, &k).await, [Some(a.clone()), Some(a)]);
    }
}
