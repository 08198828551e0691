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
            (k.to_string(), v.to_string())
        })
        .collect();
    (path.to_string(), params)
}

/// The value of query parameter `name`.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
