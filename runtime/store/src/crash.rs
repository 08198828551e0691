//! Crash points, for the tests of crash recovery: with `DOPPEL_CRASH_AT=NAME:STAGE@N` in its
//! environment, a process aborts the `N`th time (default: the first) it reaches that point of a
//! persistence step — after first dropping what a power cut at that instant would lose (bytes
//! written but not yet synced). Without the variable each point costs one check of a
//! once-initialised static.
//!
//! Points: `log-append`, `log-vote`, `log-committed`, `log-truncate`, `log-purge` (stages
//! `unsynced`, `synced`), `log-rewrite` and `snapshot-file` (stages `unsynced`, `renamed`),
//! `apply:applied` (an entry in sled, openraft not yet told), `apply:partial` (an entry written
//! key by key, only its first change written; here the point flushes sled instead of dropping
//! anything, since the worst case is that sled wrote the half entry out), `snapshot:built`,
//! `install:imported`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Target {
    point: String,
    at: u64,
    hits: AtomicU64,
}

static TARGET: OnceLock<Option<Target>> = OnceLock::new();

fn target() -> Option<&'static Target> {
    TARGET
        .get_or_init(|| {
            let spec = std::env::var("DOPPEL_CRASH_AT").ok()?;
            let (point, at) = match spec.rsplit_once('@') {
                Some((point, n)) => (point.to_string(), n.parse().ok()?),
                None => (spec, 1),
            };
            Some(Target {
                point,
                at,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process here if this is the crash point asked for; `lose` runs first and drops what
/// a power cut would, or brings about the worst case of the step (it must not fail loudly: the
/// process is about to die anyway).
pub fn point(name: &str, stage: &str, lose: impl FnOnce()) {
    let Some(target) = target() else {
        return;
    };
    let here = target
        .point
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(':'))
        == Some(stage);
    if here && target.hits.fetch_add(1, Ordering::SeqCst) + 1 == target.at {
        lose();
        eprintln!("doppel: crashing at {name}:{stage} as DOPPEL_CRASH_AT asked");
        std::process::abort();
    }
}
