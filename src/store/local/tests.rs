//! The memory tier's one rule, at the interleavings that used to break it: a memory copy made
//! from version v of an entry is never served once the entry has moved past v, however late
//! the copy arrives. Each test runs the steps of a fill or a promotion by hand, with the
//! competing write or delete between two of them.

use super::*;
use crate::store::disk::Commit;
use crate::store::testing::{body, key, pattern, read_body, Local};
use crate::store::{PutOptions, Store};

fn tiers(local: &Local) -> LocalTiers {
    LocalTiers::new(
        local.memory.clone(),
        local.disk.clone(),
        local.metrics.clone(),
    )
}

async fn commit(tiers: &LocalTiers, k: &Key, data: &[u8], mode: Commit) -> Option<Version> {
    let spool = tiers
        .disk()
        .receive(k, data.len() as u64, body(data), &PutOptions::default())
        .await
        .unwrap();
    tiers
        .commit(spool.seal().await.unwrap(), mode)
        .await
        .unwrap()
        .1
}

async fn served(tiers: &LocalTiers, k: &Key) -> Option<(Tier, Vec<u8>)> {
    let object = tiers.get(k).await.unwrap()?;
    let tier = object.tier;
    Some((tier, read_body(object).await.unwrap()))
}

/// A fill commits v1, a client deletes the key, and only then does the fill put its memory
/// copy in place (it awaited between the two): the copy is never served.
#[tokio::test]
async fn a_memory_copy_that_arrives_after_a_delete_is_never_served() {
    let local = Local::new().await;
    let tiers = tiers(&local);
    let k = key(1);
    let v1 = pattern(20_000, 1);
    let ticket = tiers.disk().begin_fill();
    let version = commit(&tiers, &k, &v1, Commit::Fill(ticket.order()))
        .await
        .unwrap();
    tiers.delete(&k).await.unwrap();
    let meta = ObjectMeta::new(v1.len() as u64, std::time::SystemTime::now(), None);
    // What the fill does after its commit: `keep_in_memory` refuses a moved-on version, so
    // put the copy straight into the tier, as the oldest code did.
    tiers
        .memory
        .insert(
            k.clone(),
            MemoryEntry {
                data: Bytes::from(v1.clone()),
                meta: meta.clone(),
                version,
            },
        )
        .await;
    assert!(tiers.memory_copy(&k).await.is_none());
    assert!(served(&tiers, &k).await.is_none());
    assert!(tiers.meta(&k).await.unwrap().is_none());
    // And the same late copy after a newer write: the newer one is served.
    let v2 = pattern(20_000, 2);
    commit(&tiers, &k, &v2, Commit::Cached).await.unwrap();
    tiers
        .keep_in_memory(&k, Bytes::from(v1), meta, version)
        .await;
    assert_eq!(served(&tiers, &k).await, Some((Tier::Memory, v2)));
}

/// A disk hit read at v1 is promoted to memory after a client wrote v2: v2 is served.
#[tokio::test]
async fn a_promotion_that_loses_to_a_write_is_never_served() {
    let local = Local::new().await;
    let tiers = tiers(&local);
    let k = key(2);
    let (v1, v2) = (pattern(20_000, 3), pattern(20_000, 4));
    commit(&tiers, &k, &v1, Commit::Cached).await.unwrap();
    tiers.drop_memory_copy(&k).await;
    // The promotion's first half: the version, then the file.
    let (version, object) = tiers.disk().get_versioned(&k).await.unwrap().unwrap();
    let meta = object.meta.clone();
    let data = read_body(object).await.unwrap();
    commit(&tiers, &k, &v2, Commit::Cached).await.unwrap();
    tiers.drop_memory_copy(&k).await;
    // Its second half, late: the copy is of a version the entry has left.
    tiers
        .memory
        .insert(
            k.clone(),
            MemoryEntry {
                data: Bytes::from(data),
                meta,
                version,
            },
        )
        .await;
    assert_eq!(served(&tiers, &k).await, Some((Tier::Disk, v2.clone())));
    assert_eq!(served(&tiers, &k).await, Some((Tier::Memory, v2)));
}

/// A memory hit counts as a read of the disk entry, so the entries served from memory are not
/// the first evicted on disk (which would take their memory copies with them).
#[tokio::test]
async fn memory_hits_keep_their_disk_entry_recent() {
    let local = Local::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Room for two entries of 10 000 bytes (and their headers and tables), not three.
    let disk = crate::store::disk::DiskTier::open(crate::store::disk::DiskSettings {
        dir: dir.path().to_path_buf(),
        max_size: 25_000,
        verify_before_serve: 1 << 20,
        min_free: 0,
    })
    .await
    .unwrap();
    let tiers = LocalTiers::new(local.memory.clone(), disk, local.metrics.clone());
    let (hot, cold, third) = (key(3), key(4), key(5));
    commit(&tiers, &hot, &pattern(10_000, 5), Commit::Cached)
        .await
        .unwrap();
    commit(&tiers, &cold, &pattern(10_000, 6), Commit::Cached)
        .await
        .unwrap();
    assert_eq!(served(&tiers, &hot).await.unwrap().0, Tier::Memory);
    commit(&tiers, &third, &pattern(10_000, 7), Commit::Cached)
        .await
        .unwrap();
    assert!(
        tiers.disk().contains(&hot),
        "the entry just served from memory was evicted"
    );
    assert!(!tiers.disk().contains(&cold));
    assert_eq!(served(&tiers, &hot).await.unwrap().0, Tier::Memory);
    // And an entry gone from disk takes its memory copy's right to be served with it.
    assert!(Store::delete(tiers.disk(), &hot).await.unwrap());
    assert!(served(&tiers, &hot).await.is_none());
}

/// Pins belong to versions: unpinning an older version leaves a newer one pinned.
#[tokio::test]
async fn an_unpin_of_an_older_version_leaves_the_newer_one_pinned() {
    let local = Local::new().await;
    let tiers = tiers(&local);
    let k = key(5);
    let v1 = commit(&tiers, &k, &pattern(1000, 7), Commit::Pinned)
        .await
        .unwrap();
    let v2 = commit(&tiers, &k, &pattern(1000, 8), Commit::Pinned)
        .await
        .unwrap();
    assert!(v2 > v1);
    assert!(!tiers.disk().unpin(&k, v1));
    assert!(tiers.disk().is_pinned(&k));
    assert!(tiers.disk().unpin(&k, v2));
    assert!(!tiers.disk().is_pinned(&k));
}
