//! The regression corpora of the replication crate's fuzz targets (`fuzz/regressions/`), replayed
//! in the ordinary test run: every input that once crashed a target, and the inputs fuzzing found
//! that reach code the others do not.

use doppel_replication::fuzzing::{log_file, peer_messages, replay};

#[test]
fn peer_messages_regressions_are_refused_without_a_panic() {
    assert!(
        replay("peer_messages", peer_messages) > 0,
        "the corpus is empty"
    );
}

#[test]
fn log_file_regressions_open_without_a_panic() {
    assert!(replay("log_file", log_file) > 0, "the corpus is empty");
}
