//! An in-memory [`Backend`] with S3's semantics, for unit tests of the tiers.
//!
//! It behaves as S3 does where the tiers can tell: ranges (clamped, 416 when empty),
//! preconditions (304 / 412 in S3's order), ETags (hex MD5 for one PUT, `md5-of-part-md5s-N`
//! for parts), last-modified at whole seconds, and listings by prefix with a delimiter and
//! continuation. Faults are injected on demand: fail the next calls, hold calls until released
//! (a hung S3), or cut the next bodies after some bytes (a connection dropped mid-download).
//!
//! Test-only (`cfg(test)`): it exists for the crate's unit tests, which are the only code that
//! can reach it, and it keeps a hashing, buffering toy out of the daemon's binary. Integration
//! tests drive the real daemon against SeaweedFS instead.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use super::{
    md5_of, multipart_etag, single_etag, Backend, Fetch, Fetched, GetOptions, ListRequest, Listed,
    Listing, PartLayout, Upload, Verdict,
};
use crate::store::{ByteStream, Key, ObjectMeta, StoreError};

/// Bodies are handed out in chunks of this size, so a cut can land mid-body.
const CHUNK: usize = 64 * 1024;

/// A cheap handle; clones share the objects and the faults.
#[derive(Clone)]
pub struct FakeBackend {
    inner: Arc<Inner>,
}

struct Inner {
    part_size: u64,
    state: Mutex<State>,
    /// True while calls are held (a hung backend); they proceed once it turns false.
    held: watch::Sender<bool>,
    /// True while a stalled body waits (a slow S3 connection); it goes on once it turns false.
    stalled: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    /// By namespace, then name: a listing is one range scan.
    objects: BTreeMap<(String, String), Stored>,
    calls: HashMap<&'static str, usize>,
    fail_next: u32,
    /// Cut this many more bodies, each after this many bytes.
    cuts: Option<(u32, u64)>,
    /// Stall the next body after this many bytes.
    stall: Option<u64>,
    /// The span of every body handed out by a get, in order.
    spans: Vec<std::ops::Range<u64>>,
}

#[derive(Clone)]
struct Stored {
    data: Bytes,
    meta: ObjectMeta,
    parts: Vec<u64>,
}

impl Default for FakeBackend {
    fn default() -> Self {
        FakeBackend::new(5 * 1024 * 1024)
    }
}

