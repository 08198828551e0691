//! Service traffic: `http://HOST:PORT/<service>/<rest>` reaches `<service>`, which sees `/<rest>`
//! as its path and the prefix in `x-forwarded-prefix`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use doppel_api::Limits;
use doppel_replication::PeerClient;
use doppel_store::Writer;

use crate::admission;
use crate::forward::{self, FORWARDED_BY};
use crate::invoke::{InFlight, ResponseBody, host_response, invoke};
use crate::listener::{self, IngressLimits};
use crate::placement::Route;
use crate::services::{Registry, Service};

/// Serves service traffic on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for at most `grace`. Requests for services active elsewhere go to those hosts through
/// `peers` (mutual TLS, like every host-to-host request).
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    peers: PeerClient,
    limits: IngressLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let (registry, peers) = (registry.clone(), peers.clone());
        // How often a request was forwarded is a peer's word, never a client's.
        req.headers_mut().remove(FORWARDED_BY);
        async move { Ok::<_, std::convert::Infallible>(route(&registry, &peers, req).await) }
    });
    listener::serve(
        "service",
        listener,
        &limits,
        listener::Tls::Plain,
        service,
        shutdown,
        grace,
    )
    .await;
}

/// The peer route forwarded requests arrive on ([`forward::FORWARD`]): routed as if they had come
/// to the service port, with the forwarding hosts' marks, which only a peer can set.
pub fn peer_routes(registry: Arc<Registry>, peers: PeerClient) -> axum::Router {
    let handler = move |req: axum::extract::Request| {
        let (registry, peers) = (registry.clone(), peers.clone());
        async move {
            let (mut parts, body) = req.into_parts();
            let Some(original) = forward::original_uri(&parts.uri) else {
                return host_response(StatusCode::NOT_FOUND, "not a forwarded request")
                    .map(axum::body::Body::new);
            };
            parts.uri = original;
            let req = Request::from_parts(parts, body);
            route(&registry, &peers, req)
                .await
                .map(axum::body::Body::new)
        }
    };
    axum::Router::new().route(
        &format!("{}/{{*path}}", forward::FORWARD.0),
        axum::routing::any(handler),
    )
}

/// How much of an abandoned request body is read and thrown away, and for how long, before the
/// connection is closed anyway.
const DRAIN_BYTES: usize = 4 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request body that, when dropped before its end (the guest answered without reading it all,
/// or it went over the size limit), is read to its end in the background, within bounds. Closing
/// a socket with unread bytes makes the kernel send a reset, which can destroy the response still
/// on its way to the client; draining first lets the connection close cleanly (a lingering close).
struct Drain<B: RequestBody>(Option<B>);

/// What a request body must be to be served here: the service port's and the peer route's alike.
pub(crate) trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Unpin
    + Send
    + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Unpin
        + Send
        + 'static
{
}

impl<B: RequestBody> http_body::Body for Drain<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.0.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .as_ref()
            .map(http_body::Body::size_hint)
            .unwrap_or_default()
    }
}

