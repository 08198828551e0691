//! `doppel:local`: a bucket a service keeps in this host's memory only.
//!
//! What it is for: results a guest may recompute but would rather not on every request, such
//! as a bearer token it has already verified (decision 0010). Every request is a fresh instance
//! (decision 0004), so a guest has no memory of its own between requests; this is the one place
//! it may leave something for the next request *on this host*.
//!
//! What it promises, and what it does not: entries are never replicated, never written to disk
//! and never in a backup; they may vanish at any time (evicted oldest first when the service's
//! or the host's budget is full, on redeploy, on restart, and when the service moves to another
//! host). A guest must treat a miss as normal. Only `get`, `set`, `delete`, `exists` and their
//! batch forms apply; listing, counters and compare-and-swap are refused with a message saying
//! so. The service's key and value limits apply as to every bucket; its quota does not (this
//! memory is bounded here instead).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The bucket name a guest opens to reach its host-local memory.
pub const LOCAL_BUCKET: &str = "doppel:local";
/// What one service may keep here, in bytes (keys, values and a fixed per-entry overhead).
pub const SERVICE_BUDGET: usize = 1 << 20;
/// What all services of a host may keep here together.
pub const HOST_BUDGET: usize = 64 << 20;
/// Bookkeeping counted per entry besides its key and value bytes.
const ENTRY_OVERHEAD: usize = 64;

/// The bytes all local buckets of one host hold, shared by them.
#[derive(Clone, Default)]
pub struct HostLocalBytes(Arc<AtomicUsize>);

impl HostLocalBytes {
    /// Bytes held now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One service's local bucket on this host.
pub struct LocalBucket {
    entries: Mutex<Entries>,
    host: HostLocalBytes,
    budget: usize,
}

#[derive(Default)]
struct Entries {
    /// Key → (insertion sequence, value).
    map: HashMap<Vec<u8>, (u64, Vec<u8>)>,
    /// Insertion sequence → key: the oldest entry is the first.
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
    bytes: usize,
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl LocalBucket {
    /// An empty bucket that counts its bytes into `host`.
    pub fn new(host: HostLocalBytes) -> LocalBucket {
        LocalBucket::with_budget(host, SERVICE_BUDGET)
    }

    fn with_budget(host: HostLocalBytes, budget: usize) -> LocalBucket {
        LocalBucket {
            entries: Mutex::new(Entries::default()),
            host,
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value at `key`, if this host still remembers it.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().map.get(key).map(|(_, v)| v.clone())
    }

    /// Remembers `value` at `key`, forgetting the oldest entries if the budget needs it. A value
    /// larger than the whole budget is not kept (the next `get` misses, as after an eviction).
    pub fn set(&self, key: Vec<u8>, value: Vec<u8>) {
        let mut entries = self.lock();
        self.remove_locked(&mut entries, &key);
        let size = cost(&key, &value);
        if size > self.budget {
            return;
        }
        while entries.bytes + size > self.budget || self.host.get() + size > HOST_BUDGET {
            let Some((_, oldest)) = entries.order.pop_first() else {
                // Other services fill the host's budget: this one keeps nothing rather than
                // take from them.
                return;
            };
            self.remove_locked(&mut entries, &oldest);
        }
        let seq = entries.next;
        entries.next += 1;
        entries.order.insert(seq, key.clone());
        entries.map.insert(key, (seq, value));
        entries.bytes += size;
        self.host.0.fetch_add(size, Ordering::Relaxed);
    }

    /// Forgets `key`.
    pub fn delete(&self, key: &[u8]) {
        let mut entries = self.lock();
        self.remove_locked(&mut entries, key);
    }

    fn remove_locked(&self, entries: &mut Entries, key: &[u8]) {
        if let Some((seq, value)) = entries.map.remove(key) {
            entries.order.remove(&seq);
            let size = cost(key, &value);
            entries.bytes -= size;
            self.host.0.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Bytes this bucket holds now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Drop for LocalBucket {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        self.host.0.fetch_sub(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_forgets_the_oldest_entries_when_its_budget_is_full() {
        let host = HostLocalBytes::default();
        let bucket = LocalBucket::with_budget(host.clone(), 3 * cost(b"k0", &[0; 100]));
        for i in 0..5 {
            bucket.set(format!("k{i}").into_bytes(), vec![i; 100]);
        }
        assert_eq!(bucket.get(b"k0"), None);
        assert_eq!(bucket.get(b"k1"), None);
        assert_eq!(bucket.get(b"k4"), Some(vec![4; 100]));
        assert_eq!(bucket.bytes(), 3 * cost(b"k0", &[0; 100]));
        assert_eq!(host.get(), bucket.bytes());

        // Overwriting makes an entry the newest; the next eviction takes k3.
        bucket.set(b"k2".to_vec(), vec![9; 100]);
        bucket.set(b"k5".to_vec(), vec![5; 100]);
        assert_eq!(bucket.get(b"k3"), None);
        assert_eq!(bucket.get(b"k2"), Some(vec![9; 100]));

        bucket.delete(b"k2");
        assert_eq!(bucket.get(b"k2"), None);
        assert_eq!(host.get(), 2 * cost(b"k0", &[0; 100]));
        drop(bucket);
        assert_eq!(
            host.get(),
            0,
            "a removed service's bytes are returned to the host"
        );
    }

    #[test]
    fn a_value_larger_than_the_budget_is_not_kept() {
        let bucket = LocalBucket::with_budget(HostLocalBytes::default(), 1000);
        bucket.set(b"small".to_vec(), vec![1; 10]);
        bucket.set(b"big".to_vec(), vec![0; 2000]);
        assert_eq!(bucket.get(b"big"), None);
        assert_eq!(
            bucket.get(b"small"),
            Some(vec![1; 10]),
            "nothing evicted for it"
        );
    }

    #[test]
    fn a_full_host_takes_nothing_from_other_services() {
        let host = HostLocalBytes::default();
        let hog = LocalBucket::with_budget(host.clone(), HOST_BUDGET);
        let chunk = 1 << 20;
        for i in 0..64 {
            let key = format!("{i}");
            let value = vec![0; chunk - ENTRY_OVERHEAD - key.len()];
            hog.set(key.into_bytes(), value);
        }
        assert_eq!(host.get(), HOST_BUDGET);
        let other = LocalBucket::new(host.clone());
        other.set(b"token".to_vec(), vec![1; 100]);
        assert_eq!(other.get(b"token"), None, "the host is full");
        assert_eq!(
            hog.bytes(),
            HOST_BUDGET,
            "and the other service took nothing"
        );
        hog.delete(b"0");
        other.set(b"token".to_vec(), vec![1; 100]);
        assert_eq!(other.get(b"token"), Some(vec![1; 100]));
    }
}
