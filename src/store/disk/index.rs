//! The in-memory index of the disk tier: entry sizes, recency, pins, the space accounting, and
//! the order of changes to each key. Every method runs under the tier's mutex and does only
//! quick work (at most an unlink).
//!
//! # Change order
//!
//! A fill copies an object from the backend into the disk tier; it must not commit over anything
//! that happened to the key after it asked the backend: a client's write (newer than the bytes
//! the fill got) or a delete (the fill would bring the key back). So every change to a key (a
//! commit, a delete, an entry leaving the index) takes the next number of one clock, and a fill
//! takes a [`FillOrder`] from the same clock when it starts. At its commit the fill compares:
//! if the key's last change is newer, the fill is dropped; otherwise it may replace what is
//! there (a stale copy being refilled).
//!
//! A key with an entry keeps its last change in the entry. A key without one keeps it in a
//! tombstone, but only while a fill that started before that change is still running: with no
//! such fill, nobody can ask. So tombstones cost memory only for the removals made during the
//! oldest running fill.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::ops::Bound;
use std::path::Path;

use lru::LruCache;

use super::{entry_path, is_hex_name, DiskSettings, DiskTier, DiskUsage};
use crate::store::entry_file::EntryHeader;
use crate::store::{Key, Namespace, StoreError};

#[derive(Debug, Clone, Copy)]
struct EntryInfo {
    /// File bytes (header + body): what counts against the bound.
    size: u64,
    /// Not evictable: the entry has not reached the shared tier yet.
    pinned: bool,
    /// When the entry was committed, on the change clock (0: found at start-up).
    changed: u64,
}

/// Which write of a key an entry is: the number its commit took on the change clock. Every
/// commit of a key takes a new, larger number, and an entry that leaves the index takes its
/// number with it, so "the entry is still at version v" is one comparison. Memory copies,
/// uploads and unpins are tied to the version they were made from (see `docs/coherence.md`).
/// Entries found at start-up are all at version 0 (a key has at most one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u64);

/// Where a fill stands on the change clock: it may commit only over changes older than this.
/// Taken with [`Index::begin_fill`]; valid while the fill is registered (see
/// [`super::FillTicket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FillOrder(u64);

pub struct Index {
    lru: LruCache<Key, EntryInfo>,
    /// The same keys in order, for listings.
    names: BTreeSet<Key>,
    max_size: u64,
    used: u64,
    /// Space held by writes in progress for bytes they have received.
    reserved: u64,
    /// Space writes in progress declared but have not received yet: counted when a write is
    /// admitted, never evicted for.
    promised: u64,
    evictions: u64,
    pinned_bytes: u64,
    pinned_entries: u64,
    /// The change clock: the number of the last change to any key.
    clock: u64,
    /// The running fills' orders, with how many fills hold each.
    fills: BTreeMap<u64, usize>,
    /// The last change of keys without an entry, while a fill older than it may run.
    tombstones: HashMap<Key, u64>,
    /// The same tombstones in the order they were made, for pruning from the oldest.
    tombstone_order: VecDeque<(u64, Key)>,
}

impl Index {
    fn new(max_size: u64) -> Index {
        Index {
            lru: LruCache::unbounded(),
            names: BTreeSet::new(),
            max_size,
            used: 0,
            reserved: 0,
            promised: 0,
            evictions: 0,
            pinned_bytes: 0,
            pinned_entries: 0,
            clock: 0,
            fills: BTreeMap::new(),
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
        }
    }

    /// The version of the key's entry, if it has one.
    pub fn version(&self, key: &Key) -> Option<Version> {
        self.lru.peek(key).map(|info| Version(info.changed))
    }

    /// [`Index::version`], marking a read (the entry becomes the most recently used).
    pub fn touch_version(&mut self, key: &Key) -> Option<Version> {
        self.lru.get(key).map(|info| Version(info.changed))
    }

    /// Registers a fill of some key starting now; pair with [`Index::end_fill`].
    pub fn begin_fill(&mut self) -> FillOrder {
        *self.fills.entry(self.clock).or_default() += 1;
        FillOrder(self.clock)
    }

    /// Unregisters a fill, and drops the tombstones no running fill can ask about any more.
    pub fn end_fill(&mut self, order: FillOrder) {
        if let Some(count) = self.fills.get_mut(&order.0) {
            *count -= 1;
            if *count == 0 {
                self.fills.remove(&order.0);
            }
        }
        let oldest = self.fills.keys().next().copied().unwrap_or(u64::MAX);
        while let Some((changed, _)) = self.tombstone_order.front() {
            if *changed > oldest {
                break;
            }
            let (changed, key) = self.tombstone_order.pop_front().expect("just seen");
            if self.tombstones.get(&key) == Some(&changed) {
                self.tombstones.remove(&key);
            }
        }
    }

