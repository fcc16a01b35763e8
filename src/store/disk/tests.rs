use std::io::{Seek, SeekFrom, Write};

use bytes::Bytes;
use futures_util::{stream, StreamExt};

use super::*;
use crate::store::{Key, Store};

fn settings(dir: &Path, max_size: u64) -> DiskSettings {
    DiskSettings {
        dir: dir.to_path_buf(),
        max_size,
        verify_before_serve: 1024 * 1024,
        min_free: 0,
    }
}

fn key(n: u32) -> Key {
    Key::gradle(&format!("{n:032x}")).unwrap()
}

fn body(data: &[u8]) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(7000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(stream::iter(chunks))
}

async fn read_all(disk: &DiskTier, key: &Key) -> Option<io::Result<Vec<u8>>> {
    let object = disk.get(key).await.unwrap()?;
    let mut out = Vec::new();
    let mut body = object.body;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(out))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Flips one byte of a stored entry's body on disk.
fn corrupt(disk: &DiskTier, key: &Key, at: u64) {
    let path = disk.path_for(key);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let header = EntryHeader::read_from(&mut file).unwrap();
    file.seek(SeekFrom::Start(header.header_len + at)).unwrap();
    file.write_all(&[0xff ^ pattern(at as usize + 1, 1)[at as usize]])
        .unwrap();
}

#[tokio::test]
async fn put_get_head_delete() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    let data = pattern(100_000, 1);
    disk.put(
        &key(1),
        data.len() as u64,
        body(&data),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(read_all(&disk, &key(1)).await.unwrap().unwrap(), data);
    assert_eq!(disk.head(&key(1)).await.unwrap().unwrap().len, 100_000);
    assert!(disk.get(&key(2)).await.unwrap().is_none());
    assert!(disk.delete(&key(1)).await.unwrap());
    assert!(disk.get(&key(1)).await.unwrap().is_none());
    assert_eq!(disk.usage().bytes, 0);
}

#[tokio::test]
async fn short_long_and_failed_bodies_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    let data = pattern(50_000, 1);
    let short = disk
        .put(&key(1), 60_000, body(&data), &PutOptions::default())
        .await;
    assert!(
        matches!(short, Err(StoreError::LengthMismatch { .. })),
        "{short:?}"
    );
    let long = disk
        .put(&key(1), 40_000, body(&data), &PutOptions::default())
        .await;
    assert!(
        matches!(long, Err(StoreError::LengthMismatch { .. })),
        "{long:?}"
    );
    let failing: ByteStream = Box::pin(stream::iter(vec![
        Ok(Bytes::from(data.clone())),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]));
    let failed = disk
        .put(&key(1), 100_000, failing, &PutOptions::default())
        .await;
    assert!(
        matches!(failed, Err(StoreError::BodyAborted(_))),
        "{failed:?}"
    );
    // A writer dropped half way (the request future cancelled) is an aborted write too.
    let pending: ByteStream =
        Box::pin(stream::iter(vec![Ok(Bytes::from(data.clone()))]).chain(stream::pending()));
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        disk.put(&key(1), 100_000, pending, &PutOptions::default()),
    )
    .await;
    assert!(cancelled.is_err());

    assert!(disk.get(&key(1)).await.unwrap().is_none());
    assert_eq!(disk.usage(), DiskUsage::default());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0,
        "temp files left behind"
    );
}

