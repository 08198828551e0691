//! Entry points for the fuzz targets in `fuzz/`, which the crate's tests also run over each
//! target's regression corpus. Each takes bytes as an outsider could send or leave them and must
//! end in an answer or an error: never a panic, a hang, or an allocation the bytes did not pay
//! for. Not a stable API.

use std::path::PathBuf;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::authority::EnrolRequest;
use crate::log_store::LogStore;
use crate::membership::JoinRequest;
use crate::transport::MAX_RPC;
use crate::types::{Batch, LogReach, NodeId, TypeConfig};

/// What a peer can send: `data` as the body of each postcard route (the enrolment route is open
/// to hosts without a certificate), then as the byte stream of an append connection, frame after
/// frame.
pub fn peer_messages(data: &[u8]) {
    let _ = postcard::from_bytes::<VoteRequest<NodeId>>(data);
    let _ = postcard::from_bytes::<InstallSnapshotRequest<TypeConfig>>(data);
    let _ = postcard::from_bytes::<Batch>(data);
    let _ = postcard::from_bytes::<JoinRequest>(data);
    let _ = postcard::from_bytes::<EnrolRequest>(data);
    let _ = postcard::from_bytes::<NodeId>(data);
    let _ = LogReach::from_ping(data);
    futures::executor::block_on(async {
        let mut stream = data;
        while let Ok(Some(frame)) = crate::append_stream::read_frame(&mut stream, MAX_RPC).await {
            let _ = postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&frame);
        }
    });
}

/// What a damaged disk can leave: `data` as a host's raft log file, opened as at start-up (the
/// records read up to the first torn one, then replayed) and then read.
pub fn log_file(data: &[u8]) {
    let dir = scratch_dir("log");
    std::fs::create_dir_all(&dir).expect("a scratch directory for the fuzzed log");
    std::fs::write(dir.join("raft-log"), data).expect("the fuzzed log file written");
    if let Ok(log) = LogStore::open(&dir) {
        let reach = log.reach();
        let _ = log.committed_index();
        let _ = log.entries_after(0, reach.index, 64);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory of this process and thread, in memory where the system has a tmpfs: the log is
/// synced on open, and a fuzzer opens it many thousand times.
pub fn scratch_dir(what: &str) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    base.join(format!(
        "doppel-fuzz-{what}-{}-{thread}",
        std::process::id()
    ))
}

/// Runs `target` over every input in `fuzz/regressions/NAME/` of the repository and answers how
/// many there were; a panicking input is reported by its file name before the panic goes on.
pub fn replay(name: &str, target: fn(&[u8])) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(name);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    paths.sort();
    for path in &paths {
        let data = std::fs::read(path).expect("a corpus input");
        if let Err(panic) = std::panic::catch_unwind(|| target(&data)) {
            eprintln!("fuzz target {name} panicked on {}", path.display());
            std::panic::resume_unwind(panic);
        }
    }
    paths.len()
}
