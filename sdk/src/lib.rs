//! # doppel-sdk: public services in ordinary Rust
//!
//! A service is a `wasm32-wasip2` component that answers HTTP. With this SDK you write a
//! [`Router`] of plain functions; state lives in [`Bucket`]s of JSON values; settings come from
//! [`config`]. Only standard WASI interfaces are used (`wasi:http`, `wasi:keyvalue`,
//! `wasi:config`), so the same component also runs on `wasmtime serve` and other WASI hosts.
//!
//! ## A complete service
//!
//! ```no_run
//! use doppel_sdk::{Bucket, Error, Json, Request, Router, Validator};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Note {
//!     id: u64,
//!     text: String,
//! }
//!
//! #[derive(Deserialize)]
//! struct NewNote {
//!     text: String,
//! }
//!
//! fn create(req: Request) -> Result<(u16, Json<Note>), Error> {
//!     let new: NewNote = req.json()?; // a malformed body is a 400 with the reason
//!     Validator::new().text(&new.text, "text", 500).finish()?; // 422 listing every problem
//!     let notes = Bucket::open("notes")?;
//!     let id = notes.increment("next-id", 1)?; // atomic: no two notes share an id
//!     let note = Note { id, text: new.text };
//!     notes.put(&format!("note/{id:010}"), &note)?;
//!     Ok((201, Json(note)))
//! }
//!
//! fn fetch(req: Request) -> Result<Json<Note>, Error> {
//!     let id: u64 = req.param_as("id")?;
//!     let notes = Bucket::open("notes")?;
//!     notes
//!         .get(&format!("note/{id:010}"))?
//!         .map(Json)
//!         .ok_or_else(|| Error::not_found(format!("no note {id}")))
//! }
//!
//! fn routes() -> Router {
//!     Router::new().post("/notes", create).get("/notes/{id}", fetch)
//! }
//!
//! doppel_sdk::service!(routes);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and deploy the `.wasm` with
//! `doppel deploy target/wasm32-wasip2/release/notes.wasm --name notes`; it answers at
//! `http://HOST:8080/notes/notes/1`. `doppel new NAME` creates such a crate, ready to build.
//!
//! ## Errors
//! Handlers return `Result<T, Error>`; an [`Error`] becomes an RFC 9457 `application/problem+json`
//! answer with its status. A panic traps the instance: the host answers 500 and logs the panic
//! message, so prefer errors.
//!
//! ## Callers
//! [`Request::caller`] verifies the request's bearer token (an OpenID Connect JWT) against the
//! identity provider the service was deployed with ([`auth`]: its JWKS, issuer and audience come
//! from config) and answers a [`Caller`] with its subject and roles. Guards on routes refuse
//! before the handler runs: `.post("/cases", decide).require_role("case-worker")` answers 401
//! without a valid token and 403 without the role; `.require_caller()` wants any valid token.
//!
//! ## State
//! [`Bucket::get`]/[`put`](Bucket::put) store JSON; [`Bucket::page`] lists by key prefix with
//! pagination; [`Bucket::increment`] is an atomic counter; [`Bucket::update`] is a
//! read-modify-write that never loses a concurrent update (compare-and-swap).
//! [`Bucket::get_many`], [`put_many`](Bucket::put_many) and [`delete_many`](Bucket::delete_many)
//! take many keys in one call (`wasi:keyvalue/batch`); a `put_many` is one write.
//!
//! ## Calling out, logging
//! [`outbound::get`] and [`outbound::post`] call another server over HTTP; a doppel host allows
//! only the servers the deploy names (`--allow-outbound`), and a refusal is a 500 that says so.
//! [`log`] writes levelled messages through `wasi:logging` (`doppel logs` shows the level); a
//! service that calls neither does not import those interfaces.
//!
//! ## Portability
//! Everything above uses standard interfaces only, but hosts differ in what they offer:
//! `wasmtime serve -S keyvalue` has only the default bucket ([`Bucket::open_default`]), keeps its
//! data per request, and does not link `wasi:keyvalue@0.2.0-draft2`, which [`Bucket::update`]
//! needs. A service that sticks to the default bucket, `get`/`put`/`increment` and [`config`] runs
//! there unchanged (`tests/portability.sh` shows it for `examples/hello` and `examples/counter`).

pub mod auth;
mod bindings;
pub mod blob;
pub mod config;
mod error;
mod http;
mod kv;
pub mod log;
pub mod outbound;
pub mod random;
mod router;
mod serve;
pub mod time;

pub use auth::Caller;
pub use error::{Error, FieldError, Validator};
pub use http::{IntoResponse, Json, Request, Response};
pub use kv::{Bucket, Page};
pub use router::Router;

/// Exports a service: `doppel_sdk::service!(routes)` where `fn routes() -> Router`. The router is
/// built per request (each request gets a fresh instance anyway).
///
/// The export exists only when compiling for wasm32: a native build of the same crate (for its
/// unit tests) must not carry symbols named like `wasi:http/incoming-handler@0.2.12#handle`,
/// which native linkers reject.
#[macro_export]
macro_rules! service {
    ($routes:ident) => {
        #[cfg(target_arch = "wasm32")]
        mod __doppel_export {
            struct DoppelService;

            impl $crate::__private::Guest for DoppelService {
                fn handle(
                    request: $crate::__private::IncomingRequest,
                    out: $crate::__private::ResponseOutparam,
                ) {
                    $crate::__private::serve(request, out, super::$routes)
                }
            }

            $crate::__private::wasi::http::proxy::export!(DoppelService);
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::serve::serve;
    pub use wasi;
    pub use wasi::exports::http::incoming_handler::Guest;
    pub use wasi::http::types::{IncomingRequest, ResponseOutparam};
}
