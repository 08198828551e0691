//! Fuzz target: see `doppel_host::fuzzing::component_upload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| doppel_host::fuzzing::component_upload(data));
