//! Guest test program: the same handlers — read one record, or write one — on `/open/…` and on
//! `/guarded/…`, which verify the caller's bearer token first (`doppel_sdk::auth`). The
//! difference is what verifying costs (`benches/callers.rs`). `/open/fetch?to=URL` calls out
//! through `doppel_sdk::outbound`.

use doppel_sdk::{Bucket, Error, Request, Router};

fn record(_: Request) -> Result<String, Error> {
    Ok(Bucket::open("records")?
        .get::<String>("one")?
        .unwrap_or_else(|| "none".into()))
}

fn write(req: Request) -> Result<(), Error> {
    Bucket::open("records")?.put("written", &String::from_utf8_lossy(req.body()))
}

/// Calls the `to` query parameter's URL through `doppel_sdk::outbound` and answers its body.
fn fetch(req: Request) -> Result<String, Error> {
    #[derive(serde::Deserialize)]
    struct Query {
        to: String,
    }
    let query: Query = req.query()?;
    Ok(doppel_sdk::outbound::get(&query.to)?.text())
}

/// Writes three records in one call, removes one in another, and answers what a read of all
/// three in one call finds.
fn batch(_: Request) -> Result<String, Error> {
    let bucket = Bucket::open("batch")?;
    bucket.put_many(&[("a", 1u32), ("b", 2), ("c", 3)])?;
    bucket.delete_many(&["b"])?;
    let found: Vec<Option<u32>> = bucket.get_many(&["a", "b", "c", "missing"])?;
    Ok(format!("{found:?}"))
}

/// The routes.
pub fn routes() -> Router {
    Router::new()
        .get("/open/read", record)
        .get("/open/fetch", fetch)
        .post("/open/batch", batch)
        .post("/open/write", write)
        .get("/guarded/read", record)
        .require_caller()
        .post("/guarded/write", write)
        .require_caller()
}

doppel_sdk::service!(routes);
