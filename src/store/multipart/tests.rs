use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};

use super::*;
use crate::store::backend::ByteRange;
use crate::store::disk::{Commit, DiskSettings, Version};
use crate::store::entry_file::BLOCK;
use crate::store::testing::{body, pattern, read_body};
use crate::store::{PutOptions, Store};

/// A completion, committed as the caller of [`Multipart::complete`] would.
#[derive(Debug)]
struct Committed {
    meta: ObjectMeta,
    layout: PartLayout,
    stats: CopyStats,
    header: EntryHeader,
    version: Option<Version>,
}

impl Multipart {
    async fn complete_committed(
        &self,
        key: &Key,
        upload_id: &str,
        listed: &[(u32, String)],
        mode: Commit,
    ) -> Result<Committed, MultipartError> {
        let Completion::Assembled(done) = self
            .complete(key, upload_id, listed, &Default::default())
            .await?
        else {
            panic!("a first completion assembles");
        };
        let done = *done;
        let header = done.sealed.header().clone();
        let version = done.sealed.commit(mode).await?;
        self.settle(upload_id, Some(done.meta.clone()));
        Ok(Committed {
            meta: done.meta,
            layout: done.layout,
            stats: done.stats,
            header,
            version,
        })
    }
}

struct Setup {
    dir: tempfile::TempDir,
    disk: DiskTier,
    uploads: Multipart,
}

fn small_parts() -> MultipartSettings {
    MultipartSettings {
        min_part_size: 1000,
        ..MultipartSettings::default()
    }
}

impl Setup {
    async fn new(max_size: u64, settings: MultipartSettings) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (disk, uploads) = open(dir.path(), max_size, settings).await;
        Setup { dir, disk, uploads }
    }

    /// Drops the tiers and opens them again on the same directory: a daemon restart.
    async fn restart(self, settings: MultipartSettings) -> Setup {
        let Setup { dir, disk, uploads } = self;
        let max_size = disk.settings().max_size;
        drop(uploads);
        drop(disk);
        let (disk, uploads) = open(dir.path(), max_size, settings).await;
        Setup { dir, disk, uploads }
    }

    /// Uploads each `(number, data)` and returns the ETags the client would list.
    async fn put_parts(&self, key: &Key, id: &str, parts: &[(u32, &[u8])]) -> Vec<(u32, String)> {
        let mut listed = Vec::new();
        for (number, data) in parts {
            let etag = self
                .uploads
                .put_part(key, id, *number, data.len() as u64, body(data))
                .await
                .unwrap()
                .etag;
            listed.push((*number, format!("\"{etag}\"")));
        }
        listed.sort();
        listed
    }

    fn upload_dirs(&self) -> usize {
        std::fs::read_dir(self.disk.multipart_dir())
            .unwrap()
            .count()
    }
}

async fn open(dir: &Path, max_size: u64, settings: MultipartSettings) -> (DiskTier, Multipart) {
    let disk = DiskTier::open(DiskSettings {
        dir: dir.join("data"),
        max_size,
        verify_before_serve: 1 << 20,
        min_free: 0,
    })
    .await
    .unwrap();
    let uploads = Multipart::open(disk.clone(), settings).await.unwrap();
    (disk, uploads)
}

fn key(name: &str) -> Key {
    Key::object(Namespace::new("bucket-a").unwrap(), name).unwrap()
}

fn attrs() -> ObjectAttrs {
    ObjectAttrs {
        content_type: Some("application/zip".into()),
        content_encoding: None,
        cache_control: Some("no-store".into()),
        user: vec![("origin".into(), "runner".into())],
        kept: vec![("content-language".into(), "en".into())],
    }
}

/// S3's multipart ETag computed here from scratch: MD5 of the parts' binary MD5s, then `-N`.
fn expected_etag(parts: &[&[u8]]) -> String {
    let mut all = Md5::new();
    for part in parts {
        all.update(Md5::digest(part));
    }
    format!("{}-{}", hex::encode(all.finalize()), parts.len())
}

async fn read_range(disk: &DiskTier, key: &Key, first: u64, last: u64) -> Vec<u8> {
    let ranged = disk
        .get_range(key, ByteRange::Bounded { first, last })
        .await
        .unwrap()
        .unwrap();
    read_body(ranged.object).await.unwrap()
}

