//! Drives every function of wasi:keyvalue@0.2.0-draft over HTTP, so tests can check the host's
//! implementation from outside. Query: `b` bucket, `k` key, `d` delta; values in the body.

use test_support::{param, path_and_query, read_body, respond};
use wasi::http::types::{IncomingRequest, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
        inline: "package test:kv; world kv { include wasi:keyvalue/imports@0.2.0-draft; }",
        path: "../../../modules/wit/keyvalue-draft",
        generate_all,
    });
}
use bindings::wasi::keyvalue::{atomics, batch, store};

struct Handler;

fn split_pairs(body: &[u8]) -> Vec<(String, Vec<u8>)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn run(request: &IncomingRequest) -> Result<String, String> {
    let (path, params) = path_and_query(request);
    let bucket =
        store::open(param(&params, "b").unwrap_or("")).map_err(|e| format!("open: {e:?}"))?;
    let key = param(&params, "k").unwrap_or("").to_string();
    let err = |e: store::Error| format!("error: {e:?}");
    Ok(match path.as_str() {
        "/set" => {
            bucket.set(&key, &read_body(request)?).map_err(err)?;
            "ok".into()
        }
        "/get" => match bucket.get(&key).map_err(err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => "<none>".into(),
        },
        "/delete" => {
            bucket.delete(&key).map_err(err)?;
            "ok".into()
        }
        "/exists" => bucket.exists(&key).map_err(err)?.to_string(),
        "/list" => {
            // Every key, following cursors page by page.
            let mut keys = Vec::new();
            let mut cursor = None;
            let mut pages = 0;
            loop {
                let page = bucket.list_keys(cursor).map_err(err)?;
                pages += 1;
                keys.extend(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            format!(
                "pages={pages} count={} first={:?} last={:?}",
                keys.len(),
                keys.first(),
                keys.last()
            )
        }
        "/increment" => {
            let delta = param(&params, "d")
                .unwrap_or("1")
                .parse()
                .map_err(|_| "bad delta".to_string())?;
            atomics::increment(&bucket, &key, delta)
                .map_err(err)?
                .to_string()
        }
        "/set-many" => {
            batch::set_many(&bucket, &split_pairs(&read_body(request)?)).map_err(err)?;
            "ok".into()
        }
        "/get-many" => {
            let keys: Vec<String> = key.split(',').map(str::to_string).collect();
            let found = batch::get_many(&bucket, &keys).map_err(err)?;
            found
                .iter()
                .map(|e| match e {
                    Some((k, v)) => format!("{k}={}", String::from_utf8_lossy(v)),
                    None => "-".into(),
                })
                .collect::<Vec<_>>()
                .join(",")
        }
        "/delete-many" => {
            let keys: Vec<String> = key.split(',').map(str::to_string).collect();
            batch::delete_many(&bucket, &keys).map_err(err)?;
            "ok".into()
        }
        extra => return extra_route(extra, &bucket, &key, request),
    })
}

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        match run(&request) {
            Ok(text) => respond(out, 200, text.as_bytes()),
            Err(text) => respond(out, 500, text.as_bytes()),
        }
    }
}

wasi::http::proxy::export!(Handler);

fn extra_route(
    path: &str,
    _: &store::Bucket,
    _: &str,
    _: &IncomingRequest,
) -> Result<String, String> {
    Err(format!("no route {path}"))
}
