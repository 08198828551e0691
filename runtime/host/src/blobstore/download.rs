//! An object being read: `incoming-value` and the `input-stream` a guest reads it through.
//!
//! The stream fetches one chunk at a time and asks for the next as soon as one arrives, so the
//! host holds at most two chunks per reader, whatever the object's size.

use bytes::Bytes;
use tokio::task::JoinHandle;
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

use super::objects::{BlobResult, CHUNK, Objects};

/// The `incoming-value` resource: a range of one blob.
pub struct IncomingValue {
    pub(crate) objects: Objects,
    pub(crate) blob: String,
    /// First byte.
    pub(crate) start: u64,
    /// Bytes from `start`.
    pub(crate) len: u64,
}

impl IncomingValue {
    /// The whole range in memory, for `incoming-value-consume-sync`.
    pub(crate) async fn read_all(self, max: u64) -> BlobResult<Vec<u8>> {
        if self.len > max {
            return Err(format!(
                "the value is {} bytes; read values over {max} bytes as a stream \
                 (incoming-value-consume-async)",
                self.len
            ));
        }
        let mut reader = BodyReader::new(self);
        let mut out = Vec::new();
        loop {
            reader.ready().await;
            match reader.read(CHUNK) {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(StreamError::Closed) => return Ok(out),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// The `input-stream` of an incoming value.
pub(crate) struct BodyReader {
    value: IncomingValue,
    /// The next chunk to ask for.
    next_chunk: u64,
    /// Bytes of the range not yet fetched into `buffer` or in flight.
    unfetched: u64,
    /// Bytes to skip at the start of the next chunk fetched (the range's offset in its first).
    skip: usize,
    buffer: Bytes,
    pending: Option<JoinHandle<BlobResult<Vec<u8>>>>,
    failed: Option<String>,
}

impl BodyReader {
    pub(crate) fn new(value: IncomingValue) -> Self {
        let chunk = CHUNK as u64;
        BodyReader {
            next_chunk: value.start / chunk,
            skip: (value.start % chunk) as usize,
            unfetched: value.len,
            buffer: Bytes::new(),
            pending: None,
            failed: None,
            value,
        }
    }

    fn fetch_next(&mut self) {
        if self.pending.is_some() || self.unfetched == 0 || self.failed.is_some() {
            return;
        }
        let objects = self.value.objects.clone();
        let blob = self.value.blob.clone();
        let index = self.next_chunk;
        self.next_chunk += 1;
        self.pending = Some(tokio::spawn(
            async move { objects.chunk(&blob, index).await },
        ));
    }

    /// Takes a fetched chunk: the part of it in the range.
    fn take(&mut self, chunk: Vec<u8>) {
        let mut chunk = Bytes::from(chunk);
        let skip = std::mem::take(&mut self.skip).min(chunk.len());
        let _ = chunk.split_to(skip);
        let keep = (chunk.len() as u64).min(self.unfetched) as usize;
        chunk.truncate(keep);
        if keep == 0 {
            // A chunk shorter than the record says: the stored object is not what its record
            // claims; never hand out fewer bytes than promised without saying so.
            self.failed = Some("the object's stored bytes end before its size".into());
            return;
        }
        self.unfetched -= keep as u64;
        self.buffer = chunk;
    }
}

#[async_trait::async_trait]
impl Pollable for BodyReader {
    async fn ready(&mut self) {
        if !self.buffer.is_empty() || self.failed.is_some() {
            return;
        }
        self.fetch_next();
        let Some(task) = self.pending.take() else {
            return;
        };
        match task.await {
            Ok(Ok(chunk)) => self.take(chunk),
            Ok(Err(e)) => self.failed = Some(e),
            Err(e) => self.failed = Some(format!("the read of a chunk stopped: {e}")),
        }
        // Ask for the next chunk while the guest reads this one.
        self.fetch_next();
    }
}

impl InputStream for BodyReader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if !self.buffer.is_empty() {
            let n = size.min(self.buffer.len());
            return Ok(self.buffer.split_to(n));
        }
        if let Some(e) = &self.failed {
            return Err(StreamError::LastOperationFailed(wasmtime::Error::msg(
                e.clone(),
            )));
        }
        if self.unfetched == 0 && self.pending.is_none() {
            return Err(StreamError::Closed);
        }
        self.fetch_next();
        Ok(Bytes::new())
    }
}
