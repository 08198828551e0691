//! Log appends to a follower over one long-lived connection per peer, in lockstep.
//!
//! An append is on the path of every acknowledged write, so it skips the HTTP request per call:
//! the leader opens the connection with an authenticated HTTP request that upgrades it
//! (`Upgrade: doppel-raft-append/1`, authenticated like every peer request by the transport), and from then on each append is one frame each way:
//! `len: u32 LE | postcard payload`. openraft sends one append at a time to each follower, so
//! request and answer alternate and need no ids. Between two processes on loopback a round trip
//! takes ~0.7 of a POST's (`cargo bench -p doppel-replication --bench round_trip`).
//!
//! A connection that fails or times out is dropped (an answer may still be on its way, so the
//! lockstep is lost) and the next append opens another. It is opened through the peer transport,
//! so whatever wraps the transport (TLS) wraps it too.

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use openraft::Raft;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::transport::{LEASE_HEADER, MAX_RPC, PeerClient, RaftRoute};
use crate::types::{NodeId, TypeConfig};

/// The protocol named in the upgrade.
const PROTOCOL: &str = "doppel-raft-append/1";

/// What a follower answers to one append.
pub(crate) type AppendAnswer = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;

/// Writes one frame (one write call, so one segment for a small frame).
async fn write_frame(io: &mut (impl AsyncWrite + Unpin), payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(payload);
    io.write_all(&frame).await?;
    io.flush().await
}

/// Reads one frame of at most `max` bytes; `None` when the other side closed between frames.
pub(crate) async fn read_frame(
    io: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0; 4];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes (at most {max})"
        )));
    }
    // Grows with what arrives, so that four bytes claiming a large frame allocate nothing.
    let mut payload = Vec::with_capacity(len.min(1 << 16));
    io.take(len as u64).read_to_end(&mut payload).await?;
    if payload.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(payload))
}

/// Why an append over the stream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// Nothing accepted the connection: the peer is down.
    #[error("cannot connect: {0}")]
    Unreachable(reqwest::Error),
    /// The peer refused the connection because it runs with another leader lease (why, in its
    /// words).
    #[error("{0}")]
    Refused(String),
    /// Anything else: a refused upgrade, a broken connection, a garbled frame.
    #[error("{0}")]
    Broken(String),
}

pub(crate) fn broken(e: impl std::fmt::Display) -> StreamError {
    StreamError::Broken(e.to_string())
}

/// The leader's end of the connection to one follower.
pub(crate) struct AppendStream {
    /// Only ever reached through `&mut self` (`get_mut`, never locked): the mutex is there
    /// because openraft wants its network clients `Sync` and the upgraded connection is not.
    io: std::sync::Mutex<reqwest::Upgraded>,
}

impl AppendStream {
    /// Opens the connection to the member at `addr`: one peer request, upgraded.
    pub(crate) async fn open(
        peers: &PeerClient,
        addr: &str,
        lease_ms: u64,
    ) -> Result<AppendStream, StreamError> {
        let response = peers
            .raft(addr, RaftRoute::AppendStream)
            .header(LEASE_HEADER, lease_ms)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, PROTOCOL)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    StreamError::Unreachable(e)
                } else {
                    broken(e)
                }
            })?;
        if response.status() == StatusCode::CONFLICT {
            return Err(StreamError::Refused(
                response.text().await.unwrap_or_default(),
            ));
        }
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(broken(format!("peer answered {status}: {text}")));
        }
        let io = response.upgrade().await.map_err(broken)?;
        Ok(AppendStream {
            io: std::sync::Mutex::new(io),
        })
    }

    /// Sends one append and reads its answer.
    pub(crate) async fn append(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendAnswer, StreamError> {
        let io = self.io.get_mut().unwrap_or_else(|e| e.into_inner());
        let payload = postcard::to_stdvec(rpc).map_err(broken)?;
        write_frame(io, &payload).await.map_err(broken)?;
        let answer = read_frame(io, MAX_RPC)
            .await
            .map_err(broken)?
            .ok_or_else(|| broken("the peer closed the connection"))?;
        postcard::from_bytes(&answer).map_err(broken)
    }
}

/// The follower's end: the route that upgrades the connection (authenticated by the transport
/// like every peer route), then answers appends on it until the leader closes it.
/// `caller` is the raft id in the leader's certificate: an append naming another leader closes
/// the stream.
pub(crate) async fn accept(
    raft: Raft<TypeConfig>,
    caller: NodeId,
    mut request: Request,
) -> Response {
    let asked = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()));
    if !asked {
        return (
            StatusCode::BAD_REQUEST,
            format!("this route upgrades the connection to {PROTOCOL}"),
        )
            .into_response();
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve(raft, caller, hyper_util::rt::TokioIo::new(upgraded)).await,
            Err(e) => tracing::warn!(error = %e, "an append stream failed to upgrade"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

/// Answers appends on `io` until the leader closes it or sends something that is not an append
/// (the connection is then closed: a garbled stream cannot be resynchronised).
async fn serve(
    raft: Raft<TypeConfig>,
    caller: NodeId,
    mut io: impl AsyncRead + AsyncWrite + Unpin,
) {
    loop {
        let frame = match read_frame(&mut io, MAX_RPC).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "closing an append stream");
                return;
            }
        };
        let rpc: AppendEntriesRequest<TypeConfig> = match postcard::from_bytes(&frame) {
            Ok(rpc) => rpc,
            Err(e) => {
                tracing::warn!(error = %e, "closing an append stream: malformed append");
                return;
            }
        };
        if rpc.vote.leader_id().voted_for() != Some(caller) {
            tracing::warn!(
                caller,
                named = ?rpc.vote.leader_id().voted_for(),
                "closing an append stream: appends in another host's name"
            );
            return;
        }
        let answer: AppendAnswer = raft.append_entries(rpc).await;
        let written = match postcard::to_stdvec(&answer) {
            Ok(bytes) => write_frame(&mut io, &bytes).await,
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "closing an append stream");
            return;
        }
    }
}
