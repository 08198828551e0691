//! Fuzz target: see `doppel_replication::fuzzing::log_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| doppel_replication::fuzzing::log_file(data));
