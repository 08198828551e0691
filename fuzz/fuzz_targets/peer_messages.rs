//! Fuzz target: see `doppel_replication::fuzzing::peer_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| doppel_replication::fuzzing::peer_messages(data));
