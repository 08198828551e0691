//! The regression corpora of the host's fuzz targets (`fuzz/regressions/`), replayed in the
//! ordinary test run: every input that once crashed a target, and the inputs fuzzing found that
//! reach code the others do not.

use doppel_host::fuzzing::{admin_bodies, component_upload, keyvalue_calls};
use doppel_replication::fuzzing::replay;

#[test]
fn component_upload_regressions_are_refused_or_linked_without_a_panic() {
    assert!(
        replay("component_upload", component_upload) > 0,
        "the corpus is empty"
    );
}

#[test]
fn admin_body_regressions_are_refused_without_a_panic() {
    assert!(
        replay("admin_bodies", admin_bodies) > 0,
        "the corpus is empty"
    );
}

#[test]
fn keyvalue_call_regressions_answer_without_a_panic() {
    assert!(
        replay("keyvalue_calls", keyvalue_calls) > 0,
        "the corpus is empty"
    );
}
