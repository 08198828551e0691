//! Fuzz target: see `doppel_host::fuzzing::keyvalue_calls`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| doppel_host::fuzzing::keyvalue_calls(data));
