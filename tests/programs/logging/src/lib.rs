//! Logs through `wasi:logging/logging@0.1.0-draft`, as components built for Spin or wasmCloud
//! do: one message at every level, then one far longer than a host keeps, then answers 200.

use test_support::respond;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
        inline: "package test:logging; world logging { import wasi:logging/logging@0.1.0-draft; }",
        path: "../../../modules/wit/logging",
        generate_all,
    });
}
use bindings::wasi::logging::logging::{Level, log};

struct Handler;

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        for (level, name) in [
            (Level::Trace, "trace"),
            (Level::Debug, "debug"),
            (Level::Info, "info"),
            (Level::Warn, "warn"),
            (Level::Error, "error"),
            (Level::Critical, "critical"),
        ] {
            log(level, "checkout", &format!("a {name} message"));
        }
        log(Level::Info, "", &"x".repeat(1 << 20));
        respond(out, 200, b"logged");
    }
}

wasi::http::proxy::export!(Handler);