    /// Whether anything happened to `key` after a fill took `order`.
    pub fn changed_since(&self, key: &Key, order: FillOrder) -> bool {
        let last = match self.lru.peek(key) {
            Some(info) => info.changed,
            None => self.tombstones.get(key).copied().unwrap_or(0),
        };
        last > order.0
    }

    /// The key's entry was removed, or the key deleted, at change `changed`: remember it if a
    /// running fill is older.
    fn remember_removal(&mut self, key: &Key, changed: u64) {
        let oldest = self.fills.keys().next().copied().unwrap_or(u64::MAX);
        if changed > oldest {
            self.tombstones.insert(key.clone(), changed);
            self.tombstone_order.push_back((changed, key.clone()));
        }
    }

    /// A client deleted the key: drops its entry (if any) and records the delete as a change,
    /// so that no fill started before it commits. Returns whether there was an entry.
    pub fn delete(&mut self, key: &Key) -> bool {
        let known = self.lru.contains(key);
        self.forget(key);
        self.clock += 1;
        self.remember_removal(key, self.clock);
        known
    }

    /// Tombstones held now (tests check that they do not outlive the fills).
    #[cfg(test)]
    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    pub fn usage(&self) -> DiskUsage {
        DiskUsage {
            bytes: self.used,
            entries: self.lru.len() as u64,
            evictions: self.evictions,
            pinned_bytes: self.pinned_bytes,
            pinned_entries: self.pinned_entries,
        }
    }

    /// The first name of `namespace` within `from` (in name order).
    pub fn first_name(&self, namespace: &Namespace, from: Bound<&str>) -> Option<String> {
        let from = match from {
            Bound::Included(name) => Bound::Included(Key::position(namespace, name)),
            Bound::Excluded(name) => Bound::Excluded(Key::position(namespace, name)),
            Bound::Unbounded => Bound::Included(Key::position(namespace, "")),
        };
        self.names
            .range((from, Bound::Unbounded))
            .next()
            .filter(|key| key.namespace() == namespace)
            .map(|key| key.name().to_string())
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.lru.contains(key)
    }

    /// Marks a read: the entry becomes the most recently used.
    pub fn touch(&mut self, key: &Key) -> bool {
        self.lru.get(key).is_some()
    }

    /// Admits a write of `bytes` (file bytes) if it could ever fit, counting what no eviction
    /// can free: pinned entries and every other write in progress, received or only declared.
    /// Nothing is evicted here; the space is only promised, and taken with [`Index::reserve`]
    /// as the bytes arrive, so a client that declares a large body and then trickles (or
    /// never sends it) costs the cache no entries.
    pub fn admit(&mut self, bytes: u64, settings: &DiskSettings) -> Result<(), StoreError> {
        self.check_fits(bytes, settings)?;
        self.promised += bytes;
        Ok(())
    }

    /// Whether a write of `bytes` could fit now (see [`Index::admit`]), promising nothing: for
    /// a write that takes its space only as its bytes arrive, and is given up when they don't
    /// fit (an optional copy).
    pub fn check_fits(&self, bytes: u64, settings: &DiskSettings) -> Result<(), StoreError> {
        let committed = self.pinned_bytes + self.reserved + self.promised;
        if committed.saturating_add(bytes) > self.max_size {
            return Err(StoreError::Full { needed: bytes });
        }
        if settings.min_free > 0 {
            // The floor: what is free now plus what eviction could free must cover the floor,
            // the writes in progress and this one.
            let evictable = self.used - self.pinned_bytes;
            let possible = available_bytes(&settings.dir)? + evictable;
            if possible < settings.min_free + self.reserved + self.promised + bytes {
                return Err(StoreError::Full { needed: bytes });
            }
        }
        Ok(())
    }

    /// Reserves `bytes` for a write in progress, `from_promise` of them out of its promise,
    /// evicting least recently used unpinned entries until the entries fit under `max_size`
    /// and the filesystem keeps `min_free` bytes available. On failure the promise stays as it
    /// was.
    pub fn reserve(
        &mut self,
        bytes: u64,
        from_promise: u64,
        settings: &DiskSettings,
    ) -> Result<(), StoreError> {
        self.promised -= from_promise;
        match self.make_room(bytes, settings) {
            Ok(()) => {
                self.reserved += bytes;
                Ok(())
            }
            Err(e) => {
                self.promised += from_promise;
                Err(e)
            }
        }
    }

