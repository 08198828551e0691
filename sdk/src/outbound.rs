//! Calling other servers over HTTP (`wasi:http/outgoing-handler`): an identity provider, a
//! payment service, another authority's API. A doppel host lets a service call only the servers
//! its deploy names (`doppel deploy --allow-outbound https://idp.example.de`); a call anywhere
//! else fails with a 500 that says so, and an unreachable server with a 502 or 504, so a handler
//! can pass the error on with `?`.
//!
//! ```no_run
//! # fn demo() -> Result<(), doppel_sdk::Error> {
//! let keys = doppel_sdk::outbound::get("https://idp.example.de/.well-known/jwks.json")?;
//! let text = keys.text();
//! # Ok(()) }
//! ```

use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

use crate::Error;

/// The largest answer read, in bytes (the host cuts off at 16 MiB as well).
const MAX_BODY: usize = 16 << 20;

/// What a server answered.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                502,
                "Bad Gateway",
                format!("the answer is not the JSON expected: {e}"),
            )
        })
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Answer, Error> {
    send(Method::Get, url, None)
}

/// `POST url` with `body` of `content_type`.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<Answer, Error> {
    send(Method::Post, url, Some((content_type, body)))
}

fn refused(url: &str, code: &ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
            Error::internal(format!(
                "this service may not call {url}: its deploy does not allow that server \
             (doppel deploy --allow-outbound SCHEME://HOST[:PORT])"
            ))
        }
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::DnsTimeout => Error::new(
            504,
            "Gateway Timeout",
            format!("{url} did not answer in time"),
        ),
        other => Error::new(
            502,
            "Bad Gateway",
            format!("calling {url} failed: {other:?}"),
        ),
    }
}

fn send(method: Method, url: &str, body: Option<(&str, &[u8])>) -> Result<Answer, Error> {
    let bad = || Error::internal(format!("{url:?} is not an http:// or https:// URL"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        _ => return Err(bad()),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    if let Some((content_type, _)) = body {
        headers
            .append("content-type", content_type.as_bytes())
            .map_err(|_| bad())?;
    }
    let request = OutgoingRequest::new(headers);
    let set = request.set_method(&method).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(authority)).is_ok()
        && request.set_path_with_query(Some(path)).is_ok();
    if !set {
        return Err(bad());
    }
    let outgoing = request.body().map_err(|()| bad())?;
    if let Some((_, bytes)) = body {
        let stream = outgoing.write().map_err(|()| bad())?;
        for chunk in bytes.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| {
                Error::new(
                    502,
                    "Bad Gateway",
                    format!("sending to {url} failed: {e:?}"),
                )
            })?;
        }
        drop(stream);
    }
    let future =
        wasi::http::outgoing_handler::handle(request, None).map_err(|e| refused(url, &e))?;
    OutgoingBody::finish(outgoing, None).map_err(|e| refused(url, &e))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(refused(url, &e)),
        _ => return Err(Error::internal(format!("calling {url}: no answer"))),
    };
    let status = response.status();
    let mut bytes = Vec::new();
    let incoming = response
        .consume()
        .map_err(|()| refused(url, &ErrorCode::HttpProtocolError))?;
    {
        let stream = incoming
            .stream()
            .map_err(|()| refused(url, &ErrorCode::HttpProtocolError))?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) if bytes.len() + chunk.len() > MAX_BODY => {
                    return Err(Error::new(
                        502,
                        "Bad Gateway",
                        format!("{url} answered more than {MAX_BODY} bytes"),
                    ));
                }
                Ok(chunk) => bytes.extend(chunk),
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(e) => {
                    return Err(Error::new(
                        502,
                        "Bad Gateway",
                        format!("reading {url}'s answer failed: {e:?}"),
                    ));
                }
            }
        }
    }
    Ok(Answer {
        status,
        body: bytes,
    })
}
