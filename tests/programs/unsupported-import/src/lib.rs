//! Imports an interface no doppel host provides; deploying it must be refused with its name.

use test_support::respond;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package test:nope;
            interface teleport { beam: func(to: string) -> bool; }
            world nope { import teleport; }
        ",
    });
}

struct Handler;

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        // Called, so the import is not dropped as unused.
        let beamed = bindings::test::nope::teleport::beam("mars");
        respond(out, 200, format!("beamed: {beamed}").as_bytes());
    }
}

wasi::http::proxy::export!(Handler);
