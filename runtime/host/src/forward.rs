//! Forwarding a request to the host a service is active on, when it is not active here. The
//! request goes to that host's peer listener (mutual TLS: a client's request never crosses the
//! network between hosts in clear), at [`FORWARD`] followed by the path it came with, with its
//! method, headers and body, marked with one more `x-doppel-forwarded-by` (each forwarding host
//! adds its id), so that the receiving host serves it itself unless it is handing the service
//! over; a request is forwarded at most twice. The mark counts only there: the service port
//! drops it from clients.
//!
//! Bodies are streamed, both ways, with back-pressure: a request's body is held only while it
//! is small (what `admission::prefetch` reads before anything else, so that it can go to a
//! second host if the first does not answer); a larger one goes to one host as it arrives, at
//! the minimum rate or cut off. An answer is passed back as it comes, within the timeout.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Response, StatusCode};
use http_body_util::BodyExt;

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
        let out = request(peers, this, target, timeout, parts, &path).body(body.clone());
        match out.send().await {
            Ok(answer) => return Ok(relay(answer)),
            Err(e) => last = format!("{target}: {e}"),
        }
    }
    Err(last)
}

/// Sends the request to `target` with `body` streamed as it arrives (it cannot be sent twice),
/// and relays the answer.
pub async fn send_streaming<B>(
    peers: &PeerClient,
    this: u64,
    target: &str,
    timeout: Duration,
    parts: &http::request::Parts,
    body: B,
) -> Result<Response<ResponseBody>, Failed>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    request(peers, this, target, timeout, parts, &path)
        .body(reqwest::Body::wrap(body))
        .send()
        .await
        .map(relay)
        .map_err(|e| {
            // A client that stopped sending its body is answered as such, not as a dead host.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(error) = cause {
                if error.is::<crate::admission::TooSlow>() {
                    return Failed::BodyTooSlow;
                }
                cause = error.source();
            }
            Failed::Host(format!("{target}: {e}"))
        })
}

/// Why a streamed forward failed.
pub enum Failed {
    /// The client's body fell behind the minimum rate.
    BodyTooSlow,
    /// The target did not answer.
    Host(String),
}

impl Failed {
    /// The answer to the client.
    pub fn answer(self) -> Response<ResponseBody> {
        match self {
            Failed::BodyTooSlow => host_response(
                StatusCode::REQUEST_TIMEOUT,
                crate::admission::TooSlow.to_string(),
            ),
            Failed::Host(why) => unavailable(&why),
        }
    }
}

/// The forwarded request to `target`, without its body.
fn request(
    peers: &PeerClient,
    this: u64,
    target: &str,
    timeout: Duration,
    parts: &http::request::Parts,
    path: &str,
) -> reqwest::RequestBuilder {
    let mut out = peers
        .host_request(target, parts.method.clone(), FORWARD, path)
        .timeout(timeout)
        .header(FORWARDED_BY, this.to_string());
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != http::header::HOST {
            out = out.header(name, value);
        }
    }
    out
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

/// The answer of the active host, passed back as it comes (its body streamed, within the
/// request's timeout; cut off, the client's answer is cut off too).
fn relay(answer: reqwest::Response) -> Response<ResponseBody> {
    let answer: http::Response<reqwest::Body> = answer.into();
    let (parts, body) = answer.into_parts();
    let body = body
        .map_err(|e| {
            wasmtime_wasi_http::Error::InternalError(Some(format!(
                "the active host's answer was cut off: {e}"
            )))
        })
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != http::header::CONTENT_LENGTH {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
