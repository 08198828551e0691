//! Guest test program: the same handlers — read one record, or write one — on `/open/…` and on
//! `/guarded/…`, which verify the caller's bearer token first (`doppel_sdk::auth`). The
//! difference is what verifying costs (`benches/callers.rs`).

use doppel_sdk::{Bucket, Error, Request, Router};

fn record(_: Request) -> Result<String, Error> {
    Ok(Bucket::open("records")?
        .get::<String>("one")?
        .unwrap_or_else(|| "none".into()))
}

fn write(req: Request) -> Result<(), Error> {
    Bucket::open("records")?.put("written", &String::from_utf8_lossy(req.body()))
}

/// The routes.
pub fn routes() -> Router {
    Router::new()
        .get("/open/read", record)
        .post("/open/write", write)
        .get("/guarded/read", record)
        .require_caller()
        .post("/guarded/write", write)
        .require_caller()
}

doppel_sdk::service!(routes);
