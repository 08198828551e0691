//! Drives every function of wasi:keyvalue@0.2.0-draft2 over HTTP, so tests can check the host's
//! implementation from outside. Query: `b` bucket, `k` key, `d` delta; values in the body.

mod bindings {
    wit_bindgen::generate!({
        inline: "package test:kv; world kv { include wasi:keyvalue/imports@0.2.0-draft2; }",
        path: "../../../modules/wit/keyvalue-draft2",
        generate_all,
    });
}
use bindings::wasi::keyvalue::{atomics, batch, store};

/// One page of keys: the drafts differ in the cursor's type.
fn list_page(
    bucket: &store::Bucket,
    cursor: Option<String>,
) -> Result<(Vec<String>, Option<String>), store::Error> {
    let page = bucket.list_keys(cursor.as_deref())?;
    Ok((page.keys, page.cursor))
}

test_support::keyvalue_routes!();

/// Compare-and-swap, which only draft2 has: `/cas` reads the key, then swaps in the body; with
/// `race=1` another write lands between read and swap, so the swap must fail.
fn extra_route(
    path: &str,
    bucket: &store::Bucket,
    key: &str,
    request: &IncomingRequest,
) -> Result<String, String> {
    let err = |e: store::Error| format!("error: {e:?}");
    match path {
        "/cas" => {
            let (_, params) = path_and_query(request);
            let value = read_body(request)?;
            let cas = atomics::Cas::new(bucket, key).map_err(err)?;
            let seen = cas.current().map_err(err)?;
            if param(&params, "race") == Some("1") {
                bucket.set(key, b"interloper").map_err(err)?;
            }
            match atomics::swap(cas, &value) {
                Ok(()) => Ok(format!(
                    "swapped (was {:?})",
                    seen.map(|v| String::from_utf8_lossy(&v).into_owned())
                )),
                Err(atomics::CasError::CasFailed(fresh)) => {
                    let now = fresh.current().map_err(err)?;
                    Ok(format!(
                        "conflict (now {:?})",
                        now.map(|v| String::from_utf8_lossy(&v).into_owned())
                    ))
                }
                Err(atomics::CasError::StoreError(e)) => Err(err(e)),
            }
        }
        _ => Err(format!("no route {path}")),
    }
}
