//! The bridge from `wasi:http` to the router: read the request, run the handler, write the answer.

use std::io::{Read, Write};

use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use crate::http::{IntoResponse, Request, Response};
use crate::{Error, Router};

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.to_ascii_uppercase(),
    }
}

fn read(incoming: IncomingRequest) -> Result<Request, Error> {
    let full = incoming.path_with_query().unwrap_or_else(|| "/".into());
    let (path, query) = full.split_once('?').unwrap_or((&full, ""));
    let headers = incoming.headers().entries();
    let mut body = Vec::new();
    if let Ok(incoming_body) = incoming.consume() {
        let mut stream = incoming_body
            .stream()
            .map_err(|()| Error::bad_request("the request body cannot be read"))?;
        stream.read_to_end(&mut body).map_err(|e| {
            Error::new(
                413,
                "Content Too Large",
                format!("the request body could not be read: {e}"),
            )
        })?;
    }
    Ok(Request {
        method: method_name(&incoming.method()),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
        params: Default::default(),
        caller: None,
    })
}

fn write(out: ResponseOutparam, response: Response) {
    let headers = Fields::new();
    for (name, value) in &response.headers {
        let _ = headers.append(name, value.as_bytes());
    }
    let outgoing = OutgoingResponse::new(headers);
    let _ = outgoing.set_status_code(response.status);
    let Ok(body) = outgoing.body() else { return };
    ResponseOutparam::set(out, Ok(outgoing));
    if let Ok(mut stream) = body.write() {
        // wasi:io takes at most 4 KiB a write.
        for chunk in response.body.chunks(4096) {
            if stream.write_all(chunk).is_err() {
                return;
            }
        }
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Serves one request with the router `routes` builds. Called by [`crate::service!`].
#[doc(hidden)]
pub fn serve(incoming: IncomingRequest, out: ResponseOutparam, routes: fn() -> Router) {
    let response = match read(incoming) {
        Ok(request) => routes().handle(request),
        Err(e) => e.into_response(),
    };
    write(out, response);
}
