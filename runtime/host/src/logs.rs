//! Service logs: what guests write to stdout and stderr, and what the host says about them.
//!
//! Each service name has one bounded in-memory log that outlives redeploys, and a broadcast for
//! `doppel logs --follow`. Logs are not replicated or kept across restarts: they are for operators
//! watching a host, not records (the audit trail is a later capability).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use doppel_api::LogLine;
use tokio::io::AsyncWrite;
use tokio::sync::broadcast;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::clock::now_ms;

/// Lines kept per service.
const KEEP: usize = 10_000;
/// A guest line longer than this is split, so one runaway write cannot hold memory.
const MAX_LINE: usize = 16 << 10;

/// The log of one service.
pub struct ServiceLog {
    lines: Mutex<VecDeque<LogLine>>,
    live: broadcast::Sender<LogLine>,
}

impl Default for ServiceLog {
    fn default() -> Self {
        ServiceLog {
            lines: Mutex::new(VecDeque::new()),
            live: broadcast::channel(1024).0,
        }
    }
}

impl ServiceLog {
    /// Appends one line.
    pub fn push(&self, stream: &str, line: impl Into<String>) {
        let line = LogLine {
            time_ms: now_ms(),
            stream: stream.to_string(),
            line: line.into(),
        };
        let _ = self.live.send(line.clone());
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The host's own note about this service (a trap, a timeout…).
    pub fn host(&self, line: impl Into<String>) {
        self.push("host", line);
    }

    /// Forgets every line (the service's data was erased: what it wrote may have held some).
    pub fn clear(&self) {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Lines as they are written from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.live.subscribe()
    }
}

/// A guest's stdout or stderr, feeding a [`ServiceLog`].
pub struct LogStream {
    log: Arc<ServiceLog>,
    stream: &'static str,
}

impl LogStream {
    /// Output of `stream` (`"stdout"` or `"stderr"`) into `log`.
    pub fn new(log: Arc<ServiceLog>, stream: &'static str) -> Self {
        LogStream { log, stream }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.log.clone(),
            stream: self.stream,
            partial: Vec::new(),
        })
    }
}

/// Splits written bytes into lines; a last line without newline is logged when the writer drops.
struct LineWriter {
    log: Arc<ServiceLog>,
    stream: &'static str,
    partial: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, upto: usize) {
        let rest = self.partial.split_off(upto);
        let mut line = std::mem::replace(&mut self.partial, rest);
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        self.log.push(self.stream, String::from_utf8_lossy(&line));
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.partial.extend_from_slice(buf);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            self.emit(pos + 1);
        }
        while self.partial.len() > MAX_LINE {
            self.emit(MAX_LINE);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let len = self.partial.len();
            self.emit(len);
        }
    }
}
