//! Forwarding a request to the host a service is active on, when it is not active here. The
//! request goes to that host's peer listener (mutual TLS: a client's request never crosses the
//! network between hosts in clear), at [`FORWARD`] followed by the path it came with, with its
//! method, headers and body, marked with one more `x-doppel-forwarded-by` (each forwarding host
//! adds its id), so that the receiving host serves it itself unless it is handing the service
//! over; a request is forwarded at most twice. The mark counts only there: the service port
//! drops it from clients.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use doppel_replication::{HostRoute, PeerClient};

use crate::invoke::{ResponseBody, host_response};

/// Marks a forwarded request; its value is the forwarding host's id.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-doppel-forwarded-by");

/// The peer route forwarded requests arrive on, followed by their own path.
pub const FORWARD: HostRoute = HostRoute("/forward");

/// The path (and query) a forwarded request came with, from the path it arrived on at
/// [`FORWARD`] (below the peer routes' prefix).
pub fn original_uri(uri: &http::Uri) -> Option<http::Uri> {
    let rest = uri.path_and_query()?.as_str().strip_prefix(FORWARD.0)?;
    rest.starts_with('/').then(|| rest.parse().ok()).flatten()
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Reads a request to forward: its head and its whole body, which may be at most `max_body`
/// bytes (a 413 answer otherwise). Buffered, so that it can go to a second host if the first
/// does not answer.
pub async fn buffer<B>(
    req: Request<B>,
    max_body: u64,
) -> Result<(http::request::Parts, Bytes), Response<ResponseBody>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) => Err(host_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body unreadable or over this service's limit of {max_body} bytes: {e}"
            ),
        )),
    }
}

/// Sends the request to the first of `targets` that answers, and relays its answer; `Err` with
/// the last failure when none answers.
pub async fn send(
    peers: &PeerClient,
    this: u64,
    targets: &[String],
    timeout: Duration,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<Response<ResponseBody>, String> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut last = String::new();
    for target in targets {
        let mut out = peers
            .host_request(target, parts.method.clone(), FORWARD, &path)
            .timeout(timeout)
            .header(FORWARDED_BY, this.to_string())
            .body(body.clone());
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) && name != http::header::HOST {
                out = out.header(name, value);
            }
        }
        match out.send().await {
            Ok(answer) => return Ok(relay(answer).await),
            Err(e) => last = format!("{target}: {e}"),
        }
    }
    Err(last)
}

/// The answer when no active host answers.
pub fn unavailable(why: &str) -> Response<ResponseBody> {
    let mut response = host_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the service is active on another host, which does not answer ({why}); \
             failover will move it, retry shortly"
        ),
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}

/// The answer of the active host, passed back as it came.
async fn relay(answer: reqwest::Response) -> Response<ResponseBody> {
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(e) => {
            return host_response(
                StatusCode::BAD_GATEWAY,
                format!("the active host's answer was cut off: {e}"),
            );
        }
    };
    let mut response = Response::new(
        Full::new(body)
            .map_err(|e: std::convert::Infallible| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != http::header::CONTENT_LENGTH {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
