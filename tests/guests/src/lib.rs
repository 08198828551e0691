//! Paths of the guest components the tests and benchmarks deploy, built for `wasm32-wasip2` by
//! this crate's build script.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