impl FakeBackend {
    /// A backend that splits an upload with [`PartLayout::Auto`] into parts of `part_size`.
    pub fn new(part_size: u64) -> FakeBackend {
        FakeBackend {
            inner: Arc::new(Inner {
                part_size,
                state: Mutex::new(State::default()),
                held: watch::channel(false).0,
                stalled: watch::channel(false).0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap()
    }

    /// Stores an object as one PUT of `data` would, modified now.
    pub fn insert(&self, key: &Key, data: impl Into<Bytes>) {
        let data = data.into();
        let len = data.len() as u64;
        let etag = single_etag(&data);
        self.store(key, data, etag, vec![len], None, Default::default());
    }

    fn store(
        &self,
        key: &Key,
        data: Bytes,
        etag: String,
        parts: Vec<u64>,
        crc32c: Option<u32>,
        attrs: crate::store::ObjectAttrs,
    ) {
        let mut meta = ObjectMeta::new(data.len() as u64, now_whole_seconds(), crc32c);
        meta.etag = Some(etag);
        meta.attrs = attrs;
        self.lock()
            .objects
            .insert(path(key), Stored { data, meta, parts });
    }

    /// The object's bytes, if it exists.
    pub fn object(&self, key: &Key) -> Option<Bytes> {
        self.lock().objects.get(&path(key)).map(|s| s.data.clone())
    }

    /// The object's metadata, if it exists.
    pub fn meta(&self, key: &Key) -> Option<ObjectMeta> {
        self.lock().objects.get(&path(key)).map(|s| s.meta.clone())
    }

    /// The part sizes the object was uploaded with.
    pub fn parts(&self, key: &Key) -> Option<Vec<u64>> {
        self.lock().objects.get(&path(key)).map(|s| s.parts.clone())
    }

    /// Sets the object's last-modified time.
    pub fn set_modified(&self, key: &Key, modified: SystemTime) {
        if let Some(stored) = self.lock().objects.get_mut(&path(key)) {
            stored.meta.modified = modified;
        }
    }

    /// Calls of `op` ("get", "head", "put", "delete", "list") so far, failed ones included.
    pub fn calls(&self, op: &str) -> usize {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    /// The next `n` calls, of any kind, fail as an unreachable S3 would.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// Holds every call (counted, not answered) until `hold(false)`: a hung backend.
    pub fn hold(&self, held: bool) {
        self.inner.held.send_replace(held);
    }

    /// The span of the object each get answered with a body, in order: whether a read was a
    /// ranged GET or a whole download.
    pub fn served_spans(&self) -> Vec<std::ops::Range<u64>> {
        self.lock().spans.clone()
    }

    /// The next `count` bodies fail after `after` bytes, as when a connection drops.
    pub fn cut_bodies(&self, count: u32, after: u64) {
        self.lock().cuts = (count > 0).then_some((count, after));
    }

    /// The next body stops after `after` bytes (rounded up to a chunk) until
    /// [`FakeBackend::release_stalls`]: a connection that went slow.
    pub fn stall_next_body(&self, after: u64) {
        self.lock().stall = Some(after);
        self.inner.stalled.send_replace(true);
    }

    /// Lets stalled bodies go on.
    pub fn release_stalls(&self) {
        self.inner.stalled.send_replace(false);
    }

    /// Counts a call, waits while calls are held, then applies an injected failure.
    async fn call(&self, op: &'static str) -> Result<(), StoreError> {
        *self.lock().calls.entry(op).or_default() += 1;
        let mut held = self.inner.held.subscribe();
        let _ = held.wait_for(|held| !held).await;
        let mut state = self.lock();
        if state.fail_next > 0 {
            state.fail_next -= 1;
            return Err(StoreError::Remote(format!("injected failure of {op}")));
        }
        Ok(())
    }

    /// The next body's cut point, if one is due.
    fn take_cut(&self) -> Option<u64> {
        let mut state = self.lock();
        let (count, after) = state.cuts?;
        state.cuts = (count > 1).then_some((count - 1, after));
        Some(after)
    }
}

fn path(key: &Key) -> (String, String) {
    (key.namespace().as_str().to_string(), key.name().to_string())
}

fn now_whole_seconds() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `data` as a body of [`CHUNK`]-sized chunks that fails after `cut` bytes, if given, and
/// pauses after `stall.0` bytes until `stall.1` turns false, if given.
fn body(data: Bytes, cut: Option<u64>, stall: Option<(u64, watch::Receiver<bool>)>) -> ByteStream {
    use futures_util::StreamExt;
    let end = cut.map_or(data.len(), |c| (c as usize).min(data.len()));
    let mut items: Vec<io::Result<Bytes>> = (0..end)
        .step_by(CHUNK)
        .map(|at| Ok(data.slice(at..(at + CHUNK).min(end))))
        .collect();
    if cut.is_some() {
        items.push(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "injected cut",
        )));
    }
    let Some((after, mut stalled)) = stall else {
        return Box::pin(futures_util::stream::iter(items));
    };
    let rest = items.split_off((after as usize).div_ceil(CHUNK).min(items.len()));
    let pause = futures_util::stream::once(async move {
        let _ = stalled.wait_for(|stalled| !stalled).await;
    })
    .filter_map(|()| async { None });
    Box::pin(
        futures_util::stream::iter(items)
            .chain(pause)
            .chain(futures_util::stream::iter(rest)),
    )
}

impl Backend for FakeBackend {
    type Streamed = super::NoStreaming;

    async fn begin_put(&self, _body: super::Growing) -> Option<super::NoStreaming> {
        None
    }

    async fn get(&self, key: &Key, options: &GetOptions) -> Result<Fetch, StoreError> {
        self.call("get").await?;
        let Some(stored) = self.lock().objects.get(&path(key)).cloned() else {
            return Ok(Fetch::Missing);
        };
        match options
            .conditions
            .evaluate(stored.meta.etag.as_deref(), stored.meta.modified)
        {
            Verdict::Serve => {}
            Verdict::NotModified => return Ok(Fetch::NotModified),
            Verdict::PreconditionFailed => return Ok(Fetch::PreconditionFailed),
        }
        let len = stored.meta.len;
        let span = match options.range {
            None => 0..len,
            Some(range) => match range.resolve(len) {
                Some(span) => span,
                None => return Ok(Fetch::RangeNotSatisfiable),
            },
        };
        let data = stored.data.slice(span.start as usize..span.end as usize);
        let stall = {
            let mut state = self.lock();
            state.spans.push(span.clone());
            state.stall.take()
        };
        let stall = stall.map(|after| (after, self.inner.stalled.subscribe()));
        Ok(Fetch::Found(Fetched {
            meta: stored.meta,
            span,
            body: body(data, self.take_cut(), stall),
        }))
    }

    async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, StoreError> {
        self.call("head").await?;
        Ok(self.meta(key))
    }

    async fn put(&self, upload: &Upload) -> Result<Option<String>, StoreError> {
        self.call("put").await?;
        let sizes = match &upload.parts {
            PartLayout::Auto => PartLayout::uniform(upload.len, self.inner.part_size),
            PartLayout::Sizes(sizes) => sizes.clone(),
        };
        if sizes.iter().sum::<u64>() != upload.len {
            return Err(StoreError::Remote(format!(
                "parts {sizes:?} do not add up to {} bytes",
                upload.len
            )));
        }
        let (file, offset, len) = (upload.file.clone(), upload.offset, upload.len);
        let data = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset)?;
            io::Result::Ok(Bytes::from(buf))
        })
        .await
        .map_err(io::Error::other)??;
        let etag = if sizes.len() == 1 {
            single_etag(&data)
        } else {
            let mut at = 0usize;
            let md5s: Vec<[u8; 16]> = sizes
                .iter()
                .map(|&size| {
                    let part = &data[at..at + size as usize];
                    at += size as usize;
                    md5_of(part)
                })
                .collect();
            multipart_etag(&md5s)
        };
        self.store(
            &upload.key,
            data,
            etag.clone(),
            sizes,
            upload.crc32c,
            upload.attrs.clone(),
        );
        Ok(Some(etag))
    }

    async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        self.call("delete").await?;
        self.lock().objects.remove(&path(key));
        Ok(())
    }

    async fn list(&self, request: &ListRequest) -> Result<Listing, StoreError> {
        self.call("list").await?;
        let state = self.lock();
        let ns = request.namespace.as_str().to_string();
        let start = (ns.clone(), request.prefix.clone());
        let delimiter = request.delimiter.as_deref().filter(|d| !d.is_empty());
        // A continuation is the last name or common prefix of the previous page: like
        // `start_after`, everything up to it (rolled up, so a prefix's names too) is skipped.
        let cursor = request
            .continuation
            .as_deref()
            .or(request.start_after.as_deref());
        let mut page = Listing::default();
        let mut emitted = 0usize;
        let mut last: Option<String> = None;
        for ((object_ns, name), stored) in state.objects.range(start..) {
            if *object_ns != ns || !name.starts_with(&request.prefix) {
                break;
            }
            let rest = &name[request.prefix.len()..];
            let common = delimiter.and_then(|d| {
                rest.find(d)
                    .map(|at| format!("{}{}", request.prefix, &rest[..at + d.len()]))
            });
            if cursor.is_some_and(|c| common.as_deref().unwrap_or(name) <= c) {
                continue;
            }
            if common.is_some() && common == last {
                continue;
            }
            if emitted == request.max_keys {
                page.next = last;
                break;
            }
            emitted += 1;
            match common {
                Some(prefix) => {
                    page.common_prefixes.push(prefix.clone());
                    last = Some(prefix);
                }
                None => {
                    page.objects.push(Listed {
                        name: name.clone(),
                        len: stored.meta.len,
                        etag: stored.meta.etag.clone(),
                        modified: stored.meta.modified,
                    });
                    last = Some(name.clone());
                }
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::{ByteRange, Conditions};
    use crate::store::body::read_exact;
    use crate::store::Namespace;
    use std::io::Write;

    fn ns() -> Namespace {
        Namespace::new("bucket").unwrap()
    }

    fn key(name: &str) -> Key {
        Key::object(ns(), name).unwrap()
    }

    async fn fetch(backend: &FakeBackend, key: &Key, options: GetOptions) -> Fetch {
        backend.get(key, &options).await.unwrap()
    }

    async fn found(fetch: Fetch) -> (ObjectMeta, std::ops::Range<u64>, Bytes) {
        let Fetch::Found(f) = fetch else {
            panic!("expected an object");
        };
        let len = f.span.end - f.span.start;
        (f.meta, f.span, read_exact(f.body, len).await.unwrap())
    }

    fn ranged(range: ByteRange) -> GetOptions {
        GetOptions {
            range: Some(range),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn ranges_serve_the_asked_bytes_and_the_whole_objects_meta() {
        let backend = FakeBackend::default();
        let k = key("a");
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        backend.insert(&k, data.clone());
        let (meta, span, got) = found(
            fetch(
                &backend,
                &k,
                ranged(ByteRange::Bounded {
                    first: 70_000,
                    last: 140_000,
                }),
            )
            .await,
        )
        .await;
        assert_eq!(meta.len, 200_000);
        assert_eq!(span, 70_000..140_001);
        assert_eq!(&got[..], &data[70_000..140_001]);
        let (_, span, got) = found(fetch(&backend, &k, ranged(ByteRange::Suffix(10))).await).await;
        assert_eq!(span, 199_990..200_000);
        assert_eq!(&got[..], &data[199_990..]);
        assert!(matches!(
            fetch(&backend, &k, ranged(ByteRange::From(200_000))).await,
            Fetch::RangeNotSatisfiable
        ));
        assert!(matches!(
            fetch(&backend, &key("none"), GetOptions::default()).await,
            Fetch::Missing
        ));
    }

    #[tokio::test]
    async fn conditions_answer_304_and_412() {
        let backend = FakeBackend::default();
        let k = key("a");
        backend.insert(&k, &b"hello"[..]);
        let etag = backend.meta(&k).unwrap().etag.unwrap();
        assert_eq!(etag, "5d41402abc4b2a76b9719d911017c592");
        let with = |conditions| GetOptions {
            range: None,
            conditions,
        };
        assert!(matches!(
            fetch(
                &backend,
                &k,
                with(Conditions {
                    if_none_match: Some(format!("\"{etag}\"")),
                    ..Default::default()
                })
            )
            .await,
            Fetch::NotModified
        ));
        assert!(matches!(
            fetch(&backend, &k, with(Conditions::if_match("stale"))).await,
            Fetch::PreconditionFailed
        ));
        // A precondition is decided before the range: a 412 even for an unsatisfiable range.
        let mut both = with(Conditions::if_match("stale"));
        both.range = Some(ByteRange::From(100));
        assert!(matches!(
            fetch(&backend, &k, both).await,
            Fetch::PreconditionFailed
        ));
        let (_, _, got) = found(fetch(&backend, &k, with(Conditions::if_match(&etag))).await).await;
        assert_eq!(&got[..], b"hello");
        let modified = backend.meta(&k).unwrap().modified;
        assert!(matches!(
            fetch(
                &backend,
                &k,
                with(Conditions {
                    if_modified_since: Some(modified),
                    ..Default::default()
                })
            )
            .await,
            Fetch::NotModified
        ));
    }

    fn file_with(data: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"HEADER").unwrap();
        file.write_all(data).unwrap();
        file
    }

    #[tokio::test]
    async fn puts_read_the_file_region_and_get_s3s_etags() {
        let backend = FakeBackend::new(4);
        let data = b"0123456789";
        let file = file_with(data);
        let upload = |name: &str, parts| Upload {
            key: key(name),
            file: std::sync::Arc::new(file.reopen().unwrap()),
            offset: 6,
            len: 10,
            crc32c: Some(7),
            attrs: Default::default(),
            parts,
        };
        let single = backend
            .put(&upload("one", PartLayout::Sizes(vec![10])))
            .await
            .unwrap();
        assert_eq!(single.as_deref(), Some(single_etag(data).as_str()));
        assert_eq!(backend.object(&key("one")).unwrap(), &data[..]);
        assert_eq!(backend.meta(&key("one")).unwrap().crc32c, Some(7));

        let split = backend
            .put(&upload("parts", PartLayout::Sizes(vec![3, 7])))
            .await
            .unwrap()
            .unwrap();
        let expected = multipart_etag(&[md5_of(b"012"), md5_of(b"3456789")]);
        assert_eq!(split, expected);
        assert!(split.ends_with("-2"));

        // Auto: the backend's part size (4 here).
        let auto = backend
            .put(&upload("auto", PartLayout::Auto))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(backend.parts(&key("auto")).unwrap(), vec![4, 4, 2]);
        assert!(auto.ends_with("-3"));
        assert!(backend
            .put(&upload("bad", PartLayout::Sizes(vec![3, 3])))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn listing_rolls_up_by_delimiter_and_continues() {
        let backend = FakeBackend::default();
        for name in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"] {
            backend.insert(&key(name), &b"x"[..]);
        }
        backend.insert(
            &Key::object(Namespace::new("other").unwrap(), "a/0").unwrap(),
            &b"x"[..],
        );
        let request = |prefix: &str, delimiter: Option<&str>, continuation, max_keys| ListRequest {
            namespace: ns(),
            prefix: prefix.into(),
            delimiter: delimiter.map(str::to_string),
            continuation,
            start_after: None,
            max_keys,
        };
        let names = |page: &Listing| {
            page.objects
                .iter()
                .map(|o| o.name.clone())
                .collect::<Vec<_>>()
        };

        let all = backend.list(&request("", None, None, 100)).await.unwrap();
        assert_eq!(names(&all), ["a/1", "a/2", "b", "c/x/1", "c/y", "d"]);
        assert_eq!(all.next, None);

        // Pages of two with a delimiter: a common prefix counts as one and is never repeated.
        let mut seen_objects = Vec::new();
        let mut seen_prefixes = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = backend
                .list(&request("", Some("/"), token, 2))
                .await
                .unwrap();
            pages += 1;
            assert!(page.objects.len() + page.common_prefixes.len() <= 2);
            seen_objects.extend(names(&page));
            seen_prefixes.extend(page.common_prefixes.clone());
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen_prefixes, ["a/", "c/"]);
        assert_eq!(seen_objects, ["b", "d"]);
        assert_eq!(pages, 2);

        let under_c = backend
            .list(&request("c/", Some("/"), None, 100))
            .await
            .unwrap();
        assert_eq!(names(&under_c), ["c/y"]);
        let after = backend
            .list(&ListRequest {
                start_after: Some("a/".into()),
                ..request("", Some("/"), None, 100)
            })
            .await
            .unwrap();
        assert_eq!(names(&after), ["b", "d"]);
        assert_eq!(
            after.common_prefixes,
            ["c/"],
            "a/ and what it rolls up are skipped"
        );
        assert_eq!(under_c.common_prefixes, ["c/x/"]);
        assert_eq!(under_c.objects[0].len, 1);
        assert_eq!(
            under_c.objects[0].etag.as_deref(),
            Some(single_etag(b"x").as_str())
        );
    }

    #[tokio::test]
    async fn faults_fail_hold_and_cut() {
        let backend = FakeBackend::default();
        let k = key("a");
        let data = vec![5u8; 300_000];
        backend.insert(&k, data.clone());

        backend.fail_next(2);
        assert!(backend.head(&k).await.is_err());
        assert!(backend.get(&k, &GetOptions::default()).await.is_err());
        assert!(backend.head(&k).await.unwrap().is_some());

        backend.cut_bodies(1, 100_000);
        let Fetch::Found(cut) = fetch(&backend, &k, GetOptions::default()).await else {
            panic!("expected an object");
        };
        assert!(matches!(
            read_exact(cut.body, 300_000).await,
            Err(StoreError::BodyAborted(_))
        ));
        let (_, _, whole) = found(fetch(&backend, &k, GetOptions::default()).await).await;
        assert_eq!(whole.len(), 300_000, "only one body was cut");

        backend.hold(true);
        let pending = tokio::spawn({
            let backend = backend.clone();
            let k = k.clone();
            async move { backend.head(&k).await.unwrap().is_some() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pending.is_finished(), "a held call waits");
        assert_eq!(backend.calls("head"), 3);
        backend.hold(false);
        assert!(pending.await.unwrap());
    }
}
