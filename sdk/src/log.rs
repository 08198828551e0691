//! Levelled log messages through `wasi:logging` (0.1.0-draft, the interface Spin and wasmCloud
//! link too): a doppel host shows each in `doppel logs` with its level as the stream and the
//! context in front. Plain `println!`/`eprintln!` still work (stdout and stderr); use these when
//! a log collector should tell warnings from errors.
//!
//! `wasmtime serve` does not link `wasi:logging`; a service that calls these runs on doppel,
//! Spin and wasmCloud. (A service that never calls them does not import the interface.)
//!
//! ```no_run
//! doppel_sdk::log::warn("payments", "the provider answered slowly");
//! ```

use crate::bindings::wasi::logging::logging::{Level, log};

/// Where the flow of control went: for someone debugging.
pub fn trace(context: &str, message: &str) {
    log(Level::Trace, context, message);
}

/// Of interest to someone debugging.
pub fn debug(context: &str, message: &str) {
    log(Level::Debug, context, message);
}

/// Of interest to someone watching the service.
pub fn info(context: &str, message: &str) {
    log(Level::Info, context, message);
}

/// Something hazardous happened.
pub fn warn(context: &str, message: &str) {
    log(Level::Warn, context, message);
}

/// Something failed.
pub fn error(context: &str, message: &str) {
    log(Level::Error, context, message);
}

/// Something failed for good.
pub fn critical(context: &str, message: &str) {
    log(Level::Critical, context, message);
}