#[tokio::test]
async fn eviction_keeps_the_bound_and_spares_pinned_entries() {
    let dir = tempfile::tempdir().unwrap();
    let max = 1 << 20;
    let disk = DiskTier::open(settings(dir.path(), max)).await.unwrap();
    let data = pattern(200_000, 1);
    disk.put_entry(
        &key(0),
        data.len() as u64,
        body(&data),
        &PutOptions::default(),
        true,
    )
    .await
    .unwrap();
    for n in 1..20 {
        disk.put(
            &key(n),
            data.len() as u64,
            body(&data),
            &PutOptions::default(),
        )
        .await
        .unwrap();
        // Reading key 1 keeps it recently used.
        assert!(read_all(&disk, &key(1)).await.is_some());
        assert!(disk.usage().bytes <= max);
    }
    assert!(disk.usage().evictions > 0);
    assert!(disk.contains(&key(0)), "a pinned entry was evicted");
    assert!(
        disk.contains(&key(1)),
        "the recently read entry was evicted"
    );
    assert!(
        !disk.contains(&key(2)),
        "the least recently used entry survived"
    );
    let on_disk: u64 = walk_files(&dir.path().join("gradle"))
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, disk.usage().bytes);
    // With everything else pinned, a write that can't fit is refused, not forced in.
    let huge = pattern(2 << 20, 1);
    assert!(matches!(
        disk.put(
            &key(99),
            huge.len() as u64,
            body(&huge),
            &PutOptions::default()
        )
        .await,
        Err(StoreError::Full { .. })
    ));
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn restart_rebuilds_the_index_and_drops_junk() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(30_000, 1);
    {
        let disk = DiskTier::open(settings(dir.path(), 10 << 20))
            .await
            .unwrap();
        for n in 0..5 {
            disk.put(
                &key(n),
                data.len() as u64,
                body(&data),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        }
    }
    // A leftover temp file and a truncated entry, as after a crash; and files that are not
    // ours in shapes we don't make, which must be left alone.
    let leftover = dir
        .path()
        .join("tmp")
        .join("0123456789abcdef0123456789abcdef");
    std::fs::write(&leftover, b"half").unwrap();
    let foreign = [
        dir.path().join("tmp").join("keep.txt"),
        dir.path().join("gradle").join("notes.md"),
        dir.path().join("gradle").join("ab").join("Main.java"),
    ];
    std::fs::create_dir_all(dir.path().join("gradle").join("ab")).unwrap();
    for file in &foreign {
        std::fs::write(file, b"not the cache's").unwrap();
    }
    let victim = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap()
        .path_for(&key(4));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap();
    file.set_len(1000).unwrap();

    let disk = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    assert_eq!(disk.usage().entries, 4);
    for n in 0..4 {
        assert_eq!(read_all(&disk, &key(n)).await.unwrap().unwrap(), data);
    }
    assert!(disk.get(&key(4)).await.unwrap().is_none());
    assert!(!victim.exists());
    assert!(!leftover.exists());
    for file in &foreign {
        assert!(file.exists(), "{} was removed", file.display());
    }
}

#[tokio::test]
async fn a_directory_that_is_not_ours_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("project/src")).unwrap();
    std::fs::write(dir.path().join("project/src/Main.java"), b"class Main {}").unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp/keep.txt"), b"keep").unwrap();
    let refused = DiskTier::open(settings(dir.path(), 10 << 20)).await;
    let message = refused.err().expect("refused").to_string();
    assert!(message.contains(MARKER), "{message}");
    assert!(dir.path().join("project/src/Main.java").exists());
    assert!(dir.path().join("tmp/keep.txt").exists());
    assert!(!dir.path().join(MARKER).exists());
}

#[tokio::test]
async fn an_empty_directory_or_a_fresh_volume_becomes_ours() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lost+found")).unwrap();
    DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    assert!(dir.path().join(MARKER).exists());
    // And it opens again with its entries.
    DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_write_that_cannot_fit_is_refused_before_anything_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 4 << 20)).await.unwrap();
    let data = pattern(500_000, 3);
    for n in 0..6 {
        disk.put(
            &key(n),
            data.len() as u64,
            body(&data),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    }
    // A write in progress that declared 2 MiB and sent nothing yet: admitted, evicts nothing.
    let declared = disk.spool(&key(100), 2 << 20).await.unwrap();
    assert_eq!(disk.usage().evictions, 0);
    // Another 2 MiB can never fit beside it (headers count): refused, nothing evicted.
    let refused = disk.spool(&key(101), 2 << 20).await;
    assert!(matches!(refused, Err(StoreError::Full { .. })));
    assert_eq!(disk.usage().evictions, 0);
    assert_eq!(disk.usage().entries, 6);
    drop(declared);
    // With the promise gone, the same write is admitted and evicts only as its bytes arrive.
    let mut spool = disk.spool(&key(101), 2 << 20).await.unwrap();
    spool.write(Bytes::from(vec![7u8; 100_000])).await.unwrap();
    assert!(disk.usage().evictions <= 3, "{:?}", disk.usage());
    assert!(disk.usage().entries >= 3);
}

