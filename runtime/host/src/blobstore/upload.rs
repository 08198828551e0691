//! An object being written: `outgoing-value` and the `output-stream` a guest writes it through.
//!
//! Bytes are stored as they arrive, [`ENTRY`] at a time, into a fresh blob; the host holds at
//! most [`IN_FLIGHT`] entries being written and one being filled per upload. The object only appears (or is
//! replaced) when the upload is committed, in one write of its record; an upload dropped before
//! that deletes the chunks it wrote.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::objects::{BlobResult, ENTRY, ObjectRecord, Objects, new_blob_id, now};

/// Store writes one upload may have in flight at once.
const IN_FLIGHT: usize = 1;

type Pending = std::collections::VecDeque<JoinHandle<BlobResult<()>>>;

/// The `outgoing-value` resource.
pub struct OutgoingValue {
    upload: Arc<Mutex<Upload>>,
    /// Whether the guest has taken the body stream (at most once).
    pub(crate) stream_taken: bool,
    /// Where `write-data` said the object goes.
    pub(crate) target: Option<(String, String)>,
    /// Whether the object has been committed (or the upload given up).
    pub(crate) done: bool,
    /// Counts this value among the request's open uploads while it lives.
    _slot: Arc<()>,
}

/// What an upload has written and holds.
pub(crate) struct Upload {
    objects: Objects,
    blob: String,
    /// Bytes received and not yet handed to the store.
    buffer: BytesMut,
    /// Chunks handed to the store so far.
    next_chunk: u64,
    /// Bytes received so far.
    size: u64,
    /// The writes in flight, oldest first.
    pending: Pending,
    /// The first failure; every later call reports it.
    failed: Option<String>,
    /// Whether the body stream is still open (a child of the outgoing value).
    stream_open: bool,
}

impl OutgoingValue {
    pub(crate) fn new(objects: Objects, slot: Arc<()>) -> BlobResult<Self> {
        Ok(OutgoingValue {
            upload: Arc::new(Mutex::new(Upload {
                objects,
                blob: new_blob_id()?,
                buffer: BytesMut::new(),
                next_chunk: 0,
                size: 0,
                pending: Pending::new(),
                failed: None,
                stream_open: false,
            })),
            stream_taken: false,
            target: None,
            done: false,
            _slot: slot,
        })
    }

    /// Whether the body stream is open now.
    pub(crate) fn stream_open(&self) -> bool {
        lock(&self.upload).stream_open
    }

    /// The body stream, at most once per value.
    pub(crate) fn take_stream(&mut self) -> Option<BodyWriter> {
        if self.stream_taken || self.done {
            return None;
        }
        self.stream_taken = true;
        lock(&self.upload).stream_open = true;
        Some(BodyWriter {
            upload: self.upload.clone(),
        })
    }

    /// Stores what is left, then points `container`/`name` at the new blob. On failure the
    /// chunks written are deleted and the object is as it was.
    pub(crate) async fn commit(&mut self, container: &str, name: &str) -> BlobResult<()> {
        let result = self.store_and_point(container, name).await;
        if result.is_err() {
            self.abandon();
        }
        self.done = true;
        result
    }

    async fn store_and_point(&mut self, container: &str, name: &str) -> BlobResult<()> {
        let pending = {
            let mut upload = lock(&self.upload);
            upload.stream_open = false;
            std::mem::take(&mut upload.pending)
        };
        wait(&self.upload, pending).await;
        let (last, objects, record) = {
            let mut upload = lock(&self.upload);
            if let Some(failed) = upload.failed.clone() {
                return Err(failed);
            }
            let rest = upload.buffer.split().freeze();
            let pairs = Objects::chunk_pairs(&upload.blob, upload.next_chunk, &rest);
            upload.next_chunk += pairs.len() as u64;
            let objects = upload.objects.clone();
            let record = ObjectRecord {
                blob: upload.blob.clone(),
                size: upload.size,
                created_at: now(),
            };
            (pairs, objects, record)
        };
        if !last.is_empty() {
            objects.write_chunks(last).await?;
        }
        objects.put_object(container, name, &record).await
    }

