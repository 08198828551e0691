//! Guest test program: the same handler — read one record — on `/open` and on `/guarded`, which
//! verifies the caller's bearer token first (`doppel_sdk::auth`). The difference between the two
//! is what verifying costs (`benches/callers.rs`).

use doppel_sdk::{Bucket, Error, Request, Router};

fn record(_: Request) -> Result<String, Error> {
    Ok(Bucket::open("records")?
        .get::<String>("one")?
        .unwrap_or_else(|| "none".into()))
}

/// The routes.
pub fn routes() -> Router {
    Router::new()
        .get("/open", record)
        .get("/guarded", record)
        .require_caller()
}

doppel_sdk::service!(routes);