    fn make_room(&mut self, bytes: u64, settings: &DiskSettings) -> Result<(), StoreError> {
        // Free space is read once; each eviction adds the victim's size back. Bytes reserved by
        // writes in progress count as not written yet, which errs towards more free space.
        let mut available = match settings.min_free {
            0 => None,
            _ => Some(available_bytes(&settings.dir)?),
        };
        loop {
            let over_bound = self.used + self.reserved + bytes > self.max_size;
            let under_floor =
                available.is_some_and(|free| free < settings.min_free + self.reserved + bytes);
            if !over_bound && !under_floor {
                return Ok(());
            }
            let victim = self
                .lru
                .iter()
                .rev()
                .find(|(_, info)| !info.pinned)
                .map(|(key, info)| (key.clone(), info.size));
            let Some((victim, size)) = victim else {
                return Err(StoreError::Full { needed: bytes });
            };
            match std::fs::remove_file(entry_path(&settings.dir, &victim)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            self.forget(&victim);
            self.evictions += 1;
            if let Some(free) = available.as_mut() {
                *free += size;
            }
        }
    }

    /// Gives back a write's reserved and promised space (the write failed or was dropped).
    pub fn release(&mut self, reserved: u64, promised: u64) {
        self.reserved -= reserved;
        self.promised -= promised;
    }

    /// Whether the key's entry is pinned (waiting for the shared tier).
    pub fn is_pinned(&self, key: &Key) -> bool {
        self.lru.peek(key).is_some_and(|info| info.pinned)
    }

    /// Records a file renamed into place, converting its reservation into used space. The
    /// commit is the key's newest change; returns the entry's version.
    pub fn commit(&mut self, key: &Key, bytes: u64, pinned: bool) -> Version {
        self.reserved -= bytes;
        // A replaced entry that was still waiting for upload stays pinned: its successor is
        // what the upload will read now.
        let was_pinned = self.forget(key);
        self.clock += 1;
        self.tombstones.remove(key);
        self.insert(key.clone(), bytes, pinned || was_pinned, self.clock);
        Version(self.clock)
    }

    fn insert(&mut self, key: Key, size: u64, pinned: bool, changed: u64) {
        self.used += size;
        if pinned {
            self.pinned_bytes += size;
            self.pinned_entries += 1;
        }
        self.names.insert(key.clone());
        self.lru.put(
            key,
            EntryInfo {
                size,
                pinned,
                changed,
            },
        );
    }

    /// Drops a key from the index; returns whether it was pinned. An entry newer than a
    /// running fill leaves a tombstone with its change, so that the fill still sees it (an
    /// evicted client write must not let an older fill in).
    pub fn forget(&mut self, key: &Key) -> bool {
        match self.lru.pop(key) {
            Some(info) => {
                self.names.remove(key);
                self.used -= info.size;
                if info.pinned {
                    self.pinned_bytes -= info.size;
                    self.pinned_entries -= 1;
                }
                self.remember_removal(key, info.changed);
                info.pinned
            }
            None => false,
        }
    }

    /// Pins or unpins the key's entry if it is at `version` (any version when `None`); returns
    /// whether it was. An upload unpins only the version it uploaded: a newer write of the key
    /// has not reached the shared tier yet.
    pub fn set_pinned(&mut self, key: &Key, version: Option<Version>, pinned: bool) -> bool {
        let Some(info) = self.lru.peek_mut(key) else {
            return false;
        };
        if version.is_some_and(|v| v.0 != info.changed) {
            return false;
        }
        if info.pinned != pinned {
            info.pinned = pinned;
            if pinned {
                self.pinned_bytes += info.size;
                self.pinned_entries += 1;
            } else {
                self.pinned_bytes -= info.size;
                self.pinned_entries -= 1;
            }
        }
        true
    }
}

/// The space of one write in progress: what it reserved for bytes received and what it was
/// promised for the rest, or (for a write admitted as its bytes arrive) what it may still
/// reserve without a promise. Released on drop unless the write commits.
pub struct Reservation {
    disk: Option<DiskTier>,
    reserved: u64,
    promised: u64,
    unpromised: u64,
}

impl Reservation {
    /// Admit with [`Index::admit`] first; this only arranges the release.
    pub fn admitted(disk: DiskTier, bytes: u64) -> Reservation {
        Reservation {
            disk: Some(disk),
            reserved: 0,
            promised: bytes,
            unpromised: 0,
        }
    }

