//! Fuzz target: see `doppel_host::fuzzing::admin_bodies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| doppel_host::fuzzing::admin_bodies(data));