/// Completes an upload whose parts arrived out of order and checks everything a reader sees:
/// bytes through `get` and ranges (which check the block table), ETag, attributes, CRC.
async fn assemble_and_check(sizes: &[usize], settings: MultipartSettings) -> Committed {
    let s = Setup::new(1 << 30, settings).await;
    let k = key("runner/project/42/cache.zip");
    let data: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| pattern(len, i as u8 + 1))
        .collect();
    let id = s.uploads.create(&k, attrs(), None).await.unwrap();
    let mut order: Vec<(u32, &[u8])> = data
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u32 + 1, d.as_slice()))
        .collect();
    order.reverse();
    order.rotate_left(1);
    let listed = s.put_parts(&k, &id, &order).await;

    let done = s
        .uploads
        .complete_committed(&k, &id, &listed, Commit::Cached)
        .await
        .unwrap();
    let whole: Vec<u8> = data.concat();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    assert!(done.version.is_some());
    assert_eq!(
        done.meta.etag.as_deref(),
        Some(expected_etag(&refs).as_str())
    );
    assert_eq!(done.meta.attrs, attrs());
    assert_eq!(done.meta.len, whole.len() as u64);
    assert_eq!(done.meta.crc32c, Some(crc32c::crc32c(&whole)));
    assert_eq!(
        done.layout,
        PartLayout::Sizes(sizes.iter().map(|&n| n as u64).collect())
    );

    let object = s.disk.get(&k).await.unwrap().unwrap();
    assert_eq!(object.meta, done.meta);
    assert!(read_body(object).await.unwrap() == whole, "body differs");
    let head = s.disk.head(&k).await.unwrap().unwrap();
    assert_eq!(head, done.meta);
    // Ranges across part boundaries and the last block, verified block by block.
    let len = whole.len() as u64;
    for (first, last) in [
        (0, 10),
        (sizes[0] as u64 - 5, sizes[0] as u64 + 5),
        (len / 2, len - 1),
    ] {
        assert!(
            read_range(&s.disk, &k, first, last).await == whole[first as usize..=last as usize],
            "range {first}-{last}"
        );
    }
    // The upload is gone, and its space with it.
    assert_eq!(s.upload_dirs(), 0);
    assert_eq!(s.uploads.usage(), MultipartUsage::default());
    assert!(matches!(
        s.uploads.list_parts(&k, &id),
        Err(MultipartError::NoSuchUpload)
    ));
    done
}

#[tokio::test]
async fn parts_on_the_block_grid_assemble_without_a_reread() {
    let sizes = [
        2 * BLOCK as usize,
        BLOCK as usize,
        2 * BLOCK as usize,
        100_000,
    ];
    let done = assemble_and_check(&sizes, small_parts()).await;
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    assert_eq!(done.stats.reread, 0);
    assert_eq!(done.stats.in_kernel + done.stats.through_process, total);
}

#[tokio::test]
async fn parts_off_the_block_grid_get_their_table_from_a_reread() {
    let sizes = [BLOCK as usize, 300_000, 123_457, 5000];
    let done = assemble_and_check(&sizes, small_parts()).await;
    // Only from the first block that straddles a part boundary.
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    assert_eq!(done.stats.reread, total - 2 * BLOCK);
}

#[tokio::test]
async fn the_read_write_fallback_assembles_the_same_entry() {
    let settings = MultipartSettings {
        copy: CopyMethod::ReadWrite,
        ..small_parts()
    };
    let sizes = [BLOCK as usize, 300_000, 5000];
    let done = assemble_and_check(&sizes, settings).await;
    assert_eq!(done.stats.in_kernel, 0);
    assert_eq!(done.stats.through_process, BLOCK + 300_000 + 5000);
}

#[tokio::test]
async fn the_etag_is_s3s_md5_of_md5s() {
    let s = Setup::new(
        1 << 30,
        MultipartSettings {
            min_part_size: 1,
            ..MultipartSettings::default()
        },
    )
    .await;
    let k = key("hello.txt");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let listed = s.put_parts(&k, &id, &[(1, b"hello"), (2, b" world")]).await;
    // A single part's ETag is its MD5 (known value), the object's the MD5 of the two binary
    // MD5s (computed independently with Python's hashlib).
    assert_eq!(listed[0].1, "\"5d41402abc4b2a76b9719d911017c592\"");
    let done = s
        .uploads
        .complete_committed(&k, &id, &listed, Commit::Cached)
        .await
        .unwrap();
    assert_eq!(
        done.meta.etag.as_deref(),
        Some("a56979024342128ecebc884e3442121b-2")
    );
    let object = s.disk.get(&k).await.unwrap().unwrap();
    assert_eq!(read_body(object).await.unwrap(), b"hello world");
}