impl<B: RequestBody> Drop for Drain<B> {
    fn drop(&mut self) {
        let Some(mut body) = self.0.take() else {
            return;
        };
        if http_body::Body::is_end_stream(&body) {
            return;
        }
        tokio::spawn(async move {
            let drain = async {
                let mut seen = 0;
                while let Some(Ok(frame)) = body.frame().await {
                    seen += frame.data_ref().map_or(0, |d| d.len());
                    if seen > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}

/// Splits `/name/rest` into `name` and `/rest`.
pub(crate) fn split_path(path: &str) -> (&str, &str) {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    }
}

/// A request for a service, as routing sees it.
struct Asked<'a> {
    /// The service's name (the first path segment).
    name: &'a str,
    /// The rest of the path, which the guest sees.
    rest: &'a str,
    /// How many hosts it passed through already.
    hops: usize,
    /// The service, when this host has it loaded.
    service: Option<Arc<Service>>,
}

impl Asked<'_> {
    /// Where to serve it, by this host's view of the placements.
    fn decide(&self, registry: &Registry) -> Route {
        static NO_RULES: std::collections::BTreeMap<String, String> =
            std::collections::BTreeMap::new();
        let on = self
            .service
            .as_ref()
            .map_or(&NO_RULES, |s| &s.record.placement.on);
        registry.placements().route(self.name, self.hops, on)
    }
}

/// A request that carries this header (any value) is answered with [`SERVED_BY`]: for tracing a
/// request through a cluster (which host answered it), as the stress harness of planned moves
/// does. Forwarded requests carry it on, like every header.
const TRACE: http::HeaderName = http::HeaderName::from_static("x-doppel-trace");
/// The name of the host that answered a traced request (ran its guest, or gave up on it).
const SERVED_BY: http::HeaderName = http::HeaderName::from_static("x-doppel-served-by");
/// On a standby twin's answers: how stale its state may be, in ms (see `doppel_backup::twin`).
const TWIN_LAG: http::HeaderName = http::HeaderName::from_static("x-doppel-twin-lag-ms");

async fn route(
    registry: &Registry,
    peers: &PeerClient,
    req: Request<impl RequestBody>,
) -> Response<ResponseBody> {
    let traced = req.headers().contains_key(TRACE);
    let mut response = answer(registry, peers, req).await;
    // A forwarded request's answer names the host that answered it already.
    if traced && !response.headers().contains_key(SERVED_BY) {
        let name = registry
            .placements()
            .host_name(registry.placements().this());
        if let Ok(name) = HeaderValue::from_str(&name) {
            response.headers_mut().insert(SERVED_BY, name);
        }
    }
    if let Some(lag) = registry.twin_lag_ms() {
        response
            .headers_mut()
            .insert(TWIN_LAG, HeaderValue::from(lag));
    }
    response
}

async fn answer(
    registry: &Registry,
    peers: &PeerClient,
    req: Request<impl RequestBody>,
) -> Response<ResponseBody> {
    // Owned: the request moves on (to a guest or another host) while the name is still needed.
    let path = req.uri().path().to_string();
    let (name, rest) = split_path(&path);
    if name.is_empty() {
        return host_response(
            StatusCode::NOT_FOUND,
            "this is a doppel host; services answer at /SERVICE/... (`doppel ls` lists them)",
        );
    }
    let mut service = registry.get(name);
    if service.is_none() {
        // Perhaps deployed through another host a moment ago and not loaded here yet.
        service = registry.load_if_deployed(name).await;
    }
    let asked = Asked {
        name,
        rest,
        // Each host a request passes through adds itself; see `Placements::route`.
        hops: req.headers().get_all(FORWARDED_BY).iter().count(),
        service,
    };
    // Counted before the route is decided, so that a hand-over that switches the route meanwhile
    // still waits for this request (see `moves`).
    let in_flight = asked.service.as_ref().map(|s| InFlight::start(&s.stats));
    let arrived = std::time::Instant::now();
    let response = match asked.decide(registry) {
        Route::Local(epoch) => match in_flight {
            Some(in_flight) => {
                serve_here(
                    registry,
                    &asked,
                    epoch,
                    in_flight,
                    req.map(|b| Drain(Some(b))),
                )
                .await
            }
            None => not_deployed(name),
        },
        Route::Unavailable(reason) => cannot_run(name, &reason),
        Route::Forward(targets) => {
            drop(in_flight);
            forward_once_more(registry, peers, &asked, targets, req).await
        }
    };
    if let Some(service) = &asked.service {
        service.stats.answered(response.status(), arrived.elapsed());
    }
    response
}

/// Forwards a request to the hosts the service is active on. When none answers, this host's view
/// may be behind (the service moved from a dead host a moment ago): it reads the placements
/// again and decides once more — forward to the new hosts, or serve here — before giving up.
async fn forward_once_more(
    registry: &Registry,
    peers: &PeerClient,
    asked: &Asked<'_>,
    targets: Vec<String>,
    req: Request<impl RequestBody>,
) -> Response<ResponseBody> {
    let limits = asked
        .service
        .as_ref()
        .map_or_else(Limits::default, |s| (*s.limits).clone());
    if let Some(service) = &asked.service {
        service.stats.forwarded.fetch_add(1, Ordering::Relaxed);
    }
    let timeout = Duration::from_millis(limits.timeout_ms + 5_000);
    let start = tokio::time::Instant::now();
    let (parts, body) = req.into_parts();
    if let Some(refused) = over_limit(&parts.headers, limits.max_body) {
        return refused;
    }
    let this = registry.placements().this();
    // A small body is held, so that it can go to another host if the first does not answer; a
    // larger one is streamed to one host as it arrives (see `forward`).
    let body = match admission::prefetch(Drain(Some(body)), start).await {
        Ok(body) => body,
        Err(refused) => return answer_refused(&refused),
    };
    let body = match body.whole() {
        Ok(body) => body,
        Err(streaming) => {
            let limit = usize::try_from(limits.max_body).unwrap_or(usize::MAX);
            let body = Limited::new(streaming, limit);
            return forward::send_streaming(peers, this, &targets[0], timeout, &parts, body)
                .await
                .unwrap_or_else(forward::Failed::answer);
        }
    };
    if body.len() as u64 > limits.max_body {
        return too_large(limits.max_body);
    }
    let why = match forward::send(peers, this, &targets, timeout, &parts, &body).await {
        Ok(response) => return response,
        Err(why) => why,
    };
    if let Err(e) = registry.placements().refresh().await {
        tracing::debug!(error = %e, "cannot refresh placements");
        return forward::unavailable(&why);
    }
    match (asked.decide(registry), &asked.service) {
        (Route::Forward(again), _) if again != targets => {
            match forward::send(peers, this, &again, timeout, &parts, &body).await {
                Ok(response) => response,
                Err(why) => forward::unavailable(&why),
            }
        }
        (Route::Local(epoch), Some(service)) => {
            let in_flight = InFlight::start(&service.stats);
            let req = Request::from_parts(parts, Full::new(body));
            serve_here(registry, asked, epoch, in_flight, req).await
        }
        _ => forward::unavailable(&why),
    }
}

fn not_deployed(name: &str) -> Response<ResponseBody> {
    host_response(
        StatusCode::NOT_FOUND,
        format!("no service named {name:?} is deployed here"),
    )
}

fn cannot_run(name: &str, reason: &str) -> Response<ResponseBody> {
    let mut response = host_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the service {name:?} cannot run now: {reason}"),
    );
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// The answer to a request turned away before it reached a guest.
fn answer_refused(refused: &admission::Refused) -> Response<ResponseBody> {
    let mut response = host_response(refused.status(), refused.to_string());
    if matches!(refused, admission::Refused::Busy { .. }) {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The 413 for a request whose declared length is over `max_body`.
fn over_limit(headers: &http::HeaderMap, max_body: u64) -> Option<Response<ResponseBody>> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    declared
        .is_some_and(|len| len > max_body)
        .then(|| too_large(max_body))
}

fn too_large(max_body: u64) -> Response<ResponseBody> {
    host_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is over this service's limit of {max_body} bytes"),
    )
}

/// Runs a request for `asked`'s service here, its writes carrying `epoch`.
async fn serve_here<B>(
    registry: &Registry,
    asked: &Asked<'_>,
    epoch: Option<u64>,
    in_flight: InFlight,
    mut req: Request<B>,
) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let start = tokio::time::Instant::now();
    let Some(service) = asked.service.clone() else {
        return not_deployed(asked.name);
    };
    let prefix = format!("/{}", asked.name);
    let rest = asked.rest;
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    match Uri::builder().path_and_query(path_and_query).build() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return host_response(StatusCode::BAD_REQUEST, format!("bad request path: {e}")),
    }
    let headers = req.headers_mut();
    match HeaderValue::from_str(&prefix) {
        Ok(v) => {
            headers.insert("x-forwarded-prefix", v);
        }
        Err(_) => return host_response(StatusCode::BAD_REQUEST, "bad service name"),
    }
    if !headers.contains_key(http::header::HOST) {
        // wasi:http needs an authority; HTTP/1.0 clients may send none.
        headers.insert(http::header::HOST, HeaderValue::from_static("localhost"));
    }
    let max_body = service.limits.max_body;
    if let Some(refused) = over_limit(headers, max_body) {
        drop(req.into_body());
        return refused;
    }
    // No instance until the body's beginning is here (a trickling client holds no slot), and
    // then only within the service's share of this host (see `admission`).
    let (parts, body) = req.into_parts();
    let body = match admission::prefetch(body, start).await {
        Ok(body) => body,
        Err(refused) => {
            service.log.host(format!("request refused: {refused}"));
            return answer_refused(&refused);
        }
    };
    let in_flight = match service.slots.take(asked.name).await {
        Ok(slot) => in_flight.holding(slot),
        Err(busy) => {
            service.stats.errors.fetch_add(1, Ordering::Relaxed);
            return answer_refused(&busy);
        }
    };
    let req = Request::from_parts(parts, body);
    // A body without a declared length is cut off at the limit; the guest sees a read error.
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    let req = req.map(|body| {
        Limited::new(body, limit).map_err(move |e| {
            if e.is::<http_body_util::LengthLimitError>() {
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(max_body))
            } else {
                wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
            }
        })
    });
    let writer = epoch.map(|epoch| Writer {
        host: registry.placements().this(),
        epoch,
    });
    invoke(
        registry.runtime(),
        registry.store(),
        service,
        writer,
        in_flight,
        req,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn paths() {
        assert_eq!(split_path("/hello"), ("hello", "/"));
        assert_eq!(split_path("/hello/"), ("hello", "/"));
        assert_eq!(split_path("/hello/a/b"), ("hello", "/a/b"));
        assert_eq!(split_path("/"), ("", "/"));
    }
}