#[tokio::test]
async fn corrupt_small_entry_is_a_miss_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    let data = pattern(100_000, 1);
    disk.put(
        &key(1),
        data.len() as u64,
        body(&data),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    corrupt(&disk, &key(1), 5000);
    assert!(disk.get(&key(1)).await.unwrap().is_none());
    assert!(!disk.path_for(&key(1)).exists());
    assert!(!disk.contains(&key(1)));
}

#[tokio::test]
async fn corrupt_large_entry_is_cut_off_before_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 20 << 20))
        .await
        .unwrap();
    let data = pattern(3 << 20, 1); // above verify_before_serve: verified while streaming
    disk.put(
        &key(1),
        data.len() as u64,
        body(&data),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    corrupt(&disk, &key(1), 2 << 20);
    let object = disk.get(&key(1)).await.unwrap().unwrap();
    let mut received = 0usize;
    let mut failed = false;
    let mut stream = object.body;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => received += c.len(),
            Err(_) => failed = true,
        }
    }
    assert!(failed, "a corrupt body must end in an error");
    assert!(
        received < data.len(),
        "a corrupt body must never arrive complete"
    );
    // The removal runs on a blocking thread; then the entry is gone.
    for _ in 0..100 {
        if !disk.contains(&key(1)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(disk.get(&key(1)).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_readers_never_mix_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 64 << 20))
        .await
        .unwrap();
    let bodies: Vec<Vec<u8>> = (0..4).map(|seed| pattern(300_000, seed)).collect();
    let mut tasks = Vec::new();
    for round in 0..8 {
        let writer = disk.clone();
        let data = bodies[round % 4].clone();
        tasks.push(tokio::spawn(async move {
            writer
                .put(
                    &key(7),
                    data.len() as u64,
                    body(&data),
                    &PutOptions::default(),
                )
                .await
                .unwrap();
        }));
        let reader = disk.clone();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            if let Some(read) = read_all(&reader, &key(7)).await {
                let read = read.unwrap();
                assert!(bodies.contains(&read), "a mixed or partial body was served");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(disk.usage().entries, 1);
}

#[tokio::test]
async fn each_read_path_serves_good_bodies_and_refuses_corrupt_ones() {
    // Inline (read whole), verified before the first byte, and verified while streaming.
    for (len, verify_before_serve) in [(200_000, 8 << 20), (3 << 20, 8 << 20), (3 << 20, 1 << 20)] {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::open(DiskSettings {
            verify_before_serve,
            ..settings(dir.path(), 64 << 20)
        })
        .await
        .unwrap();
        let data = pattern(len, 1);
        disk.put(&key(1), len as u64, body(&data), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(read_all(&disk, &key(1)).await.unwrap().unwrap(), data);
        corrupt(&disk, &key(1), len as u64 / 2);
        match read_all(&disk, &key(1)).await {
            None => {}
            Some(Err(_)) => {}
            Some(Ok(read)) => panic!(
                "{len} bytes: a corrupt body of {} bytes was served",
                read.len()
            ),
        }
    }
}

#[tokio::test]
async fn a_fill_does_not_replace_a_write_that_committed_during_it() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    let older = pattern(100_000, 1);
    let newer = pattern(100_000, 2);
    let ticket = disk.begin_fill_if_absent(&key(1)).unwrap();
    let mut fill = disk.spool(&key(1), older.len() as u64).await.unwrap();
    fill.write(Bytes::from(older.clone())).await.unwrap();
    disk.put(
        &key(1),
        newer.len() as u64,
        body(&newer),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let (_, committed) = fill.finish(Commit::Fill(ticket.order())).await.unwrap();
    assert!(committed.is_none());
    assert_eq!(read_all(&disk, &key(1)).await.unwrap().unwrap(), newer);
    assert_eq!(disk.usage().entries, 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert!(
        disk.begin_fill_if_absent(&key(1)).is_none(),
        "a key with an entry is read, not filled"
    );
}

/// Spools `data` as a fill of `k` that began with `ticket`; returns whether it committed.
async fn fill(disk: &DiskTier, k: &Key, data: &[u8], ticket: &FillTicket) -> bool {
    let mut spool = disk.spool(k, data.len() as u64).await.unwrap();
    spool.write(Bytes::copy_from_slice(data)).await.unwrap();
    spool
        .finish(Commit::Fill(ticket.order()))
        .await
        .unwrap()
        .1
        .is_some()
}

#[tokio::test]
async fn a_fill_does_not_bring_back_a_key_deleted_during_it() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    let data = pattern(100_000, 1);
    // A key that had no entry, deleted (from the backend, through this node) during its fill.
    let ticket = disk.begin_fill_if_absent(&key(1)).unwrap();
    assert!(!disk.delete(&key(1)).await.unwrap());
    assert!(!fill(&disk, &key(1), &data, &ticket).await);
    assert!(!disk.contains(&key(1)));
    // A stale entry being refilled, deleted during the refill.
    disk.put(&key(2), 10, body(&[1; 10]), &PutOptions::default())
        .await
        .unwrap();
    let refill = disk.begin_fill();
    assert!(disk.delete(&key(2)).await.unwrap());
    assert!(!fill(&disk, &key(2), &data, &refill).await);
    assert!(!disk.contains(&key(2)));
    // Deletes before a fill began do not stop it.
    let later = disk.begin_fill_if_absent(&key(1)).unwrap();
    assert!(fill(&disk, &key(1), &data, &later).await);
    assert_eq!(read_all(&disk, &key(1)).await.unwrap().unwrap(), data);
    // The tombstones last as long as the fills that could ask about them (key 1's made way
    // for its entry).
    assert_eq!(disk.lock().tombstones(), 1);
    drop((ticket, refill, later));
    assert_eq!(disk.lock().tombstones(), 0);
    disk.delete(&key(1)).await.unwrap();
    assert_eq!(disk.lock().tombstones(), 0, "no fill running: nothing kept");
}

#[tokio::test]
async fn a_refill_replaces_the_stale_entry_it_started_from() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    let (stale, fresh) = (pattern(50_000, 1), pattern(70_000, 2));
    disk.put(
        &key(1),
        stale.len() as u64,
        body(&stale),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let ticket = disk.begin_fill();
    assert!(fill(&disk, &key(1), &fresh, &ticket).await);
    assert_eq!(read_all(&disk, &key(1)).await.unwrap().unwrap(), fresh);
    assert_eq!(disk.usage().entries, 1);

    // An entry still waiting for upload is newer than the backend's copy: never refilled.
    disk.put_entry(&key(2), 10, body(&[2; 10]), &PutOptions::default(), true)
        .await
        .unwrap();
    let ticket = disk.begin_fill();
    assert!(!fill(&disk, &key(2), &fresh, &ticket).await);
    assert_eq!(
        read_all(&disk, &key(2)).await.unwrap().unwrap(),
        vec![2; 10]
    );
}

#[tokio::test]
async fn an_evicted_write_still_stops_an_older_fill() {
    let dir = tempfile::tempdir().unwrap();
    // Room for one 600 kB entry at a time.
    let disk = DiskTier::open(settings(dir.path(), 1_000_000))
        .await
        .unwrap();
    let ticket = disk.begin_fill_if_absent(&key(1)).unwrap();
    let big = pattern(600_000, 1);
    disk.put(
        &key(1),
        big.len() as u64,
        body(&big),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    disk.put(
        &key(2),
        big.len() as u64,
        body(&big),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    assert!(!disk.contains(&key(1)), "evicted by the second write");
    assert!(!fill(&disk, &key(1), &pattern(100, 3), &ticket).await);
}

#[tokio::test]
async fn etag_and_attributes_are_kept_with_the_entry_across_a_restart() {
    use crate::store::ObjectAttrs;
    use spool::{EntryMeta, EtagSource};
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(300_000, 4);
    let attrs = ObjectAttrs {
        content_type: Some("application/zip".into()),
        user: vec![("cachekey".into(), "default-protected".into())],
        ..ObjectAttrs::default()
    };
    let origin_date = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_750_000_000);
    {
        let disk = DiskTier::open(settings(dir.path(), 10 << 20))
            .await
            .unwrap();
        let meta = EntryMeta {
            attrs: attrs.clone(),
            etag: EtagSource::Md5,
            modified: Some(origin_date),
        };
        let mut spool = disk
            .spool_with(&key(1), data.len() as u64, meta)
            .await
            .unwrap();
        spool.write(Bytes::from(data.clone())).await.unwrap();
        spool.finish(Commit::Cached).await.unwrap();
    }
    let disk = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    let expected_etag = hex::encode(<md5::Md5 as md5::Digest>::digest(&data));
    let head = disk.head(&key(1)).await.unwrap().unwrap();
    assert_eq!(head.etag.as_deref(), Some(expected_etag.as_str()));
    assert_eq!(head.attrs, attrs);
    assert_eq!(head.modified, origin_date);
    let object = disk.get(&key(1)).await.unwrap().unwrap();
    assert_eq!(object.meta, head);
}

async fn read_range(
    disk: &DiskTier,
    key: &Key,
    range: &str,
) -> (Option<(u64, u64)>, io::Result<Vec<u8>>) {
    let range = crate::store::backend::ByteRange::parse(range).unwrap();
    let ranged = disk.get_range(key, range).await.unwrap().expect("a hit");
    let span = ranged.span.map(|s| (s.start, s.end));
    let mut body = ranged.object.body;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => return (span, Err(e)),
        }
    }
    (span, Ok(out))
}

#[tokio::test]
async fn ranges_are_served_and_verified_block_by_block() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 20 << 20))
        .await
        .unwrap();
    let len = 3 * crate::store::entry_file::BLOCK as usize + 1000;
    let data = pattern(len, 1);
    disk.put(&key(1), len as u64, body(&data), &PutOptions::default())
        .await
        .unwrap();
    let block = crate::store::entry_file::BLOCK as usize;
    for (range, start, end) in [
        ("bytes=0-0", 0, 1),
        ("bytes=100-199", 100, 200),
        (
            &format!("bytes={}-{}", block - 10, block + 10)[..],
            block - 10,
            block + 11,
        ),
        ("bytes=-500", len - 500, len),
        (&format!("bytes={}-", 2 * block)[..], 2 * block, len),
    ] {
        let (span, got) = read_range(&disk, &key(1), range).await;
        assert_eq!(span, Some((start as u64, end as u64)), "{range}");
        assert!(got.unwrap() == data[start..end], "{range}");
    }
    let (span, got) = read_range(&disk, &key(1), &format!("bytes={len}-")).await;
    assert_eq!(span, None, "past the end selects nothing");
    assert!(got.unwrap().is_empty());

    // A damaged block fails the ranges that touch it, and only those, and removes the entry.
    corrupt(&disk, &key(1), (2 * block + 5) as u64);
    let (_, clean) = read_range(&disk, &key(1), "bytes=0-99").await;
    assert!(clean.unwrap() == data[..100]);
    let (_, damaged) = read_range(
        &disk,
        &key(1),
        &format!("bytes={}-{}", 2 * block, 2 * block + 9),
    )
    .await;
    assert_eq!(damaged.unwrap_err().kind(), io::ErrorKind::InvalidData);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(disk.get(&key(1)).await.unwrap().is_none());
}

