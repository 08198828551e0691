//! The gate a leader's writes pass before they are proposed, closed for good when the leader
//! removes itself from the cluster.
//!
//! A leader that removes itself appends the membership change and steps down once it commits.
//! A write it proposes after that change is in its log behind it: the next leader commits it, but
//! the removed leader never hears so, and its caller waits out the store's timeout and answers
//! "unavailable" for a write that may well have happened (seen as a 500 during `doppel drain
//! --remove` of the leader). So the leader closes the gate before it proposes its removal —
//! waiting for the writes already passing to be proposed first — and from then on refuses writes
//! without proposing them; a follower that forwarded one asks the next leader instead, which is
//! safe because nothing was proposed.

use std::sync::Arc;

/// Shared by the store's own writes, the peer route followers forward writes to, and removals.
#[derive(Clone, Default)]
pub struct WriteGate {
    closed: Arc<tokio::sync::RwLock<bool>>,
}

/// Held while a write is proposed; `None` when the gate is closed.
pub(crate) type Pass<'a> = tokio::sync::RwLockReadGuard<'a, bool>;

impl WriteGate {
    /// A pass for one proposal, or `None` once this leader is removing itself.
    pub(crate) async fn pass(&self) -> Option<Pass<'_>> {
        let guard = self.closed.read().await;
        (!*guard).then_some(guard)
    }

    /// Closes the gate once every write that has passed is proposed.
    pub(crate) async fn close(&self) {
        *self.closed.write().await = true;
    }

    /// Opens it again (the removal failed: this host still leads).
    pub(crate) async fn reopen(&self) {
        *self.closed.write().await = false;
    }
}
