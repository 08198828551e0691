//! Helpers the guest test programs share, over the raw `wasi` bindings (no SDK on purpose: these
//! programs test the host's interfaces, not our SDK).

use std::io::{Read, Write};

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Sends `status` with `body` as the response.
pub fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("response body");
    ResponseOutparam::set(out, Ok(response));
    {
        let mut stream = outgoing.write().expect("body stream");
        // Chunked: a single write may be at most 4 KiB in wasi:io.
        for chunk in body.chunks(4096) {
            stream.write_all(chunk).expect("write body");
        }
        stream.flush().expect("flush body");
    }
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

/// The whole request body, or the error text if it could not be read.
pub fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request
        .consume()
        .map_err(|()| "body already taken".to_string())?;
    let mut stream = body.stream().map_err(|()| "no body stream".to_string())?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// The path (without query) and the query parameters of a request.
pub fn path_and_query(request: &IncomingRequest) -> (String, Vec<(String, String)>) {
    let full = request.path_with_query().unwrap_or_default();
    let (path, query) = full.split_once('?').unwrap_or((&full, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), percent_decoded(v))
        })
        .collect();
    (path.to_string(), params)
}

/// `%XX` escapes decoded (lossily, as UTF-8), so that tests can send any bytes in a value.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of query parameter `name`.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The routes both keyvalue test programs serve, over whichever draft's bindings are in scope at
/// the call site: `store`, `atomics`, `batch`, plus `list_page` and `extra_route` (the parts where
/// the drafts differ). Query: `b` bucket, `k` key, `d` delta; values in the body.
#[macro_export]
macro_rules! keyvalue_routes {
    () => {
        use wasi::http::types::{IncomingRequest, ResponseOutparam};
        use $crate::{param, path_and_query, read_body, respond};

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
            let bucket = store::open(param(&params, "b").unwrap_or(""))
                .map_err(|e| format!("open: {e:?}"))?;
            let key = param(&params, "k").unwrap_or("").to_string();
            let err = |e: store::Error| format!("error: {e:?}");
            Ok(match path.as_str() {
                // Says it started (in the service log), waits `ms`, then sets: a write that
                // lands long after its request began, for the fencing test.
                "/slow-set" => {
                    let ms: u64 = param(&params, "ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    println!("slow-set {key}: waiting {ms} ms");
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                    bucket.set(&key, &read_body(request)?).map_err(err)?;
                    "ok".into()
                }
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
                        let (page, next) = list_page(&bucket, cursor.take()).map_err(err)?;
                        pages += 1;
                        keys.extend(page);
                        match next {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                    // In key order: a store may list in any order (doppel's follows the sealed keys).
                    let listed = keys.len();
                    keys.sort();
                    keys.dedup();
                    format!(
                        "pages={pages} count={listed} distinct={} first={:?} last={:?}",
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
    };
}