#[tokio::test]
async fn a_segmented_spool_written_out_of_order_stores_the_same_entry() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 20 << 20))
        .await
        .unwrap();
    let block = crate::store::entry_file::BLOCK as usize;
    let segment = 2 * block;
    let len = 3 * segment + 1000;
    let data = pattern(len, 9);
    let mut spool = disk
        .spool(&key(1), len as u64)
        .await
        .unwrap()
        .with_segments(segment as u64);
    // The last segment first, then the middle one in two writes, then a run from the start
    // that goes on into the second segment.
    let write = |from: usize, to: usize| Bytes::copy_from_slice(&data[from..to]);
    spool
        .write_at(3 * segment as u64, write(3 * segment, len))
        .await
        .unwrap();
    spool
        .write_at(2 * segment as u64, write(2 * segment, 2 * segment + 777))
        .await
        .unwrap();
    // Not where its segment stands: refused, nothing written.
    assert!(spool
        .write_at(
            2 * segment as u64 + 1000,
            write(2 * segment + 1000, 2 * segment + 1001)
        )
        .await
        .is_err());
    spool
        .write_at(
            2 * segment as u64 + 777,
            write(2 * segment + 777, 3 * segment),
        )
        .await
        .unwrap();
    spool.write_at(0, write(0, 2 * segment)).await.unwrap();
    assert_eq!(spool.written(), len as u64);
    assert_eq!(spool.crc32c(), crc32c::crc32c(&data));
    let (header, committed) = spool.finish(Commit::Cached).await.unwrap();
    assert!(committed.is_some());
    assert_eq!(header.crc32c, crc32c::crc32c(&data));
    assert!(read_all(&disk, &key(1)).await.unwrap().unwrap() == data);
    // The block table is right too: ranges are verified against it.
    let (_, got) = read_range(&disk, &key(1), &format!("bytes={}-", block + 5)).await;
    assert!(got.unwrap() == data[block + 5..]);
}

