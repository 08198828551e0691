//! What of a state is portable to another cluster: a backup restored elsewhere carries the
//! services (their records, modules, buckets and data keys) and the audit trail, but not what belongs to
//! the old cluster's hosts (members, placements, epochs, fences, credentials, its CA). And a
//! digest of the portable part ([`state_hash`]), so that two copies can be compared.

use sha2::{Digest, Sha256};

use crate::space::{self, Space};

/// The system tables a restored cluster takes over: service records, module bytes, the
/// services' data keys (wrapped under the operator's key, which the restoring host must be
/// given), the audit trail. Everything else in the system space describes the old cluster's hosts.
const CARRIED: [&str; 4] = ["services", "modules", "keyring", "audit"];

/// Reads a raw key of [`crate::Engine::export`] back as its space and key; `None` for the
/// engine's own bookkeeping (applied index, usage counters).
pub fn split_key(raw: &[u8]) -> Option<(Space, Vec<u8>)> {
    let (&first, rest) = raw.split_first()?;
    if first != space::DATA {
        return None;
    }
    let (service, rest) = read_name(rest)?;
    let (bucket, key) = read_name(rest)?;
    Some((Space { service, bucket }, key.to_vec()))
}

fn read_name(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]));
    let name = bytes.get(2..2 + len)?;
    Some((String::from_utf8(name.to_vec()).ok()?, &bytes[2 + len..]))
}

/// Whether `space` is a service's state: one of its buckets, its record, module bytes or data key.
pub fn is_service_state(space: &Space) -> bool {
    !space.is_system() || ["services", "modules", "keyring"].contains(&space.bucket.as_str())
}

/// Whether a restored cluster takes over `space` (service state and the audit trail).
pub fn is_restored(space: &Space) -> bool {
    !space.is_system() || CARRIED.contains(&space.bucket.as_str())
}

/// SHA-256 over every service-state key and value of `pairs` (in key order, each length-
/// prefixed), and how many keys it covered: equal for two copies holding the same services
/// with the same data, whatever else differs between their clusters.
pub fn state_hash(pairs: &[(Vec<u8>, Vec<u8>)]) -> ([u8; 32], u64) {
    let mut sorted: Vec<_> = pairs
        .iter()
        .filter(|(k, _)| split_key(k).is_some_and(|(space, _)| is_service_state(&space)))
        .collect();
    sorted.sort();
    let mut hash = Sha256::new();
    for (k, v) in &sorted {
        hash.update((k.len() as u64).to_be_bytes());
        hash.update(k);
        hash.update((v.len() as u64).to_be_bytes());
        hash.update(v);
    }
    (hash.finalize().into(), sorted.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_key_splits_back_into_its_space() {
        let space = Space::bucket("permits", "default");
        let raw = space::data_key(&space, b"k/1");
        assert_eq!(split_key(&raw), Some((space, b"k/1".to_vec())));
        assert_eq!(split_key(b"a"), None);
        assert_eq!(split_key(&[space::DATA, 0]), None);
    }

    #[test]
    fn the_hash_covers_service_state_only() {
        let data = |space: &Space, k: &[u8], v: &[u8]| (space::data_key(space, k), v.to_vec());
        let bucket = Space::bucket("permits", "default");
        let a = vec![
            data(&bucket, b"k", b"v"),
            data(&Space::placements(), b"permits", b"{\"epoch\":1}"),
        ];
        let b = vec![
            data(&bucket, b"k", b"v"),
            data(&Space::placements(), b"permits", b"{\"epoch\":7}"),
        ];
        assert_eq!(state_hash(&a), state_hash(&b));
        let c = vec![data(&bucket, b"k", b"w")];
        assert_ne!(state_hash(&a).0, state_hash(&c).0);
    }
}
