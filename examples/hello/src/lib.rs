//! The smallest doppel service: `GET /` answers a greeting, `GET /{name}` greets by name.
//! The greeting word comes from config (`doppel deploy … --config greeting=Moin`).

use doppel_sdk::{Error, Request, Router, config};

fn hello(req: Request) -> Result<String, Error> {
    let greeting = config::get_or("greeting", "Hello")?;
    let name = req.param("name").unwrap_or("world");
    Ok(format!("{greeting}, {name}!\n"))
}

/// The routes of this service.
pub fn routes() -> Router {
    Router::new().get("/", hello).get("/{name}", hello)
}

doppel_sdk::service!(routes);