/// Chunks written end to end in one vectored write (as a fill hands on the buffers S3's body
/// arrived in), of odd sizes and across a segment's end, store the same entry and checksums
/// as one buffer would.
#[tokio::test]
async fn chunks_written_together_across_segments_store_the_same_entry() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 20 << 20))
        .await
        .unwrap();
    let block = crate::store::entry_file::BLOCK as usize;
    let segment = 2 * block;
    let len = 2 * segment + 333;
    let data = pattern(len, 4);
    let mut spool = disk
        .spool(&key(2), len as u64)
        .await
        .unwrap()
        .with_segments(segment as u64);
    // Cut at sizes that fall on no block or segment boundary, an empty chunk among them.
    let mut chunks = Vec::new();
    let mut at = 0;
    for size in [1, 0, 4095, 70_000, block, 3 * block / 2, 17]
        .iter()
        .cycle()
    {
        if at == len {
            break;
        }
        let to = (at + size).min(len);
        chunks.push(Bytes::copy_from_slice(&data[at..to]));
        at = to;
    }
    let (first, rest) = chunks.split_at(chunks.len() / 2);
    let first_len: usize = first.iter().map(|c| c.len()).sum();
    spool.write_chunks_at(0, first.to_vec()).await.unwrap();
    spool
        .write_chunks_at(first_len as u64, rest.to_vec())
        .await
        .unwrap();
    assert_eq!(spool.written(), len as u64);
    assert_eq!(spool.crc32c(), crc32c::crc32c(&data));
    spool.finish(Commit::Cached).await.unwrap();
    assert!(read_all(&disk, &key(2)).await.unwrap().unwrap() == data);
    let (_, got) = read_range(&disk, &key(2), &format!("bytes={}-", segment + 3)).await;
    assert!(got.unwrap() == data[segment + 3..]);
}

