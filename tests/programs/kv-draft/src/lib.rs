//! Drives every function of wasi:keyvalue@0.2.0-draft over HTTP, so tests can check the host's
//! implementation from outside. Query: `b` bucket, `k` key, `d` delta; values in the body.

mod bindings {
    wit_bindgen::generate!({
        inline: "package test:kv; world kv { include wasi:keyvalue/imports@0.2.0-draft; }",
        path: "../../../modules/wit/keyvalue-draft",
        generate_all,
    });
}
use bindings::wasi::keyvalue::{atomics, batch, store};

/// One page of keys: the drafts differ in the cursor's type.
fn list_page(
    bucket: &store::Bucket,
    cursor: Option<u64>,
) -> Result<(Vec<String>, Option<u64>), store::Error> {
    let page = bucket.list_keys(cursor)?;
    Ok((page.keys, page.cursor))
}

test_support::keyvalue_routes!();

fn extra_route(
    path: &str,
    _: &store::Bucket,
    _: &str,
    _: &IncomingRequest,
) -> Result<String, String> {
    Err(format!("no route {path}"))
}