#[tokio::test]
async fn a_part_uploaded_again_replaces_the_earlier_one() {
    let s = Setup::new(1 << 30, small_parts()).await;
    let k = key("a/b");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let first = s.put_parts(&k, &id, &[(1, &pattern(5000, 1))]).await;
    let second = s
        .put_parts(&k, &id, &[(1, &pattern(6000, 2)), (2, b"tail")])
        .await;
    let parts = s.uploads.list_parts(&k, &id).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].size, 6000);
    assert_eq!(format!("\"{}\"", parts[0].etag), second[0].1);
    assert_eq!(
        s.uploads.usage(),
        MultipartUsage {
            uploads: 1,
            parts: 2,
            bytes: 6004
        }
    );
    // The replaced part's ETag no longer completes the upload.
    let stale = vec![first[0].clone(), second[1].clone()];
    assert!(matches!(
        s.uploads
            .complete_committed(&k, &id, &stale, Commit::Cached)
            .await,
        Err(MultipartError::InvalidPart(1))
    ));
    s.uploads
        .complete_committed(&k, &id, &second, Commit::Cached)
        .await
        .unwrap();
    let object = s.disk.get(&k).await.unwrap().unwrap();
    assert_eq!(
        read_body(object).await.unwrap(),
        [pattern(6000, 2), b"tail".to_vec()].concat()
    );
}

#[tokio::test]
async fn completions_are_checked_as_s3_checks_them_and_leave_the_upload_open() {
    let s = Setup::new(1 << 30, small_parts()).await;
    let k = key("checked");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let listed = s
        .put_parts(
            &k,
            &id,
            &[
                (1, &pattern(2000, 1)),
                (2, &pattern(999, 2)),
                (3, &pattern(1000, 3)),
                (4, b"x"),
            ],
        )
        .await;
    let complete = |list: Vec<(u32, String)>| {
        let uploads = s.uploads.clone();
        let k = k.clone();
        let id = id.clone();
        async move {
            uploads
                .complete_committed(&k, &id, &list, Commit::Cached)
                .await
        }
    };
    let l = |i: usize| listed[i].clone();
    assert!(matches!(
        complete(vec![]).await,
        Err(MultipartError::NoParts)
    ));
    assert!(matches!(
        complete(vec![l(2), l(0)]).await,
        Err(MultipartError::InvalidPartOrder)
    ));
    assert!(matches!(
        complete(vec![l(0), (3, listed[0].1.clone())]).await,
        Err(MultipartError::InvalidPart(3))
    ));
    assert!(matches!(
        complete(vec![l(0), (7, listed[0].1.clone())]).await,
        Err(MultipartError::InvalidPart(7))
    ));
    assert!(matches!(
        complete(vec![l(0), l(1), l(2)]).await,
        Err(MultipartError::EntityTooSmall {
            part_number: 2,
            size: 999,
            min: 1000
        })
    ));
    // A small part is fine last; an unlisted part (2) is discarded.
    let done = complete(vec![l(0), l(2), l(3)]).await.unwrap();
    assert_eq!(done.meta.len, 3001);
    assert_eq!(done.layout, PartLayout::Sizes(vec![2000, 1000, 1]));
    assert_eq!(s.upload_dirs(), 0);
    // Completed: a retry is answered as the completion was.
    assert!(matches!(
        s.uploads.complete(&k, &id, &[l(0)], &Default::default()).await,
        Ok(Completion::Repeated(meta)) if meta == done.meta
    ));
}