/// A write admitted as its bytes arrive (a copy of a client's upload) promises nothing: a
/// large declaration holds no space from other writes, and the write itself fails, evicting
/// no more than fits, when its bytes find no room.
#[tokio::test]
async fn a_write_admitted_as_its_bytes_arrive_holds_no_space_on_its_word() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 5 << 20)).await.unwrap();
    let meta = EntryMeta::default();
    // 3 MiB declared and a byte sent (its first step of space reserved): another 3 MiB write
    // is still admitted, which a promise of the whole declaration would have refused.
    let mut declared = disk
        .spool_as_bytes_arrive(&key(1), 3 << 20, meta.clone())
        .await
        .unwrap();
    declared.write(Bytes::from(vec![1u8])).await.unwrap();
    let mut promised = disk.spool(&key(2), 3 << 20).await.unwrap();
    promised
        .write(Bytes::from(vec![2u8; 3 << 20]))
        .await
        .unwrap();
    promised.finish(Commit::Cached).await.unwrap();
    // The declared write's bytes now find the rest pinned down by nothing but their own
    // reservation and the committed entry, which it may evict: it goes on.
    let mut sent = 1u64;
    while sent < 3 << 20 {
        let n = (1u64 << 20).min((3 << 20) - sent);
        declared
            .write(Bytes::from(vec![1u8; n as usize]))
            .await
            .unwrap();
        sent += n;
    }
    declared.finish(Commit::Cached).await.unwrap();
    assert!(disk.contains(&key(1)));
    assert!(!disk.contains(&key(2)), "evicted for bytes that arrived");
    // Over the bound even with everything evicted: refused at once, as any write.
    let refused = disk.spool_as_bytes_arrive(&key(3), 5 << 20, meta).await;
    assert!(matches!(refused, Err(StoreError::Full { .. })));
}

