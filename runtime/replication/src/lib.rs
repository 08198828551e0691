//! Replication for doppel: everything it takes for a host to be a member of a cluster.
//!
//! A host holds a [`Member`] and never sees raft itself. This crate owns:
//!
//! - **Membership** ([`Member`], `member.rs`): the host's identity in `DATA/cluster.json`,
//!   creating a cluster or joining one, settling the leader lease, removal, status.
//! - **The peer transport** ([`PeerClient`], [`accept`], `transport.rs`): the one
//!   connector/acceptor pair every host-to-host request goes through — raft's own routes and the
//!   host's ([`HostRoute`]) alike — over mutual TLS. Its URLs and headers appear nowhere else.
//!   Who may call which route is `peer_server.rs`'s [`admission`](peer_router).
//! - **Trust** (`credentials.rs`, `authority.rs`, `rotation.rs`): this host's certificate in
//!   `DATA/tls/`, renewed by the host itself; the cluster's CA (rotated in three steps),
//!   invitations, revocations and residency rule in the replicated store.
//! - **Liveness** ([`Liveness`], `liveness.rs`): the one probe loop; who is alive, and standing
//!   for election as soon as a dead leader's lease allows.
//! - **The replicated store** ([`ReplicatedStore`]): doppel's `Store` over raft. Followers
//!   forward writes to the leader and get a read index from it, so every read and write is
//!   linearizable from every host.
//! - **Raft's storage**: [`LogStore`] (the raft log, vote and committed id in one append-only
//!   file whose every write is `fdatasync`ed before openraft is told it is durable) and
//!   [`StateMachine`] (each committed command applied to a [`doppel_store::Engine`], with the raft
//!   log id and membership in the same atomic batch; snapshots are the engine's exported state).
//!   [`recovery`] reads both outside raft, for a new cluster started from a lone survivor.
//!
//! openraft 0.9.25 is pinned exactly (see `docs/decisions/0001-openraft-0.9.md`): it builds here
//! with `serde` and `storage-v2`, whose storage traits separate the log from the state machine.
//!
//! Nothing here knows about a single cluster: a [`Member`] is one membership of one raft group,
//! and a host that is a member of several groups would hold several.

mod append_stream;
mod authority;
mod credentials;
mod framed;
#[doc(hidden)]
pub mod fuzzing;
mod liveness;
mod log_store;
mod member;
mod membership;
pub mod metrics;
mod node;
mod peer_server;
mod raft_network;
mod read_index;
mod read_rounds;
pub mod recovery;
mod replicated;
mod rotation;
mod state_machine;
mod transport;
mod types;
mod write_gate;

pub use authority::{AuthorityError, Invitation, InvitationToken, breaks_rule, check_label_part};
pub use credentials::{Credentials, CredentialsError, ca_path, tls_dir};
pub use liveness::{LiveView, Liveness};
pub use log_store::LogStore;
pub use member::{JoinError, JoinTarget, Member, MemberConfig, MemberError, member_id};
pub use membership::{ClusterStatus, MemberStatus, Refusal};
pub use node::{LEADER_LEASE, Node, Storage, config, config_with_lease, start, start_with};
pub use peer_server::peer_router;
pub use raft_network::Network;
pub use replicated::ReplicatedStore;
pub use rotation::Rotated;
pub use state_machine::StateMachine;
pub use transport::{
    ConnectedPeer, HostRoute, LEASE_HEADER, PeerClient, PeerError, RefusalLog, RefusalSink, accept,
    causes,
};
pub use types::{Batch, LogReach, NodeId, Response, StorageError, TypeConfig};
pub use write_gate::WriteGate;
