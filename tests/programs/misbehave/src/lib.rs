//! A badly behaved service: each route breaks a rule, so tests can check that only that request
//! fails and that the host and every other service keep serving.

use std::sync::atomic::{AtomicU64, Ordering};

use test_support::{param, path_and_query, read_body, respond};
use wasi::http::types::{IncomingRequest, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
        inline: "package test:misbehave; world misbehave { import wasi:keyvalue/store@0.2.0-draft2; }",
        path: "../../../modules/wit/keyvalue-draft2",
        generate_all,
    });
}
use bindings::wasi::keyvalue::store;

struct Handler;

/// In the memory image (the data segment): 7 in every fresh instance.
static IN_IMAGE: AtomicU64 = AtomicU64::new(7);
/// In zeroed memory (bss): 0 in every fresh instance.
static ZEROED: AtomicU64 = AtomicU64::new(0);

fn size(params: &[(String, String)], name: &str) -> usize {
    param(params, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (path, params) = path_and_query(&request);
        match path.as_str() {
            "/ok" => respond(out, 200, b"fine"),
            "/trap" => panic!("deliberate trap"),
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/alloc" => {
                // Touch every page so the memory is really used.
                let mb = size(&params, "mb");
                let mut v: Vec<u8> = Vec::new();
                v.resize(mb << 20, 1);
                respond(out, 200, format!("allocated {} bytes", v.len()).as_bytes());
            }
            "/sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(size(&params, "ms") as u64));
                respond(out, 200, b"slept");
            }
            "/leftovers" => {
                // What an earlier request left in this memory, if anything: the two statics as
                // a fresh instance has them, and how many bytes of a fresh zeroed MiB are not
                // zero. Then scribbles over all three for the next request to find.
                let image = IN_IMAGE.swap(99, Ordering::Relaxed);
                let zeroed = ZEROED.swap(99, Ordering::Relaxed);
                let mut heap = std::hint::black_box(vec![0u8; 1 << 20]);
                let dirty = heap.iter().filter(|b| **b != 0).count();
                heap.fill(0xab);
                std::hint::black_box(&heap);
                respond(out, 200, format!("{image} {zeroed} {dirty}").as_bytes());
            }
            "/noresponse" => {}
            "/body" => match read_body(&request) {
                Ok(b) => respond(out, 200, format!("read {} bytes", b.len()).as_bytes()),
                Err(e) => respond(out, 413, format!("body error: {e}").as_bytes()),
            },
            "/kv" => {
                // Writes a key of `key` bytes and a value of `value` bytes; reports what happened.
                let bucket = match store::open(param(&params, "b").unwrap_or("")) {
                    Ok(b) => b,
                    Err(e) => return respond(out, 200, format!("open error: {e:?}").as_bytes()),
                };
                let key = "k".repeat(size(&params, "key").max(1));
                let value = vec![b'v'; size(&params, "value")];
                let text = match bucket.set(&key, &value) {
                    Ok(()) => "stored".to_string(),
                    Err(e) => format!("refused: {e:?}"),
                };
                respond(out, 200, text.as_bytes());
            }
            "/handles" => {
                // Opens `n` keyvalue buckets and keeps every handle: a guest hoarding host-side
                // resources.
                let mut kept = Vec::new();
                for _ in 0..size(&params, "n") {
                    match store::open("hoard") {
                        Ok(bucket) => kept.push(bucket),
                        Err(e) => {
                            return respond(
                                out,
                                200,
                                format!("refused after {}: {e:?}", kept.len()).as_bytes(),
                            );
                        }
                    }
                }
                respond(out, 200, format!("holding {}", kept.len()).as_bytes());
            }
            _ => respond(out, 404, b"no such route"),
        }
    }
}

wasi::http::proxy::export!(Handler);
