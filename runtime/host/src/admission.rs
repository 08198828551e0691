//! Fair shares of a host: what one client or one service may hold of it, so that a hostile
//! client cannot starve the others (issue: a trickling body held the whole instance pool).
//!
//! - **A service's instances**: each service may run at most `Limits::max_instances` requests at
//!   once on a host ([`Slots`]); a request finding them busy waits in a short, bounded queue and
//!   is answered `503` with `Retry-After` beyond it. One service can never take the whole pool.
//! - **A request body's time**: no instance exists until the body's first [`PREFETCH`] bytes (or
//!   all of it) have arrived ([`prefetch`]): a client that trickles its body holds a connection
//!   and a small buffer, never an instance. The body must keep up a minimum rate — at most
//!   [`BODY_GRACE`] plus one second per [`MIN_RATE`] bytes since the request began, and never
//!   silent for [`BODY_IDLE`] — or it is cut off: with `408` before the instance exists, with a
//!   read error for the guest after (and for a forwarded body, on the host that runs it).
//! - Connections per client address are capped by the listener (`listener::serve`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body::Frame;
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

/// How long a request waits for one of its service's instance slots.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// What a body may take before it must keep up [`MIN_RATE`].
pub const BODY_GRACE: Duration = Duration::from_secs(5);
/// The slowest a request body may arrive on average, in bytes per second.
pub const MIN_RATE: u64 = 16 << 10;
/// How much of a body arrives before an instance is made for it.
pub const PREFETCH: usize = 64 << 10;
/// The longest a body may send nothing, however far ahead of [`MIN_RATE`] it is (a client that
/// sends most of a body at once and then stalls).
pub const BODY_IDLE: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request was turned away before it reached a guest.
#[derive(Debug)]
pub enum Refused {
    /// Its service runs as many requests as its share allows, and the queue is full or the wait
    /// ran out (`503`, retry after a second).
    Busy { service: String, max: usize },
    /// Its body fell behind the minimum rate (`408`).
    TooSlow,
    /// Its body could not be read (`400`).
    Unreadable(String),
}

impl Refused {
    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refused::TooSlow => StatusCode::REQUEST_TIMEOUT,
            Refused::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Busy { service, max } => write!(
                f,
                "the service {service:?} is running {max} requests on this host, its limit \
                 (--max-instances); retry shortly"
            ),
            Refused::TooSlow => TooSlow.fmt(f),
            Refused::Unreadable(why) => write!(f, "the request body could not be read: {why}"),
        }
    }
}

/// The instance slots of one service on this host, and its bounded queue.
pub struct Slots {
    slots: Arc<Semaphore>,
    max: usize,
    waiting: AtomicUsize,
}

impl Slots {
    /// `max` slots, and as many places in the queue.
    pub fn new(max: usize) -> Slots {
        let max = max.max(1);
        Slots {
            slots: Arc::new(Semaphore::new(max)),
            max,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A slot, held until the guest is done; or why there is none.
    pub async fn take(&self, service: &str) -> Result<OwnedSemaphorePermit, Refused> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let busy = || Refused::Busy {
            service: service.to_string(),
            max: self.max,
        };
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(busy());
        }
        let slot = tokio::time::timeout(QUEUE_WAIT, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match slot {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(busy()),
        }
    }
}

/// When the body must deliver its next bytes, having delivered `received` since `start`: by the
/// minimum rate, and never more than [`BODY_IDLE`] from now.
fn due(start: Instant, received: usize) -> Instant {
    let by_rate = start + BODY_GRACE + Duration::from_millis(received as u64 * 1000 / MIN_RATE);
    by_rate.min(Instant::now() + BODY_IDLE)
}

/// The body was too slow: it did not keep up the minimum rate.
#[derive(Debug)]
pub struct TooSlow;

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body arrived slower than {} KiB/s after its first {} s, or sent \
             nothing for {} s",
            MIN_RATE >> 10,
            BODY_GRACE.as_secs(),
            BODY_IDLE.as_secs()
        )
    }
}

impl std::error::Error for TooSlow {}

/// A request body after [`prefetch`]: the bytes that came first, then the rest as it arrives.
pub struct Prefetched {
    first: Option<Bytes>,
    rest: Option<mpsc::Receiver<Result<Frame<Bytes>, BoxError>>>,
}

impl Prefetched {
    /// The whole body, when all of it arrived with the first bytes; itself otherwise.
    pub fn whole(self) -> Result<Bytes, Prefetched> {
        match self.rest {
            None => Ok(self.first.unwrap_or_default()),
            Some(_) => Err(self),
        }
    }
}

impl http_body::Body for Prefetched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        match self.rest.as_mut() {
            Some(rest) => rest.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_none()
    }
}

/// Reads the body's first [`PREFETCH`] bytes (all of a smaller one) before anything else is
/// spent on the request; the rest follows at [`MIN_RATE`] or is cut off. A body that does not
/// arrive in time is refused ([`Refused::TooSlow`]).
pub async fn prefetch<B>(mut body: B, start: Instant) -> Result<Prefetched, Refused>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        return Ok(Prefetched {
            first: None,
            rest: None,
        });
    }
    let mut first = BytesMut::new();
    let mut trailers = None;
    let ended = loop {
        if first.len() >= PREFETCH {
            break false;
        }
        match tokio::time::timeout_at(due(start, first.len()), body.frame()).await {
            Err(_) => return Err(Refused::TooSlow),
            Ok(None) => break true,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => first.extend_from_slice(&data),
                Err(frame) => {
                    trailers = Some(frame);
                    break true;
                }
            },
            Ok(Some(Err(e))) => {
                let e: BoxError = e.into();
                return Err(Refused::Unreadable(e.to_string()));
            }
        }
    };
    let first = (!first.is_empty()).then(|| first.freeze());
    if ended {
        let rest = trailers.map(|frame| {
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.try_send(Ok(frame));
            rx
        });
        return Ok(Prefetched { first, rest });
    }
    let received = first.as_ref().map_or(0, Bytes::len);
    // One frame on its way at a time: a consumer that does not read holds back the client.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(pump(body, start, received, tx));
    Ok(Prefetched {
        first,
        rest: Some(rx),
    })
}

/// Passes the rest of a body on as the guest reads it, cutting it off when it falls behind the
/// minimum rate. Stops when the guest stops reading (the receiver is dropped).
async fn pump<B>(
    mut body: B,
    start: Instant,
    mut received: usize,
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
) where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    loop {
        let frame = match tokio::time::timeout_at(due(start, received), body.frame()).await {
            Err(_) => Err(Box::new(TooSlow) as BoxError),
            Ok(None) => return,
            Ok(Some(Ok(frame))) => Ok(frame),
            Ok(Some(Err(e))) => Err(e.into()),
        };
        let failed = frame.is_err();
        if let Ok(frame) = &frame {
            received += frame.data_ref().map_or(0, Bytes::len);
        }
        if tx.send(frame).await.is_err() || failed {
            return;
        }
    }
}