    /// A write of up to `bytes` with no promise: each [`Reservation::grow`] takes its space
    /// then, or fails. Check with [`Index::check_fits`] first.
    pub fn as_bytes_arrive(disk: DiskTier, bytes: u64) -> Reservation {
        Reservation {
            disk: Some(disk),
            reserved: 0,
            promised: 0,
            unpromised: bytes,
        }
    }

    /// Space reserved so far.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Reserves up to `bytes` more (of the promise, or of what may be taken unpromised),
    /// evicting as needed. Takes the index lock itself and lets it go before returning, so a
    /// failure can drop the reservation at once.
    pub fn grow(&mut self, bytes: u64) -> Result<(), StoreError> {
        let disk = self
            .disk
            .as_ref()
            .expect("a reservation grows only before its commit");
        let from_promise = bytes.min(self.promised);
        let unpromised = (bytes - from_promise).min(self.unpromised);
        let bytes = from_promise + unpromised;
        disk.lock()
            .reserve(bytes, from_promise, &disk.inner.settings)?;
        self.promised -= from_promise;
        self.unpromised -= unpromised;
        self.reserved += bytes;
        Ok(())
    }

    /// Bounds a write of up to some bytes, now known to be `total` in all: what was reserved
    /// beyond `total` goes back, and no more than `total` can be reserved.
    pub fn end_at(&mut self, total: u64) {
        let surplus = self.reserved.saturating_sub(total);
        let left = total.saturating_sub(self.reserved);
        let promise_dropped = self.promised.saturating_sub(left);
        if surplus + promise_dropped > 0 {
            if let Some(disk) = &self.disk {
                disk.lock().release(surplus, promise_dropped);
            }
        }
        self.reserved -= surplus;
        self.promised -= promise_dropped;
        self.unpromised = self.unpromised.min(left - self.promised);
    }

    /// Hands the bytes over to a commit, which needs all its bytes reserved; call with the
    /// index lock held.
    pub fn take(mut self) -> u64 {
        debug_assert_eq!(
            self.promised + self.unpromised,
            0,
            "a commit reserves all its bytes first"
        );
        self.disk = None;
        self.reserved
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(disk) = self.disk.take() {
            disk.lock().release(self.reserved, self.promised);
        }
    }
}

/// Rebuilds the index from the entry files under `dir`, oldest modification first so the
/// most recently written entries are the last to be evicted. Only what has the shape of our
/// layout is looked at (`<namespace>/<2 hex>/<64 hex>`); such a file that is not a complete,
/// sealed entry at its expected path is removed, anything else is left alone.
pub fn rebuild(dir: &Path, max_size: u64) -> io::Result<Index> {
    let mut found = Vec::new();
    for ns_dir in std::fs::read_dir(dir)? {
        let ns_dir = ns_dir?;
        let name = ns_dir.file_name();
        // Only namespaces: `tmp` (unfinished writes) and dot-directories (`.queue`) are reserved
        // names no namespace can take.
        let is_namespace = name.to_str().is_some_and(|n| Namespace::parse(n).is_ok());
        if !ns_dir.file_type()?.is_dir() || !is_namespace {
            continue;
        }
        for shard in std::fs::read_dir(ns_dir.path())? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() || !is_hex_name(&shard.file_name(), 2) {
                continue;
            }
            for file in std::fs::read_dir(shard.path())? {
                let file = file?;
                if !is_hex_name(&file.file_name(), 64) {
                    tracing::warn!(path = %file.path().display(), "not an entry file; left alone");
                    continue;
                }
                let path = file.path();
                match check_entry_file(dir, &path) {
                    Ok(Some(entry)) => found.push(entry),
                    Ok(None) | Err(_) => {
                        tracing::warn!(path = %path.display(), "removing invalid entry file");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
    }
    found.sort_by_key(|(modified, _, _)| *modified);
    let mut index = Index::new(max_size);
    for (_, key, size) in found {
        index.insert(key, size, false, 0);
    }
    Ok(index)
}

fn check_entry_file(
    dir: &Path,
    path: &Path,
) -> io::Result<Option<(std::time::SystemTime, Key, u64)>> {
    let mut file = std::fs::File::open(path)?;
    let header = EntryHeader::read_from(&mut file)?;
    let metadata = file.metadata()?;
    let size = metadata.len();
    let consistent = size == header.file_len() && entry_path(dir, &header.key) == path;
    // Recency is when the file was written here, not the object's date (a copy filled from
    // S3 carries S3's, which may be old).
    let written = metadata.modified()?;
    Ok(consistent.then_some((written, header.key, size)))
}

/// Bytes an unprivileged writer can still use on the filesystem holding `dir`.
fn available_bytes(dir: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}
