//! One async lock per key, existing only while someone holds or waits for it: orders the few
//! steps of different requests on the same key that must not interleave (a write's commit and
//! queue marker against a delete's), without a lock per key kept forever or one for all keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use super::Key;

type Lock = Arc<tokio::sync::Mutex<()>>;

/// The locks of the keys in use.
#[derive(Default)]
pub struct KeyLocks {
    locks: Mutex<HashMap<Key, Lock>>,
}

/// Holds a key's lock (or a place in its queue while waiting); the key's entry goes when the
/// last holder or waiter does, cancelled waiters included.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: Key,
    lock: Option<Lock>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub async fn lock(&self, key: &Key) -> KeyGuard<'_> {
        let lock = self.map().entry(key.clone()).or_default().clone();
        // The guard exists before the wait, so a waiter dropped mid-wait still cleans up.
        let mut held = KeyGuard {
            locks: self,
            key: key.clone(),
            lock: Some(lock.clone()),
            guard: None,
        };
        held.guard = Some(lock.lock_owned().await);
        held
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Lock>> {
        // Every update is one map operation: a poisoned map is still consistent.
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.guard = None;
        self.lock = None;
        let mut map = self.locks.map();
        // Only the map's own reference left: nobody holds or waits for the key.
        if map
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::key;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_key_and_nothing_left_behind() {
        let locks = Arc::new(KeyLocks::default());
        let first = locks.lock(&key(1)).await;
        // Another key is not held up.
        drop(locks.lock(&key(2)).await);
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _held = locks.lock(&key(1)).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second holder waits");
        // A waiter cancelled mid-wait leaves nothing behind either.
        let cancelled = tokio::time::timeout(Duration::from_millis(10), locks.lock(&key(1))).await;
        assert!(cancelled.is_err());
        drop(first);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0);
    }
}