#[tokio::test]
async fn unknown_ids_limits_and_other_keys_are_refused() {
    let s = Setup::new(
        1 << 30,
        MultipartSettings {
            max_part_size: 10_000,
            max_open_uploads: 2,
            ..small_parts()
        },
    )
    .await;
    let k = key("mine");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    assert!(is_upload_id(&id));
    let other = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    assert_ne!(id, other);
    assert!(matches!(
        s.uploads.create(&k, ObjectAttrs::default(), None).await,
        Err(MultipartError::TooManyUploads(2))
    ));
    let put = |k: Key, id: String, n: u32, len: usize| {
        let uploads = s.uploads.clone();
        async move {
            uploads
                .put_part(&k, &id, n, len as u64, body(&vec![1; len]))
                .await
        }
    };
    assert!(matches!(
        put(k.clone(), "0".repeat(32), 1, 10).await,
        Err(MultipartError::NoSuchUpload)
    ));
    assert!(matches!(
        put(key("theirs"), id.clone(), 1, 10).await,
        Err(MultipartError::NoSuchUpload)
    ));
    assert!(matches!(
        put(k.clone(), id.clone(), 0, 10).await,
        Err(MultipartError::InvalidPartNumber(0))
    ));
    assert!(matches!(
        put(k.clone(), id.clone(), 10_001, 10).await,
        Err(MultipartError::InvalidPartNumber(10_001))
    ));
    assert!(matches!(
        put(k.clone(), id.clone(), 1, 10_001).await,
        Err(MultipartError::EntityTooLarge {
            size: 10_001,
            max: 10_000
        })
    ));
    put(k.clone(), id.clone(), 10_000, 10).await.unwrap();
    // A body shorter than declared stores nothing.
    let short = s.uploads.put_part(&k, &id, 2, 50, body(&[1; 20])).await;
    assert!(matches!(
        short,
        Err(MultipartError::Store(StoreError::LengthMismatch { .. }))
    ));
    assert_eq!(s.uploads.list_parts(&k, &id).unwrap().len(), 1);
    assert!(matches!(
        s.uploads.list_parts(&key("theirs"), &id),
        Err(MultipartError::NoSuchUpload)
    ));
    assert!(matches!(
        s.uploads.abort(&k, "nope").await,
        Err(MultipartError::NoSuchUpload)
    ));
    let listed = vec![(1, "\"x\"".to_string())];
    assert!(matches!(
        s.uploads
            .complete_committed(&k, "nope", &listed, Commit::Cached)
            .await,
        Err(MultipartError::NoSuchUpload)
    ));
}