/// A body of undeclared length takes what arrives: its entry is as long as the body, its space
/// is what the file takes (nothing reserved ahead stays counted), past its limit it is refused,
/// and past the disk it fails as its bytes arrive; neither leaves anything behind.
#[tokio::test]
async fn unsized_bodies_take_what_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(settings(dir.path(), 10 << 20))
        .await
        .unwrap();
    let data = pattern(3 * 1024 * 1024 + 5, 4);
    let stored = disk
        .put(
            &key(1),
            BodyLen::AtMost(8 << 20),
            body(&data),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(stored.len, data.len() as u64);
    assert_eq!(read_all(&disk, &key(1)).await.unwrap().unwrap(), data);
    let file_len = std::fs::metadata(disk.path_for(&key(1))).unwrap().len();
    assert_eq!(disk.usage().bytes, file_len);

    let over_limit = disk
        .put(
            &key(2),
            BodyLen::AtMost(1 << 20),
            body(&pattern(2 << 20, 5)),
            &PutOptions::default(),
        )
        .await;
    assert!(matches!(over_limit, Err(StoreError::TooLarge { limit }) if limit == 1 << 20));
    let over_disk = disk
        .put(
            &key(3),
            BodyLen::AtMost(100 << 20),
            body(&pattern(12 << 20, 6)),
            &PutOptions::default(),
        )
        .await;
    assert!(
        matches!(over_disk, Err(StoreError::Full { .. })),
        "{over_disk:?}"
    );
    assert!(disk.head(&key(2)).await.unwrap().is_none());
    assert!(disk.head(&key(3)).await.unwrap().is_none());
    // Nothing of the refused writes is still held: the whole disk can be taken again.
    disk.delete(&key(1)).await.unwrap();
    let whole = pattern((10 << 20) - 64 * 1024, 7);
    disk.put(
        &key(4),
        whole.len() as u64,
        body(&whole),
        &PutOptions::default(),
    )
    .await
    .unwrap();
}
