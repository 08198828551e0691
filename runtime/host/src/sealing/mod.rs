//! Encryption at rest and crypto-erasure (decision 0012).
//!
//! Every service has its own data key, kept in the replicated system table `keyring` wrapped
//! under the cluster key, which each host keeps wrapped under its own key-encryption key from
//! the operator ([`root`]). [`SealedStore`] seals what a service stores — its keys
//! with AES-SIV (deterministic: a key finds its record and a cursor its page), its values with
//! XChaCha20-Poly1305 bound to their key — before the command reaches raft, so the raft log,
//! the state, snapshots, peers' copies and backups hold only ciphertext. Destroying the data key
//! (`doppel rm --purge`) makes every copy of the service's data unreadable at once.

mod cipher;
pub(crate) mod erasure;
pub(crate) mod handover;
pub mod root;
mod store;

pub use cipher::{ServiceCipher, Unopenable};
pub use root::{ClusterKey, KEY_ENV, Kek, KeyError, KeySource, adopt_carried};
pub use store::{KEYRING, KEYROOTS, SealedStore};