#[tokio::test]
async fn uploads_are_listed_by_namespace_prefix_key_and_initiation() {
    let s = Setup::new(1 << 30, small_parts()).await;
    let b = key("dir/b");
    let a = key("dir/a");
    let id_b = s
        .uploads
        .create(&b, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let id_a1 = s
        .uploads
        .create(&a, ObjectAttrs::default(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let id_a2 = s
        .uploads
        .create(&a, ObjectAttrs::default(), None)
        .await
        .unwrap();
    s.uploads
        .create(&key("other/c"), ObjectAttrs::default(), None)
        .await
        .unwrap();
    let elsewhere = Key::object(Namespace::new("bucket-b").unwrap(), "dir/a").unwrap();
    s.uploads
        .create(&elsewhere, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let ns = Namespace::new("bucket-a").unwrap();
    let ids: Vec<String> = s
        .uploads
        .list_uploads(&ns, "dir/")
        .into_iter()
        .map(|u| u.upload_id)
        .collect();
    assert_eq!(ids, vec![id_a1, id_a2, id_b]);
    assert_eq!(s.uploads.list_uploads(&ns, "").len(), 4);
}

#[tokio::test]
async fn an_abort_removes_the_parts_and_frees_their_space() {
    let s = Setup::new(4 << 20, small_parts()).await;
    let k = key("big");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    s.put_parts(&k, &id, &[(1, &pattern(3 << 20, 1))]).await;
    // The part's space is taken: an entry that would need it is refused, not the part evicted.
    let entry = pattern(2 << 20, 2);
    assert!(matches!(
        s.disk
            .put(
                &key("cached"),
                entry.len() as u64,
                body(&entry),
                &PutOptions::default()
            )
            .await,
        Err(StoreError::Full { .. })
    ));
    s.uploads.abort(&k, &id).await.unwrap();
    assert_eq!(s.upload_dirs(), 0);
    assert!(matches!(
        s.uploads.abort(&k, &id).await,
        Err(MultipartError::NoSuchUpload)
    ));
    s.disk
        .put(
            &key("cached"),
            entry.len() as u64,
            body(&entry),
            &PutOptions::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn parts_count_against_the_disk_tier_and_evict_only_cached_entries() {
    let s = Setup::new(4 << 20, small_parts()).await;
    let cached = pattern(2 << 20, 1);
    s.disk
        .put(
            &key("cached"),
            cached.len() as u64,
            body(&cached),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let k = key("upload");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    // Room is made for the part by evicting the cached entry.
    s.put_parts(&k, &id, &[(1, &pattern(3 << 20, 2))]).await;
    assert!(!s.disk.contains(&key("cached")));
    // A second part cannot fit beside the first: refused before its body is read.
    let refused = s
        .uploads
        .put_part(&k, &id, 2, 2 << 20, body(&pattern(2 << 20, 3)))
        .await;
    assert!(
        matches!(refused, Err(MultipartError::Store(StoreError::Full { .. }))),
        "{refused:?}"
    );
    // Nor can the assembled entry beside its parts (both are on disk while it is written);
    // the upload stays open for a retry.
    let listed = vec![(
        1,
        format!("\"{}\"", s.uploads.list_parts(&k, &id).unwrap()[0].etag),
    )];
    let full = s
        .uploads
        .complete_committed(&k, &id, &listed, Commit::Cached)
        .await;
    assert!(
        matches!(full, Err(MultipartError::Store(StoreError::Full { .. }))),
        "{full:?}"
    );
    assert_eq!(s.uploads.list_parts(&k, &id).unwrap().len(), 1);
    assert!(!s.disk.contains(&k));
}

#[tokio::test]
async fn a_completed_entry_can_be_pinned_and_replaces_an_older_one() {
    let s = Setup::new(1 << 30, small_parts()).await;
    let k = key("pinned");
    s.disk
        .put(&k, 3, body(b"old"), &PutOptions::default())
        .await
        .unwrap();
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let listed = s
        .put_parts(&k, &id, &[(1, &pattern(4000, 1)), (2, b"new")])
        .await;
    let done = s
        .uploads
        .complete_committed(&k, &id, &listed, Commit::Pinned)
        .await
        .unwrap();
    let usage = s.disk.usage();
    assert_eq!((usage.entries, usage.pinned_entries), (1, 1));
    assert_eq!(usage.pinned_bytes, done.header.file_len());
    let located = s.disk.locate(&k).await.unwrap().unwrap();
    assert_eq!(located.header, done.header);
    assert_eq!(Some(located.version), done.version);
}

#[tokio::test]
async fn an_open_upload_survives_a_restart_and_completes() {
    let s = Setup::new(8 << 20, small_parts()).await;
    let k = key("restarted");
    let id = s.uploads.create(&k, attrs(), None).await.unwrap();
    let one = pattern(3 << 20, 1);
    let two = pattern(2000, 2);
    let mut listed = s.put_parts(&k, &id, &[(1, &one), (2, &two)]).await;
    // Leftovers of a crash: a manifest being written, a part file cut short, an upload
    // directory whose manifest never landed, a stray file.
    let multipart = s.disk.multipart_dir();
    std::fs::write(multipart.join(&id).join(MANIFEST_TEMP), b"partial").unwrap();
    std::fs::write(multipart.join(&id).join("part-00003"), pattern(100, 3)).unwrap();
    std::fs::create_dir(multipart.join("0".repeat(32))).unwrap();
    std::fs::write(multipart.join("junk"), b"x").unwrap();

    let s = s.restart(small_parts()).await;
    assert_eq!(s.upload_dirs(), 1);
    let dir_files = std::fs::read_dir(multipart.join(&id)).unwrap().count();
    assert_eq!(dir_files, 3, "manifest and two parts");
    let ns = Namespace::new("bucket-a").unwrap();
    let open = s.uploads.list_uploads(&ns, "");
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].key.clone(), open[0].upload_id.clone()),
        (k.clone(), id.clone())
    );
    let parts = s.uploads.list_parts(&k, &id).unwrap();
    assert_eq!(
        parts.iter().map(|p| p.size).collect::<Vec<_>>(),
        [3 << 20, 2000]
    );
    // The parts' space is reserved again: 3 MiB of the 8 are taken.
    let too_big = pattern(6 << 20, 4);
    assert!(matches!(
        s.disk
            .put(
                &key("cached"),
                too_big.len() as u64,
                body(&too_big),
                &PutOptions::default()
            )
            .await,
        Err(StoreError::Full { .. })
    ));

    let three = pattern(10, 3);
    listed.extend(s.put_parts(&k, &id, &[(3, &three)]).await);
    let done = s
        .uploads
        .complete_committed(&k, &id, &listed, Commit::Cached)
        .await
        .unwrap();
    assert_eq!(done.meta.attrs, attrs());
    assert_eq!(
        done.meta.etag.as_deref(),
        Some(expected_etag(&[&one, &two, &three]).as_str())
    );
    let object = s.disk.get(&k).await.unwrap().unwrap();
    assert!(read_body(object).await.unwrap() == [one, two, three].concat());
    // And the completed entry is indexed at the next start like any other.
    let s = s.restart(small_parts()).await;
    assert!(s.disk.contains(&k));
    assert_eq!(s.upload_dirs(), 0);
}

#[tokio::test]
async fn stale_uploads_are_swept_and_their_space_freed() {
    let settings = MultipartSettings {
        max_age: Duration::from_secs(3600),
        ..small_parts()
    };
    let s = Setup::new(4 << 20, settings.clone()).await;
    let k = key("stale");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    s.put_parts(&k, &id, &[(1, &pattern(3 << 20, 1))]).await;
    let fresh = s
        .uploads
        .create(&key("fresh"), ObjectAttrs::default(), None)
        .await
        .unwrap();

    let now = SystemTime::now();
    assert_eq!(s.uploads.sweep_at(now).await, 0);
    assert_eq!(s.uploads.sweep_at(now + Duration::from_secs(3601)).await, 2);
    assert!(matches!(
        s.uploads.list_parts(&k, &id),
        Err(MultipartError::NoSuchUpload)
    ));
    assert!(matches!(
        s.uploads.list_parts(&key("fresh"), &fresh),
        Err(MultipartError::NoSuchUpload)
    ));
    assert_eq!(s.upload_dirs(), 0);
    let entry = pattern(3 << 20, 2);
    s.disk
        .put(
            &key("cached"),
            entry.len() as u64,
            body(&entry),
            &PutOptions::default(),
        )
        .await
        .unwrap();

    // At start-up, uploads past max_age are removed too.
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    s.put_parts(&k, &id, &[(1, b"abc")]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let s = s
        .restart(MultipartSettings {
            max_age: Duration::from_millis(10),
            ..settings
        })
        .await;
    assert_eq!(s.upload_dirs(), 0);
    assert_eq!(s.uploads.usage(), MultipartUsage::default());
}

#[tokio::test]
async fn the_sweeper_task_runs_until_stopped() {
    let s = Setup::new(
        1 << 30,
        MultipartSettings {
            max_age: Duration::from_millis(1),
            sweep_interval: Duration::from_millis(10),
            ..small_parts()
        },
    )
    .await;
    let (stop, stopped) = watch::channel(false);
    s.uploads
        .create(&key("x"), ObjectAttrs::default(), None)
        .await
        .unwrap();
    s.uploads.start(stopped);
    crate::store::testing::eventually("the sweep", || s.uploads.usage().uploads == 0).await;
    stop.send(true).unwrap();
}

/// Flips one byte of a stored part's body on disk.
fn damage_part(s: &Setup, id: &str, part_number: u32) {
    let path = s
        .disk
        .multipart_dir()
        .join(id)
        .join(part_file_name(part_number));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
}

#[tokio::test]
async fn damaged_part_bytes_never_reach_a_reader() {
    let s = Setup::new(1 << 30, small_parts()).await;
    // Off the grid: the re-read that computes the table finds the damage; the upload stays
    // open.
    let k = key("off-grid");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let listed = s
        .put_parts(
            &k,
            &id,
            &[(1, &pattern(300_000, 1)), (2, &pattern(5000, 2))],
        )
        .await;
    damage_part(&s, &id, 2);
    let damaged = s
        .uploads
        .complete_committed(&k, &id, &listed, Commit::Cached)
        .await;
    assert!(
        matches!(&damaged, Err(MultipartError::Store(StoreError::Io(e))) if e.kind() == io::ErrorKind::InvalidData),
        "{damaged:?}"
    );
    assert!(!s.disk.contains(&k));
    assert_eq!(s.uploads.list_parts(&k, &id).unwrap().len(), 2);

    // On the grid nothing is re-read: the entry's checksum, combined from the parts', does not
    // match its body, so the first read drops it.
    let k = key("on-grid");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let listed = s
        .put_parts(
            &k,
            &id,
            &[(1, &pattern(BLOCK as usize, 1)), (2, &pattern(5000, 2))],
        )
        .await;
    damage_part(&s, &id, 1);
    s.uploads
        .complete_committed(&k, &id, &listed, Commit::Cached)
        .await
        .unwrap();
    assert!(s.disk.get(&k).await.unwrap().is_none());
    assert!(!s.disk.contains(&k));
}

/// A completion retried after its answer was lost gets the first one's answer (S3 answers a
/// retried CompleteMultipartUpload 200 with the same ETag), once the caller stored the entry;
/// while it stores, a retry is told the upload is busy; a completion whose storing failed is
/// not repeated. Another key never learns of the id.
#[tokio::test]
async fn a_retried_completion_gets_the_first_ones_answer() {
    let s = Setup::new(64 << 20, small_parts()).await;
    let k = key("retried.zip");
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let listed = s
        .put_parts(&k, &id, &[(1, &pattern(4000, 1)), (2, b"end")])
        .await;
    let Completion::Assembled(done) = s
        .uploads
        .complete(&k, &id, &listed, &Default::default())
        .await
        .unwrap()
    else {
        panic!("a first completion assembles");
    };
    assert!(matches!(
        s.uploads
            .complete(&k, &id, &listed, &Default::default())
            .await,
        Err(MultipartError::Busy)
    ));
    done.sealed.commit(Commit::Cached).await.unwrap();
    s.uploads.settle(&id, Some(done.meta.clone()));
    for _ in 0..2 {
        match s
            .uploads
            .complete(&k, &id, &listed, &Default::default())
            .await
        {
            Ok(Completion::Repeated(meta)) => assert_eq!(meta, done.meta),
            _ => panic!("a retried completion repeats the first answer"),
        }
    }
    assert!(matches!(
        s.uploads
            .complete(&key("other.zip"), &id, &listed, &Default::default())
            .await,
        Err(MultipartError::NoSuchUpload)
    ));

    let failed = s
        .uploads
        .create(&k, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let listed = s.put_parts(&k, &failed, &[(1, b"only")]).await;
    assert!(s
        .uploads
        .complete(&k, &failed, &listed, &Default::default())
        .await
        .is_ok());
    s.uploads.settle(&failed, None);
    assert!(matches!(
        s.uploads
            .complete(&k, &failed, &listed, &Default::default())
            .await,
        Err(MultipartError::NoSuchUpload)
    ));
}

/// A part uploaded twice (a client's retry of it, the first attempt finishing last) and listed
/// twice: as S3 does, the part is used once, checked against the last listing of its number.
#[tokio::test]
async fn a_part_listed_twice_is_used_once_as_its_last_listing_says() {
    let s = Setup::new(64 << 20, small_parts()).await;
    let k = key("twice.zip");
    for last_listed_is_current in [true, false] {
        let id = s
            .uploads
            .create(&k, ObjectAttrs::default(), None)
            .await
            .unwrap();
        let retry = s.put_parts(&k, &id, &[(1, b"BBBBBBBB")]).await;
        let first = s.put_parts(&k, &id, &[(1, b"AAAAAAAA")]).await;
        let listed = if last_listed_is_current {
            vec![retry[0].clone(), first[0].clone()]
        } else {
            vec![first[0].clone(), retry[0].clone()]
        };
        let done = s
            .uploads
            .complete_committed(&k, &id, &listed, Commit::Cached)
            .await;
        if last_listed_is_current {
            let done = done.unwrap();
            assert_eq!(done.meta.len, 8);
            let object = s.disk.get(&k).await.unwrap().unwrap();
            assert_eq!(read_body(object).await.unwrap(), b"AAAAAAAA");
        } else {
            assert!(matches!(done, Err(MultipartError::InvalidPart(1))));
        }
    }
}

/// An upload created with a checksum: each part's is computed as it arrives and shown in
/// ListParts; the completion checks the parts' checksums the client lists and the whole
/// object's it gives (a mismatch leaves the upload open), and the object keeps the composite
/// (or full-object) checksum and its type; parts received before a restart are read back.
#[tokio::test]
async fn checksums_of_an_upload_are_made_of_its_parts() {
    use crate::checksum::{to_base64, ChecksumAlgorithm as A, ChecksumType as T};
    let raw = |alg: A, data: &[u8]| {
        let mut hasher = alg.hasher();
        hasher.update(data);
        hasher.finalize()
    };
    let s = Setup::new(64 << 20, MultipartSettings::default()).await;
    let k = key("summed");
    let sha = UploadChecksum {
        algorithm: A::Sha256,
        kind: T::Composite,
    };
    let id = s.uploads.create(&k, attrs(), Some(sha)).await.unwrap();
    let parts: Vec<Vec<u8>> = [b'A', b'B', b'C'].map(|c| vec![c; 5 << 20]).to_vec();
    let mut listed = Vec::new();
    for (i, data) in parts[..2].iter().enumerate() {
        let number = i as u32 + 1;
        let receipt = s
            .uploads
            .put_part(&k, &id, number, data.len() as u64, body(data))
            .await
            .unwrap();
        assert_eq!(receipt.checksum, Some((A::Sha256, raw(A::Sha256, data))));
        listed.push((number, receipt.etag));
    }
    // The third part arrives after a restart; the first two are read back from their files.
    let s = s.restart(MultipartSettings::default()).await;
    assert_eq!(s.uploads.upload_checksum(&k, &id).unwrap(), Some(sha));
    let receipt = s
        .uploads
        .put_part(&k, &id, 3, parts[2].len() as u64, body(&parts[2]))
        .await
        .unwrap();
    listed.push((3, receipt.etag));
    let shown = s.uploads.list_parts(&k, &id).unwrap();
    assert_eq!(shown[2].checksum, Some(raw(A::Sha256, &parts[2])));

    let wrong_part = ListedChecksums {
        parts: vec![(2, A::Sha256, to_base64(&raw(A::Sha256, b"other")))],
        whole: None,
    };
    assert!(matches!(
        s.uploads.complete(&k, &id, &listed, &wrong_part).await,
        Err(MultipartError::InvalidPart(2))
    ));
    let wrong_whole = ListedChecksums {
        parts: vec![],
        whole: Some((A::Sha256, "bad".into())),
    };
    assert!(matches!(
        s.uploads.complete(&k, &id, &listed, &wrong_whole).await,
        Err(MultipartError::BadDigest)
    ));
    let right = ListedChecksums {
        parts: vec![(1, A::Sha256, to_base64(&raw(A::Sha256, &parts[0])))],
        whole: Some((
            A::Sha256,
            "uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3".into(),
        )),
    };
    let Completion::Assembled(done) = s.uploads.complete(&k, &id, &listed, &right).await.unwrap()
    else {
        panic!("a first completion assembles");
    };
    assert_eq!(
        done.meta.attrs.kept("x-amz-checksum-sha256"),
        Some("uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3")
    );
    assert_eq!(
        done.meta.attrs.kept("x-amz-checksum-type"),
        Some("COMPOSITE")
    );
    // The object's own attributes are as created, the upload's checksum names gone.
    assert_eq!(done.meta.attrs.user, attrs().user);
    assert_eq!(done.meta.attrs.kept.len(), attrs().kept.len() + 2);

    // A full-object CRC is the whole body's.
    let crc = UploadChecksum {
        algorithm: A::Crc64Nvme,
        kind: T::FullObject,
    };
    let id = s
        .uploads
        .create(&k, ObjectAttrs::default(), Some(crc))
        .await
        .unwrap();
    let listed = s
        .put_parts(&k, &id, &[(1, &parts[0]), (2, &parts[1][..1000])])
        .await;
    let Completion::Assembled(done) = s
        .uploads
        .complete(&k, &id, &listed, &Default::default())
        .await
        .unwrap()
    else {
        panic!("a first completion assembles");
    };
    let whole = [parts[0].as_slice(), &parts[1][..1000]].concat();
    assert_eq!(
        done.meta.attrs.kept("x-amz-checksum-crc64nvme"),
        Some(to_base64(&raw(A::Crc64Nvme, &whole)).as_str())
    );
    assert_eq!(
        done.meta.attrs.kept("x-amz-checksum-type"),
        Some("FULL_OBJECT")
    );
}
