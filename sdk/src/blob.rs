//! Documents: containers of objects of any size (scans, PDFs) through `wasi:blobstore`
//! (0.2.0-draft, the interface wasmCloud links too). On a doppel host they are replicated state
//! like buckets — sealed, counted in the service's quota, limited per object by
//! `doppel deploy --max-object` — and the host streams them: it never holds an object whole.
//!
//! [`Container::writer`] and [`Container::reader`] stream with `std::io::Write` and `Read`;
//! [`Container::put`] and [`Container::get`] are the whole-object shortcuts.
//!
//! ```no_run
//! use std::io::Write as _;
//! use doppel_sdk::blob::Container;
//!
//! # fn demo() -> Result<(), doppel_sdk::Error> {
//! let scans = Container::open("scans")?;
//! let mut w = scans.writer("P-000001/plan.pdf")?;
//! w.write_all(b"%PDF-1.7 ...").map_err(doppel_sdk::blob::write_error)?;
//! w.finish()?; // the object appears (or is replaced) only now
//! let info = scans.info("P-000001/plan.pdf")?.expect("just written");
//! assert_eq!(info.size, 12);
//! # Ok(()) }
//! ```

use std::io::{Read, Write};

use wasi::io::streams::{InputStream, OutputStream, StreamError};

use crate::Error;
use crate::bindings::wasi::blobstore::blobstore as store;
use crate::bindings::wasi::blobstore::container;
use crate::bindings::wasi::blobstore::types::{IncomingValue, OutgoingValue};

fn failed(what: &str, e: String) -> Error {
    Error::internal(format!("{what}: {e}"))
}

/// A failed write as an answer: the host refusing an object over the service's limits (its
/// `--max-object` or quota) is the client's 413, anything else a 500.
pub fn write_error(e: std::io::Error) -> Error {
    let text = e.to_string();
    if text.contains("at most") || text.contains("quota") {
        Error::new(413, "Content Too Large", text)
    } else {
        Error::internal(format!("storing an object: {text}"))
    }
}

/// What is known about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its name in its container.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// A container of objects.
pub struct Container {
    inner: container::Container,
}

impl Container {
    /// The container `name`, made if it does not exist yet.
    pub fn open(name: &str) -> Result<Container, Error> {
        let exists = store::container_exists(name).map_err(|e| failed("container", e))?;
        let inner = if exists {
            store::get_container(name)
        } else {
            store::create_container(name).or_else(|_| store::get_container(name))
        }
        .map_err(|e| failed("container", e))?;
        Ok(Container { inner })
    }

    /// Stores `bytes` as object `name`, replacing it if it exists.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let mut writer = self.writer(name)?;
        writer.write_all(bytes).map_err(write_error)?;
        writer.finish()
    }

    /// A writer for object `name`: what is written is streamed to the host, and becomes the
    /// object at [`BlobWriter::finish`]. Dropped without `finish`, nothing is stored.
    pub fn writer(&self, name: &str) -> Result<BlobWriter<'_>, Error> {
        let value = OutgoingValue::new_outgoing_value();
        let stream = value
            .outgoing_value_write_body()
            .map_err(|()| Error::internal("the value's body was taken"))?;
        Ok(BlobWriter {
            container: self,
            name: name.to_string(),
            stream: Some(stream),
            value,
        })
    }

    /// The whole object `name`, or `None` if there is none.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(mut reader) = self.reader(name, 0, u64::MAX)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(reader.size).unwrap_or(0));
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| Error::internal(format!("reading an object: {e}")))?;
        Ok(Some(bytes))
    }

    /// A reader for bytes `start` to `end` (inclusive; `u64::MAX` for "to the end") of object
    /// `name`, or `None` if there is none.
    pub fn reader(&self, name: &str, start: u64, end: u64) -> Result<Option<BlobReader>, Error> {
        if !self.exists(name)? {
            return Ok(None);
        }
        let value = self
            .inner
            .get_data(name, start, end)
            .map_err(|e| failed("reading an object", e))?;
        let size = value.size();
        let stream = IncomingValue::incoming_value_consume_async(value)
            .map_err(|e| failed("reading an object", e))?;
        Ok(Some(BlobReader { stream, size }))
    }

    /// Whether object `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool, Error> {
        self.inner
            .has_object(name)
            .map_err(|e| failed("looking for an object", e))
    }

    /// Object `name`'s size and age, or `None` if there is none.
    pub fn info(&self, name: &str) -> Result<Option<ObjectInfo>, Error> {
        if !self.exists(name)? {
            return Ok(None);
        }
        let meta = self
            .inner
            .object_info(name)
            .map_err(|e| failed("looking at an object", e))?;
        Ok(Some(ObjectInfo {
            name: meta.name,
            size: meta.size,
            created_at: meta.created_at,
        }))
    }

    /// The names of the objects whose name starts with `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let names = self
            .inner
            .list_objects()
            .map_err(|e| failed("listing objects", e))?;
        let mut all = Vec::new();
        loop {
            let (page, end) = names
                .read_stream_object_names(1000)
                .map_err(|e| failed("listing objects", e))?;
            all.extend(page.into_iter().filter(|n| n.starts_with(prefix)));
            if end {
                break;
            }
        }
        all.sort();
        Ok(all)
    }

    /// Removes object `name` (a missing one is not an error).
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        self.inner
            .delete_object(name)
            .map_err(|e| failed("deleting an object", e))
    }
}

/// Streams an object to the host; see [`Container::writer`].
pub struct BlobWriter<'a> {
    container: &'a Container,
    name: String,
    stream: Option<OutputStream>,
    value: OutgoingValue,
}

impl BlobWriter<'_> {
    /// Stores what was written as the object (replacing any with its name).
    pub fn finish(mut self) -> Result<(), Error> {
        if let Some(stream) = self.stream.take() {
            stream.blocking_flush().map_err(stream_error)?;
        }
        self.container
            .inner
            .write_data(&self.name, &self.value)
            .map_err(|e| failed("storing an object", e))?;
        OutgoingValue::finish(self.value).map_err(|e| failed("storing an object", e))
    }
}

fn stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Closed => Error::internal("the object's stream was closed"),
        StreamError::LastOperationFailed(e) => Error::internal(e.to_debug_string()),
    }
}

fn io_error(e: StreamError) -> std::io::Error {
    match e {
        StreamError::Closed => std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        StreamError::LastOperationFailed(e) => std::io::Error::other(e.to_debug_string()),
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let stream = self
            .stream
            .as_ref()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        // The host takes up to its permit at once (far more than wasi:io's 4 KiB convenience
        // calls), so large objects cross in few calls.
        loop {
            let permit = stream.check_write().map_err(io_error)?;
            if permit == 0 {
                stream.subscribe().block();
                continue;
            }
            let n = buf.len().min(usize::try_from(permit).unwrap_or(usize::MAX));
            stream.write(&buf[..n]).map_err(io_error)?;
            return Ok(n);
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams an object from the host; see [`Container::reader`].
pub struct BlobReader {
    stream: InputStream,
    /// Bytes in the range read.
    pub size: u64,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.stream.blocking_read(buf.len() as u64) {
            Ok(bytes) => {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
            Err(StreamError::Closed) => Ok(0),
            Err(e) => Err(io_error(e)),
        }
    }
}
