//! Running one request: a fresh instance of the service's pre-instantiated component, in its own
//! store with the service's limits, on its own task.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use doppel_store::{Store, Writer};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime::UpdateDeadline;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::keyvalue::KvCtx;
use crate::logs::LogStream;
use crate::runtime::Runtime;
use crate::services::{Service, Stats};
use crate::state::{MemoryLimiter, RequestState};

/// The body type of every response the ingress sends.
pub type ResponseBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

const TIMED_OUT: &str = "the request ran past its time limit";

/// Host-side resources one request may hold at once; creating more fails (a trap for most
/// interfaces, an error for some), and only that request.
pub(crate) const MAX_HOST_RESOURCES: usize = 10_000;

/// The trap the epoch callback raises at the deadline, recognised by type, not by its text.
#[derive(Debug)]
struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(TIMED_OUT)
    }
}

impl std::error::Error for TimedOut {}

/// A plain-text response made by the host, not the guest.
pub fn host_response(status: StatusCode, text: impl Into<String>) -> Response<ResponseBody> {
    let mut text = text.into();
    text.push('\n');
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A fresh wasmtime store for one request of `service`: its capabilities, limits and deadline.
pub(crate) fn new_store(
    runtime: &Runtime,
    store: &Arc<dyn Store>,
    service: &Service,
    writer: Option<Writer>,
) -> wasmtime::Store<RequestState> {
    let timeout = Duration::from_millis(service.limits.timeout_ms);
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(LogStream::new(service.log.clone(), "stdout"))
        .stderr(LogStream::new(service.log.clone(), "stderr"))
        .envs(&service.env)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    // Every host-side resource a guest creates (streams, fields, pollables, keyvalue handles)
    // lives in this table: its size bounds them all.
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_HOST_RESOURCES);
    let state = RequestState {
        table,
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        hooks: crate::outbound::Outbound::new(service.outbound.clone(), runtime.own_listeners()),
        kv: KvCtx::new(
            service.name.clone(),
            service.limits.clone(),
            store.clone(),
            writer,
            service.local.clone(),
        ),
        blobs: crate::blobstore::BlobCtx::new(
            service.name.clone(),
            service.limits.clone(),
            store.clone(),
            writer,
        ),
        config: service.config.clone(),
        limiter: MemoryLimiter::new(
            usize::try_from(service.limits.max_memory).unwrap_or(usize::MAX),
        ),
        log: service.log.clone(),
    };
    let mut wstore = wasmtime::Store::new(&runtime.engine, state);
    wstore.limiter(|s| &mut s.limiter);
    // Checked at every epoch tick: a guest computing past its deadline traps; one still within it
    // yields, so that other requests on this worker thread get their turn.
    let deadline = Instant::now() + timeout;
    wstore.set_epoch_deadline(1);
    wstore.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::new(TimedOut))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });

    wstore
}

/// One request about to run or running in a guest, counted in its service's `in_flight` while
/// it lives. Taken before the request's route is decided, so that a host handing a service over
/// never misses a request that saw the old placement.
pub(crate) struct InFlight(Arc<Stats>, Option<tokio::sync::OwnedSemaphorePermit>);

impl InFlight {
    /// Counts one request of the service with these `stats`.
    pub(crate) fn start(stats: &Arc<Stats>) -> InFlight {
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(stats.clone(), None)
    }

    /// The same request, holding one of its service's instance slots until it is done.
    pub(crate) fn holding(mut self, slot: tokio::sync::OwnedSemaphorePermit) -> InFlight {
        self.1 = Some(slot);
        self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a guest's run ended when it produced no response.
enum Failure {
    TimedOut,
    PoolFull,
    Trapped(String),
}

/// Runs `request` through `service` (writing state as `writer`) and returns its response. Never
/// fails: whatever the guest does becomes a response for this request only, and a line in the
/// service's log.
pub async fn invoke<B>(
    runtime: &Runtime,
    store: &Arc<dyn Store>,
    service: Arc<Service>,
    writer: Option<Writer>,
    in_flight: InFlight,
    request: http::Request<B>,
) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let timeout = Duration::from_millis(service.limits.timeout_ms);
    let mut wstore = new_store(runtime, store, &service, writer);

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let prepared = (|| -> wasmtime::Result<_> {
        let mut http = wstore.data_mut().http();
        let req = http.new_incoming_request(Scheme::Http, request)?;
        let out = http.new_response_outparam(sender)?;
        Ok((req, out))
    })();
    let (req, out) = match prepared {
        Ok(pair) => pair,
        Err(e) => {
            service.stats.requests.fetch_add(1, Ordering::Relaxed);
            return host_response(StatusCode::BAD_REQUEST, format!("malformed request: {e:#}"));
        }
    };

    let task = {
        let service = service.clone();
        // Counted until the guest is done, body included: a host handing the service over waits
        // for this to reach zero before it lets itself be fenced.
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let run = async {
                let proxy = service.pre.instantiate_async(&mut wstore).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut wstore, req, out)
                    .await
            };
            // The epoch check catches a guest that computes too long; this catches one that
            // waits too long (on a slow body, say), where no wasm runs and no epoch is checked.
            let failure = match tokio::time::timeout(timeout, run).await {
                Ok(Ok(())) => return None,
                Err(_) => Failure::TimedOut,
                Ok(Err(e)) if e.downcast_ref::<TimedOut>().is_some() => Failure::TimedOut,
                Ok(Err(e))
                    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some() =>
                {
                    Failure::PoolFull
                }
                Ok(Err(e)) => {
                    let mut why = format!("{e:#}");
                    if let Some(desired) = wstore.data().limiter.hit {
                        why = format!(
                            "the instance tried to grow its memories and tables to {desired} bytes in all, past its limit of {} bytes; then: {why}",
                            service.limits.max_memory
                        );
                    }
                    Failure::Trapped(why)
                }
            };
            service.stats.errors.fetch_add(1, Ordering::Relaxed);
            service.log.host(match &failure {
                Failure::TimedOut => format!(
                    "request stopped: {TIMED_OUT} ({} ms)",
                    service.limits.timeout_ms
                ),
                Failure::PoolFull => {
                    "request refused: every instance slot of this host is busy".to_string()
                }
                Failure::Trapped(why) => format!("request failed: {why}"),
            });
            Some(failure)
        })
    };

    service.stats.requests.fetch_add(1, Ordering::Relaxed);
    match receiver.await {
        // The guest's response; its body may still be streaming from the task.
        Ok(Ok(response)) => response,
        Ok(Err(code)) => {
            service.stats.errors.fetch_add(1, Ordering::Relaxed);
            service
                .log
                .host(format!("the service answered with an error: {code:?}"));
            host_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the service failed: {code:?}"),
            )
        }
        Err(_) => match task.await {
            Ok(Some(Failure::TimedOut)) => host_response(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the service did not answer within its {} ms limit",
                    service.limits.timeout_ms
                ),
            ),
            Ok(Some(Failure::PoolFull)) => host_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "this host is at its instance limit; retry shortly",
            ),
            Ok(Some(Failure::Trapped(_))) => host_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the service failed while handling this request; see `doppel logs {}`",
                    service.name
                ),
            ),
            Ok(None) => {
                service.stats.errors.fetch_add(1, Ordering::Relaxed);
                service
                    .log
                    .host("request failed: the handler returned without setting a response");
                host_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the service returned no response",
                )
            }
            Err(e) => {
                service.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(service = %service.name, error = %e, "request task failed");
                host_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        },
    }
}
