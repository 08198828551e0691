//! A counter with state: `POST /{name}` adds one and answers the new value, `GET /{name}` reads
//! it. Increments are atomic, so concurrent clients never lose a count.

use doppel_sdk::{Bucket, Error, Json, Request, Router};
use serde::Serialize;

#[derive(Serialize)]
struct Count {
    name: String,
    value: u64,
}

/// The default bucket, so that the component also runs on `wasmtime serve`, which has no other.
fn counters() -> Result<Bucket, Error> {
    Bucket::open_default()
}

fn increment(req: Request) -> Result<Json<Count>, Error> {
    let name = req.param("name")?.to_string();
    let value = counters()?.increment(&name, 1)?;
    Ok(Json(Count { name, value }))
}

fn read(req: Request) -> Result<Json<Count>, Error> {
    let name = req.param("name")?.to_string();
    // Counters are stored as decimal text, the format wasi:keyvalue hosts use for increment.
    let raw = counters()?.get_bytes(&name)?;
    let value = match raw {
        None => 0,
        Some(bytes) => String::from_utf8_lossy(&bytes)
            .trim()
            .parse()
            .map_err(|_| Error::internal(format!("counter {name:?} holds a non-number")))?,
    };
    Ok(Json(Count { name, value }))
}

/// The routes of this service.
pub fn routes() -> Router {
    Router::new()
        .post("/{name}", increment)
        .get("/{name}", read)
}

doppel_sdk::service!(routes);
