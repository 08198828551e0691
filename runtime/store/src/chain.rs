//! Hash chains in the store ([`crate::Op::Chain`]): an append-only log in one system table whose
//! every entry carries the SHA-256 of the previous entry's hash and its own bytes. Whoever holds
//! the chain can check it ([`verify`]) and compare its head with other copies: an entry changed,
//! removed or inserted on one host shows as a broken link there, or as a head that differs.

use sha2::{Digest, Sha256};

use crate::StoreError;

/// The key of the chain's head (its last entry's number and hash). Sorts after every entry key.
pub const HEAD: &[u8] = b"head";

/// The key of entry `seq`: 20 digits, so that keys sort by number.
pub fn entry_key(seq: u64) -> Vec<u8> {
    format!("{seq:020}").into_bytes()
}

/// An entry as stored: its hash, then its bytes.
pub fn stored(hash: &[u8; 32], entry: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + entry.len());
    out.extend_from_slice(hash);
    out.extend_from_slice(entry);
    out
}

/// The hash linking `entry` to the chain whose last hash is `prev`.
pub fn link(prev: &[u8; 32], entry: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(entry);
    h.finalize().into()
}

/// The last entry of a chain: its number (0 for an empty chain) and hash (zeros).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// How many entries the chain has.
    pub seq: u64,
    /// The last entry's hash.
    pub hash: [u8; 32],
}

impl Head {
    /// The head as stored (none: an empty chain).
    pub fn decode(raw: Option<&[u8]>) -> Result<Head, StoreError> {
        let Some(raw) = raw else {
            return Ok(Head::default());
        };
        if raw.len() != 40 {
            return Err(StoreError::Corrupt("a chain head is not 40 bytes".into()));
        }
        let mut seq = [0; 8];
        seq.copy_from_slice(&raw[..8]);
        let mut hash = [0; 32];
        hash.copy_from_slice(&raw[8..]);
        Ok(Head {
            seq: u64::from_be_bytes(seq),
            hash,
        })
    }

    /// The head as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.seq.to_be_bytes().to_vec();
        out.extend_from_slice(&self.hash);
        out
    }

    /// The head after appending `entry`.
    pub fn next(&self, entry: &[u8]) -> Head {
        Head {
            seq: self.seq + 1,
            hash: link(&self.hash, entry),
        }
    }
}

/// Checks stored entries in order (`(key, value)` pairs as the table lists them, the head among
/// them) against each other and the head: the head if all link up, else the number of the first
/// entry that does not.
pub fn verify(rows: &[(Vec<u8>, Vec<u8>)]) -> Result<Head, u64> {
    let mut head = Head::default();
    let mut stated = None;
    for (key, value) in rows {
        if key == HEAD {
            stated = Head::decode(Some(value)).ok();
            continue;
        }
        let expected = head.seq + 1;
        if *key != entry_key(expected) || value.len() < 32 {
            return Err(expected);
        }
        let next = head.next(&value[32..]);
        if next.hash[..] != value[..32] {
            return Err(expected);
        }
        head = next;
    }
    match stated {
        Some(stated) if stated == head => Ok(head),
        None if head.seq == 0 => Ok(head),
        _ => Err(head.seq + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(entries: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut head = Head::default();
        let mut rows = Vec::new();
        for e in entries {
            head = head.next(e);
            rows.push((entry_key(head.seq), stored(&head.hash, e)));
        }
        rows.push((HEAD.to_vec(), head.encode()));
        rows
    }

    #[test]
    fn a_chain_verifies_and_any_change_breaks_it_where_it_was_made() {
        let rows = chain(&[b"one", b"two", b"three"]);
        assert_eq!(verify(&rows).unwrap().seq, 3);
        let mut altered = rows.clone();
        altered[1].1.extend_from_slice(b"!");
        assert_eq!(verify(&altered), Err(2));
        let mut removed = rows.clone();
        removed.remove(1);
        assert_eq!(verify(&removed), Err(2));
        let mut truncated = rows.clone();
        truncated.remove(2);
        assert_eq!(verify(&truncated), Err(3));
        assert_eq!(verify(&[]).unwrap(), Head::default());
    }
}
