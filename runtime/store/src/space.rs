//! Key spaces and how their keys are laid out in the one sled tree.

use serde::{Deserialize, Serialize};

/// A namespace of keys: one bucket of one service, or one of the host's own tables.
///
/// System tables use the empty service name, which no service can have, so a service can never
/// name a system table nor another service's bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Space {
    /// The owning service, or `""` for the host's own tables.
    pub service: String,
    /// The bucket (or table) name inside the owner.
    pub bucket: String,
}

impl Space {
    /// A bucket of a service.
    pub fn bucket(service: impl Into<String>, bucket: impl Into<String>) -> Self {
        Space {
            service: service.into(),
            bucket: bucket.into(),
        }
    }

    /// A table of the host's own (service records, modules).
    pub fn system(table: impl Into<String>) -> Self {
        Space::bucket("", table)
    }

    /// The table of module bytes, by digest (kept apart from the rest by the engine: see
    /// `Engine`).
    pub fn modules() -> Self {
        Space::system(MODULES)
    }

    /// The table of service placements (written only by [`crate::Op::Place`]).
    pub fn placements() -> Self {
        Space::system(PLACEMENTS)
    }

    /// The table of service epochs (decimal text; written only by [`crate::Op::Place`]).
    pub fn epochs() -> Self {
        Space::system(EPOCHS)
    }

    /// The table of deposed hosts: `SERVICE/HOST` holds the epoch (decimal text) that deposed
    /// `HOST` for `SERVICE` (written only by [`crate::Op::Place`]).
    pub fn fences() -> Self {
        Space::system(FENCES)
    }

    /// Every placement a service had: `SERVICE/EPOCH` (epoch as 20 digits, so keys sort by it)
    /// holds the placement record (written only by [`crate::Op::Place`]).
    pub fn placement_history() -> Self {
        Space::system(HISTORY)
    }

    /// Whether this space counts against a service's quota.
    pub fn is_system(&self) -> bool {
        self.service.is_empty()
    }
}

// Layout of the sled tree. Every data key starts with DATA, then the length-prefixed service and
// bucket, so that one service's keys (and one bucket's) are contiguous and a prefix scan lists them.
pub(crate) const DATA: u8 = b'd';
const MODULES: &str = "modules";
const PLACEMENTS: &str = "placements";
const EPOCHS: &str = "epochs";
const FENCES: &str = "fences";
const HISTORY: &str = "placement-history";
pub(crate) const USAGE: u8 = b'u';
pub(crate) const APPLIED: &[u8] = b"a";
pub(crate) const META: &[u8] = b"m";
/// The last entry applied key by key, whole (see `Engine::apply_all`).
pub(crate) const REDO: &[u8] = b"r";

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Service names and bucket names are far below 64 KiB (the host enforces it); the u16 prefix
    // keeps one name from running into the next.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// The key of `host`'s fence for `service` in [`Space::fences`].
pub fn fence_key(service: &str, host: u64) -> Vec<u8> {
    format!("{service}/{host}").into_bytes()
}

/// The key of `service`'s placement at `epoch` in [`Space::placement_history`].
pub fn history_key(service: &str, epoch: u64) -> Vec<u8> {
    format!("{service}/{epoch:020}").into_bytes()
}

/// The prefix shared by every key of `service` (all its buckets).
pub(crate) fn service_prefix(service: &str) -> Vec<u8> {
    let mut out = vec![DATA];
    push_str(&mut out, service);
    out
}

/// The prefix shared by every key of `space`.
pub(crate) fn space_prefix(space: &Space) -> Vec<u8> {
    let mut out = service_prefix(&space.service);
    push_str(&mut out, &space.bucket);
    out
}

/// The sled key of `key` in `space`.
pub(crate) fn data_key(space: &Space, key: &[u8]) -> Vec<u8> {
    let mut out = space_prefix(space);
    out.extend_from_slice(key);
    out
}

/// The sled key holding the byte count of `service`.
pub(crate) fn usage_key(service: &str) -> Vec<u8> {
    let mut out = vec![USAGE];
    out.extend_from_slice(service.as_bytes());
    out
}

/// Reads the bucket name that follows a service prefix in a data key.
pub(crate) fn bucket_after(prefix_len: usize, key: &[u8]) -> Option<(String, usize)> {
    let len_bytes = key.get(prefix_len..prefix_len + 2)?;
    let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    let start = prefix_len + 2;
    let name = key.get(start..start + len)?;
    Some((String::from_utf8_lossy(name).into_owned(), start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_do_not_overlap() {
        // "ab"+"c" must not share a prefix with "a"+"bc".
        let a = space_prefix(&Space::bucket("ab", "c"));
        let b = space_prefix(&Space::bucket("a", "bc"));
        assert!(!a.starts_with(&b) && !b.starts_with(&a));
        let sys = service_prefix("");
        assert!(!space_prefix(&Space::bucket("x", "")).starts_with(&sys));
    }

    #[test]
    fn bucket_name_reads_back() {
        let key = data_key(&Space::bucket("svc", "orders"), b"k1");
        let (name, end) = bucket_after(service_prefix("svc").len(), &key).unwrap();
        assert_eq!(name, "orders");
        assert_eq!(&key[end..], b"k1");
    }
}
