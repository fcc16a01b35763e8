//! Caps on what clients hold at once: connections per listener and per client address, and
//! request bodies being stored. Each cap hands out a permit that gives its slot back on drop,
//! so a connection or upload that ends in any way (answered, failed, cut off, cancelled) frees
//! what it took.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use prometheus::IntGauge;

/// Why a slot was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The cap for everyone is reached.
    Total,
    /// This client address holds its share already.
    PerPeer,
}

impl Refusal {
    /// The `reason` label of the refusal metrics: the name of the limit in `[limits]`.
    pub fn as_str(self, what: Capped) -> &'static str {
        match (what, self) {
            (Capped::Connections, Refusal::Total) => "max_connections",
            (Capped::Connections, Refusal::PerPeer) => "max_connections_per_ip",
            (Capped::Uploads, Refusal::Total) => "max_uploads",
            (Capped::Uploads, Refusal::PerPeer) => "max_uploads_per_ip",
            (Capped::UploadBytes, _) => "max_upload_bytes_per_ip",
        }
    }
}

/// What a set of [`Slots`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capped {
    Connections,
    Uploads,
    /// The declared lengths of uploads in progress.
    UploadBytes,
}

/// A counted cap with a share per client address; cheap to clone. A slot has a weight (1 for a
/// connection or an upload, the declared length for upload bytes).
#[derive(Clone)]
pub struct Slots {
    inner: Arc<SlotsInner>,
}

struct SlotsInner {
    max: u64,
    per_peer: u64,
    gauge: IntGauge,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: u64,
    by_peer: HashMap<IpAddr, u64>,
}

impl Slots {
    /// `gauge` follows the weight held.
    pub fn new(max: u64, per_peer: u64, gauge: IntGauge) -> Slots {
        Slots {
            inner: Arc::new(SlotsInner {
                max,
                per_peer,
                gauge,
                held: Mutex::new(Held::default()),
            }),
        }
    }

    pub fn max(&self) -> u64 {
        self.inner.max
    }

    /// Takes a slot for `peer`, or says which cap is in the way.
    pub fn try_acquire(&self, peer: IpAddr) -> Result<Permit, Refusal> {
        self.try_acquire_weighted(peer, 1)
    }

    /// Takes a slot of `weight` for `peer`, or says which cap is in the way.
    pub fn try_acquire_weighted(&self, peer: IpAddr, weight: u64) -> Result<Permit, Refusal> {
        // An IPv4 client on a dual-stack socket must count as the same address either way.
        let peer = peer.to_canonical();
        let mut held = self.lock();
        if held.total.saturating_add(weight) > self.inner.max {
            return Err(Refusal::Total);
        }
        let mine = held.by_peer.entry(peer).or_insert(0);
        if mine.saturating_add(weight) > self.inner.per_peer {
            if *mine == 0 {
                held.by_peer.remove(&peer);
            }
            return Err(Refusal::PerPeer);
        }
        *mine += weight;
        held.total += weight;
        self.inner.gauge.add(weight as i64);
        Ok(Permit {
            slots: self.clone(),
            peer,
            weight,
        })
    }

    /// Weight held now.
    pub fn held(&self) -> u64 {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // Every update is a single step, so a poisoned lock still holds consistent counts.
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, peer: IpAddr, weight: u64) {
        let mut held = self.lock();
        held.total -= weight;
        if let Some(mine) = held.by_peer.get_mut(&peer) {
            *mine -= weight;
            if *mine == 0 {
                held.by_peer.remove(&peer);
            }
        }
        self.inner.gauge.sub(weight as i64);
    }
}

/// One held slot, given back on drop.
pub struct Permit {
    slots: Slots,
    peer: IpAddr,
    weight: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.slots.release(self.peer, self.weight);
    }
}

/// Raises the soft limit on open files to the hard limit (the kernel's default soft limit,
/// 1024, is far below what a node daemon with thousands of connections needs) and returns the
/// soft limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current.is_some_and(|soft| soft < hard) {
            limit.current = Some(hard);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
            }
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// File descriptors kept free of client connections: listeners, the log, S3 connections,
/// entry files being written and the write-back queue's markers.
pub const FD_RESERVE: u64 = 256;
/// Descriptors one cache connection can hold at once: its socket, an entry file it reads or
/// writes, and a temp file or S3 connection behind it.
pub const FDS_PER_CACHE_CONNECTION: u64 = 3;

/// The connection cap per cache listener that `fd_limit` can carry beside the admin listener's
/// own budget and [`FD_RESERVE`]: `wanted`, or less when the limit is too low.
pub fn connection_cap(wanted: usize, cache_listeners: usize, admin: usize, fd_limit: u64) -> usize {
    if cache_listeners == 0 {
        return wanted;
    }
    let budget = fd_limit
        .saturating_sub(FD_RESERVE)
        .saturating_sub(admin as u64);
    let affordable = budget / (FDS_PER_CACHE_CONNECTION * cache_listeners as u64);
    wanted.min(affordable.max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: u64, per_peer: u64) -> Slots {
        Slots::new(max, per_peer, IntGauge::new("t", "t").unwrap())
    }

    #[test]
    fn caps_total_and_per_peer_and_gives_slots_back() {
        let s = slots(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = s.try_acquire(a).unwrap();
        let _a2 = s.try_acquire(a).unwrap();
        assert_eq!(s.try_acquire(a).err(), Some(Refusal::PerPeer));
        let _b1 = s.try_acquire(b).unwrap();
        assert_eq!(s.try_acquire(b).err(), Some(Refusal::Total));
        drop(a1);
        assert_eq!(s.held(), 2);
        assert!(s.try_acquire(a).is_ok());
    }

    #[test]
    fn weighted_slots_cap_what_one_address_holds() {
        let s = slots(u64::MAX, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let big = s.try_acquire_weighted(a, 60).unwrap();
        assert_eq!(s.try_acquire_weighted(a, 41).err(), Some(Refusal::PerPeer));
        let small = s.try_acquire_weighted(a, 40).unwrap();
        assert!(s
            .try_acquire_weighted("10.0.0.2".parse().unwrap(), 100)
            .is_ok());
        drop((big, small));
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn ipv4_mapped_addresses_share_their_ipv4_share() {
        let s = slots(10, 1);
        let _v4 = s.try_acquire("10.0.0.1".parse().unwrap()).unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(s.try_acquire(mapped).err(), Some(Refusal::PerPeer));
    }

    #[test]
    fn connection_cap_fits_the_fd_limit() {
        assert_eq!(connection_cap(4096, 1, 64, 1_048_576), 4096);
        // 1024 - 256 reserve - 64 admin = 704 descriptors, 3 per connection.
        assert_eq!(connection_cap(4096, 1, 64, 1024), 234);
        assert_eq!(connection_cap(4096, 2, 64, 1024), 117);
        assert_eq!(connection_cap(4096, 1, 64, 100), 1);
    }
}
