//! Drives `wasi:blobstore@0.2.0-draft` over HTTP, as a wasmCloud component would, so tests can
//! check the host's implementation from outside. Every object is streamed: the request body is
//! copied into the object and the object into the response 64 KiB at a time, never held whole.
//!
//! - `PUT /o/NAME[?order=before]` stores the body (container `docs`, made on first use); the
//!   default calls `write-data` after the body is written (wasmCloud's order), `before` first.
//! - `GET /o/NAME[?start=A&end=B]` streams it back (inclusive offsets); `GET /sync/NAME` reads
//!   it with `incoming-value-consume-sync`.
//! - `GET /info/NAME` → `SIZE`; `GET /list` → names, one per line; `DELETE /o/NAME`.
//! - `POST /copy/A/B`, `POST /move/A/B`; `DELETE /container` removes `docs` and all in it.
//! - `PUT /abandon/NAME` writes the body and drops the value without `finish`.

use test_support::{param, path_and_query, respond};
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

mod bindings {
    wit_bindgen::generate!({
        inline: "package test:blobs; world blobs { include wasi:blobstore/imports@0.2.0-draft; }",
        path: "../../../modules/wit/blobstore",
        with: {
            "wasi:io/streams@0.2.1": ::wasi::io::streams,
            "wasi:io/error@0.2.1": ::wasi::io::error,
            "wasi:io/poll@0.2.1": ::wasi::io::poll,
        },
        generate_all,
    });
}
use bindings::wasi::blobstore::blobstore as store;
use bindings::wasi::blobstore::container::Container;
use bindings::wasi::blobstore::types::{IncomingValue, ObjectId, OutgoingValue};

const CONTAINER: &str = "docs";
const PIECE: u64 = 64 << 10;

struct Handler;

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (path, params) = path_and_query(&request);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = request.method();
        let result = match (&method, parts.as_slice()) {
            (Method::Put, ["o", name]) => put(
                &request,
                name,
                param(&params, "order") == Some("before"),
                true,
            ),
            (Method::Put, ["abandon", name]) => put(&request, name, false, false),
            (Method::Get, ["o", name]) => {
                let start = param(&params, "start").and_then(|s| s.parse().ok());
                let end = param(&params, "end").and_then(|s| s.parse().ok());
                return get(out, name, start.unwrap_or(0), end.unwrap_or(u64::MAX));
            }
            (Method::Get, ["sync", name]) => container()
                .and_then(|c| c.get_data(name, 0, u64::MAX))
                .and_then(IncomingValue::incoming_value_consume_sync)
                .map(|bytes| format!("{}", bytes.len())),
            (Method::Get, ["info", name]) => container()
                .and_then(|c| c.object_info(name))
                .map(|info| info.size.to_string()),
            (Method::Get, ["list"]) => list(),
            (Method::Delete, ["o", name]) => container()
                .and_then(|c| c.delete_object(name))
                .map(|()| "deleted".into()),
            (Method::Delete, ["container"]) => {
                store::delete_container(CONTAINER).map(|()| "deleted".into())
            }
            (Method::Post, ["copy", a, b]) => {
                store::copy_object(&id(a), &id(b)).map(|()| "copied".into())
            }
            (Method::Post, ["move", a, b]) => {
                store::move_object(&id(a), &id(b)).map(|()| "moved".into())
            }
            _ => Err(format!("no route {path}")),
        };
        match result {
            Ok(text) => respond(out, 200, text.as_bytes()),
            Err(e) => respond(out, 500, e.as_bytes()),
        }
    }
}

fn id(name: &str) -> ObjectId {
    ObjectId {
        container: CONTAINER.into(),
        object: name.into(),
    }
}

/// The container, made if it does not exist yet.
fn container() -> Result<Container, String> {
    if store::container_exists(CONTAINER)? {
        store::get_container(CONTAINER)
    } else {
        store::create_container(CONTAINER)
    }
}

fn put(
    request: &IncomingRequest,
    name: &str,
    before: bool,
    finish: bool,
) -> Result<String, String> {
    let container = container()?;
    let body = request.consume().map_err(|()| "no body")?;
    let input = body.stream().map_err(|()| "no body stream")?;
    let value = OutgoingValue::new_outgoing_value();
    if before {
        container.write_data(name, &value)?;
    }
    let written = {
        let output = value
            .outgoing_value_write_body()
            .map_err(|()| "no value stream")?;
        copy(&input, &output)?
    };
    if !finish {
        return Ok(format!("{written} written, value dropped"));
    }
    if !before {
        container.write_data(name, &value)?;
    }
    OutgoingValue::finish(value)?;
    Ok(written.to_string())
}

fn get(out: ResponseOutparam, name: &str, start: u64, end: u64) {
    let value = match container().and_then(|c| c.get_data(name, start, end)) {
        Ok(value) => value,
        Err(e) => return respond(out, 404, e.as_bytes()),
    };
    let size = value.size();
    let input = match IncomingValue::incoming_value_consume_async(value) {
        Ok(input) => input,
        Err(e) => return respond(out, 500, e.as_bytes()),
    };
    let headers = Fields::new();
    let _ = headers.set("content-length", &[size.to_string().into_bytes()]);
    let response = OutgoingResponse::new(headers);
    let outgoing = response.body().expect("response body");
    ResponseOutparam::set(out, Ok(response));
    {
        let output = outgoing.write().expect("body stream");
        // A failure halfway can only cut the body short: the client sees fewer bytes than the
        // content-length promised.
        let _ = copy(&input, &output);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

fn list() -> Result<String, String> {
    let names = container()?.list_objects()?;
    let mut all = Vec::new();
    loop {
        let (page, end) = names.read_stream_object_names(100)?;
        all.extend(page);
        if end {
            break;
        }
    }
    all.sort();
    Ok(all.join("\n"))
}

/// Copies `input` to `output` a piece at a time; the bytes copied.
fn copy(input: &InputStream, output: &OutputStream) -> Result<u64, String> {
    let mut total = 0u64;
    loop {
        let bytes = match input.blocking_read(PIECE) {
            Ok(bytes) => bytes,
            Err(StreamError::Closed) => break,
            Err(e) => return Err(stream_error(e)),
        };
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let permit = output.check_write().map_err(stream_error)?;
            if permit == 0 {
                output.subscribe().block();
                continue;
            }
            let n = rest.len().min(permit as usize);
            output.write(&rest[..n]).map_err(stream_error)?;
            rest = &rest[n..];
        }
        total += bytes.len() as u64;
    }
    output.blocking_flush().map_err(stream_error)?;
    Ok(total)
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the stream is closed".into(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

wasi::http::proxy::export!(Handler);