    /// Gives the upload up: deletes whatever chunks it wrote, in the background.
    pub(crate) fn abandon(&mut self) {
        self.done = true;
        let pending;
        let (objects, blob, written) = {
            let mut upload = lock(&self.upload);
            pending = std::mem::take(&mut upload.pending);
            upload.failed = Some("the upload was given up".into());
            (
                upload.objects.clone(),
                upload.blob.clone(),
                upload.next_chunk,
            )
        };
        if written == 0 {
            return;
        }
        tokio::spawn(async move {
            for task in pending {
                task.await.ok();
            }
            objects
                .delete_blob(&blob, written * super::objects::CHUNK as u64)
                .await
                .ok();
        });
    }
}

impl Drop for OutgoingValue {
    fn drop(&mut self) {
        if !self.done {
            self.abandon();
        }
    }
}

fn lock(upload: &Mutex<Upload>) -> std::sync::MutexGuard<'_, Upload> {
    upload
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits for writes taken out of the upload and records the first failure, if any.
async fn wait(
    upload: &Mutex<Upload>,
    pending: impl IntoIterator<Item = JoinHandle<BlobResult<()>>>,
) {
    for task in pending {
        let result = task
            .await
            .unwrap_or_else(|e| Err(format!("the write of a chunk stopped: {e}")));
        if let Err(e) = result {
            let mut upload = lock(upload);
            upload.failed.get_or_insert(e);
        }
    }
}

impl Upload {
    /// Hands a full entry to the store if fewer than [`IN_FLIGHT`] are.
    fn start_write(&mut self) {
        if self.pending.len() >= IN_FLIGHT || self.buffer.len() < ENTRY {
            return;
        }
        let bytes = self.buffer.split_to(ENTRY).freeze();
        let pairs = Objects::chunk_pairs(&self.blob, self.next_chunk, &bytes);
        self.next_chunk += pairs.len() as u64;
        let objects = self.objects.clone();
        self.pending.push_back(tokio::spawn(
            async move { objects.write_chunks(pairs).await },
        ));
    }

    fn check(&self) -> StreamResult<()> {
        match &self.failed {
            Some(e) => Err(StreamError::LastOperationFailed(wasmtime::Error::msg(
                e.clone(),
            ))),
            None => Ok(()),
        }
    }
}

/// The `output-stream` of an outgoing value.
pub(crate) struct BodyWriter {
    upload: Arc<Mutex<Upload>>,
}

#[async_trait::async_trait]
impl Pollable for BodyWriter {
    async fn ready(&mut self) {
        // Room for more once the oldest write is done (or at once, if there is room).
        let oldest = {
            let mut upload = lock(&self.upload);
            upload.start_write();
            if upload.buffer.len() < ENTRY {
                return;
            }
            upload.pending.pop_front()
        };
        wait(&self.upload, oldest).await;
        lock(&self.upload).start_write();
    }
}

impl OutputStream for BodyWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut upload = lock(&self.upload);
        upload.check()?;
        if !upload.stream_open {
            return Err(StreamError::Closed);
        }
        if upload.buffer.len() + bytes.len() > ENTRY {
            return Err(StreamError::trap("wrote more than check-write allowed"));
        }
        let size = upload.size + bytes.len() as u64;
        let max = upload.objects.limits.max_object;
        if size > max {
            let message = format!("an object may be at most {max} bytes for this service");
            upload.failed = Some(message.clone());
            return Err(StreamError::LastOperationFailed(wasmtime::Error::msg(
                message,
            )));
        }
        upload.size = size;
        upload.buffer.extend_from_slice(&bytes);
        upload.start_write();
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Nothing is visible before the upload is committed, so there is nothing to flush to:
        // the bytes are stored at whole chunks (ranges are read by chunk number) and at commit.
        lock(&self.upload).check()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let upload = lock(&self.upload);
        upload.check()?;
        if !upload.stream_open {
            return Err(StreamError::Closed);
        }
        Ok(ENTRY - upload.buffer.len())
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        lock(&self.upload).stream_open = false;
    }
}
