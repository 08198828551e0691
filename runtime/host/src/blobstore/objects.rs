//! Where a service's containers and objects are kept in the replicated store, and the operations
//! on them that every `wasi:blobstore` call is made of.
//!
//! Three kinds of records, all in the service's own (sealed, quota-counted, fenced) space, in
//! buckets a guest cannot open through `wasi:keyvalue` (names starting with `doppel:`):
//!
//! - `doppel:containers`: container name → [`ContainerRecord`];
//! - `doppel:objects:CONTAINER`: object name → [`ObjectRecord`], which names a *blob*;
//! - `doppel:chunks`: `BLOB/INDEX` → at most [`CHUNK`] bytes of that blob.
//!
//! A blob is written once and never changed: an upload writes a fresh blob's chunks, then points
//! the object's record at it in one write (readers see the old object or the new one, never a
//! mix), then deletes the blob it replaced. Chunks are kept under 128 KiB because sled stores a
//! value over that as a file of its own, rewritten on every change of its page; [`ENTRY`] bytes of
//! chunks travel in one raft entry, as module parts do.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use doppel_api::Limits;
use doppel_store::{Command, Op, Outcome, Space, Store, StoreError, Writer};
use serde::{Deserialize, Serialize};

/// Bytes of one stored chunk.
pub(crate) const CHUNK: usize = 64 << 10;
/// Chunks written together, in one store command.
pub(crate) const CHUNKS_PER_ENTRY: usize = 4;
/// Bytes of chunks written in one store command.
pub(crate) const ENTRY: usize = CHUNK * CHUNKS_PER_ENTRY;
/// Longest container name, in bytes (it becomes part of a bucket name).
const MAX_CONTAINER_NAME: usize = 200;
/// Chunks deleted in one store command.
const DELETE_BATCH: usize = 512;
/// Object names read from the store at a time.
pub(crate) const LIST_PAGE: usize = 1000;

const CONTAINERS: &str = "doppel:containers";
const CHUNKS: &str = "doppel:chunks";

/// A guest-visible failure (the blobstore's `error` is a string).
pub(crate) type BlobResult<T> = Result<T, String>;

fn store_error(e: StoreError) -> String {
    e.to_string()
}

/// A container's record.
#[derive(Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    /// Seconds since the Unix epoch.
    pub(crate) created_at: u64,
}

/// An object's record: which blob holds its bytes.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct ObjectRecord {
    /// The blob's id (hex).
    pub(crate) blob: String,
    /// Bytes.
    pub(crate) size: u64,
    /// Seconds since the Unix epoch.
    pub(crate) created_at: u64,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh blob id.
pub(crate) fn new_blob_id() -> BlobResult<String> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| format!("no randomness for a blob id: {e}"))?;
    Ok(hex::encode(id))
}

fn chunk_key(blob: &str, index: u64) -> Vec<u8> {
    format!("{blob}/{index:010}").into_bytes()
}

/// One service's blobs, as one request of it sees them: cheap to clone into a spawned task.
#[derive(Clone)]
pub(crate) struct Objects {
    pub(crate) service: Arc<str>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) store: Arc<dyn Store>,
    /// This host and the service's epoch here when the request started (fencing).
    pub(crate) writer: Option<Writer>,
}

impl Objects {
    fn containers(&self) -> Space {
        Space::bucket(&*self.service, CONTAINERS)
    }

    pub(crate) fn objects_of(&self, container: &str) -> Space {
        Space::bucket(&*self.service, format!("doppel:objects:{container}"))
    }

    fn chunks(&self) -> Space {
        Space::bucket(&*self.service, CHUNKS)
    }

    async fn write(&self, op: Op) -> BlobResult<Outcome> {
        let mut command = Command::new(op).with_quota(self.limits.quota);
        command.writer = self.writer;
        self.store.apply(command).await.map_err(store_error)
    }

    fn check_container_name(name: &str) -> BlobResult<()> {
        if name.is_empty() {
            return Err("a container name must not be empty".into());
        }
        if name.len() > MAX_CONTAINER_NAME {
            return Err(format!(
                "container names are at most {MAX_CONTAINER_NAME} bytes; this one is {}",
                name.len()
            ));
        }
        Ok(())
    }

    pub(crate) fn check_object_name(&self, name: &str) -> BlobResult<()> {
        let max = self.limits.max_key;
        if name.is_empty() {
            return Err("an object name must not be empty".into());
        }
        if name.len() as u64 > max {
            return Err(format!(
                "object name is {} bytes; the limit for this service is {max}",
                name.len()
            ));
        }
        Ok(())
    }

    /// Makes a new, empty container; refuses one that exists.
    pub(crate) async fn create_container(&self, name: &str) -> BlobResult<ContainerRecord> {
        Self::check_container_name(name)?;
        let record = ContainerRecord { created_at: now() };
        let value = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        match self
            .write(Op::CompareAndSwap {
                space: self.containers(),
                key: name.as_bytes().to_vec(),
                expected: None,
                value,
            })
            .await?
        {
            Outcome::Done => Ok(record),
            _ => Err(format!("container {name:?} already exists")),
        }
    }

    /// The container's record, if it exists.
    pub(crate) async fn container(&self, name: &str) -> BlobResult<Option<ContainerRecord>> {
        Self::check_container_name(name)?;
        self.record(&self.containers(), name, "container").await
    }

    /// The JSON record at `name` in `space`, if there is one.
    async fn record<T: serde::de::DeserializeOwned>(
        &self,
        space: &Space,
        name: &str,
        what: &str,
    ) -> BlobResult<Option<T>> {
        let Some(raw) = self
            .store
            .get(space, name.as_bytes())
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| format!("{what} {name:?} has an unreadable record: {e}"))
    }

    /// The container's record; an error naming it if it does not exist.
    pub(crate) async fn existing_container(&self, name: &str) -> BlobResult<ContainerRecord> {
        self.container(name)
            .await?
            .ok_or_else(|| format!("container {name:?} does not exist"))
    }

    /// Removes every object of the container, then the container. Safe to call again after a
    /// failure halfway: what is left is removed the next time.
    pub(crate) async fn delete_container(&self, name: &str) -> BlobResult<()> {
        self.existing_container(name).await?;
        self.clear(name).await?;
        self.write(Op::Delete {
            space: self.containers(),
            key: name.as_bytes().to_vec(),
        })
        .await?;
        Ok(())
    }

    /// Removes every object of the container.
    pub(crate) async fn clear(&self, container: &str) -> BlobResult<()> {
        loop {
            let (names, _) = self.list(container, None).await?;
            if names.is_empty() {
                return Ok(());
            }
            for name in names {
                self.delete_object(container, &name).await?;
            }
        }
    }

    /// One page of object names after `after`, and whether more may follow.
    pub(crate) async fn list(
        &self,
        container: &str,
        after: Option<&[u8]>,
    ) -> BlobResult<(Vec<String>, bool)> {
        let raw = self
            .store
            .list_keys(&self.objects_of(container), after, LIST_PAGE)
            .await
            .map_err(store_error)?;
        let more = raw.len() == LIST_PAGE;
        let names = raw
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect();
        Ok((names, more))
    }

    /// The object's record, if it exists.
    pub(crate) async fn object(
        &self,
        container: &str,
        name: &str,
    ) -> BlobResult<Option<ObjectRecord>> {
        self.check_object_name(name)?;
        self.record(&self.objects_of(container), name, "object")
            .await
    }

    /// The object's record; an error naming it if it does not exist.
    pub(crate) async fn existing_object(
        &self,
        container: &str,
        name: &str,
    ) -> BlobResult<ObjectRecord> {
        self.object(container, name)
            .await?
            .ok_or_else(|| format!("object {name:?} does not exist in container {container:?}"))
    }

    /// Points `name` at `record`'s blob (one write), then deletes the blob it replaces, if any.
    pub(crate) async fn put_object(
        &self,
        container: &str,
        name: &str,
        record: &ObjectRecord,
    ) -> BlobResult<()> {
        self.check_object_name(name)?;
        let before = self.object(container, name).await?;
        let value = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        self.write(Op::Put {
            space: self.objects_of(container),
            key: name.as_bytes().to_vec(),
            value,
        })
        .await?;
        if let Some(old) = before.filter(|old| old.blob != record.blob) {
            // The object is replaced once its record is written: a failure to remove the old
            // bytes leaves them unreferenced, never the object broken.
            if let Err(e) = self.delete_blob(&old.blob, old.size).await {
                tracing::warn!(service = %self.service, "old blob of a replaced object kept: {e}");
            }
        }
        Ok(())
    }

    /// Removes the object and its blob; a missing object is not an error.
    pub(crate) async fn delete_object(&self, container: &str, name: &str) -> BlobResult<()> {
        let Some(record) = self.object(container, name).await? else {
            return Ok(());
        };
        self.write(Op::Delete {
            space: self.objects_of(container),
            key: name.as_bytes().to_vec(),
        })
        .await?;
        self.delete_blob(&record.blob, record.size).await
    }

    /// Moves an object's record (its blob stays where it is): the destination is written before
    /// the source is removed, so a failure halfway leaves the object under both names, never
    /// under none.
    pub(crate) async fn move_object(
        &self,
        src: (&str, &str),
        dest: (&str, &str),
    ) -> BlobResult<()> {
        if src == dest {
            self.existing_object(src.0, src.1).await?;
            return Ok(());
        }
        self.existing_container(dest.0).await?;
        let record = self.existing_object(src.0, src.1).await?;
        self.put_object(dest.0, dest.1, &record).await?;
        self.write(Op::Delete {
            space: self.objects_of(src.0),
            key: src.1.as_bytes().to_vec(),
        })
        .await?;
        Ok(())
    }

    /// Copies an object into a new blob, chunk by chunk (never whole in memory).
    pub(crate) async fn copy_object(
        &self,
        src: (&str, &str),
        dest: (&str, &str),
    ) -> BlobResult<()> {
        self.existing_container(dest.0).await?;
        let from = self.existing_object(src.0, src.1).await?;
        let blob = new_blob_id()?;
        let count = chunk_count(from.size);
        let mut index = 0;
        while index < count {
            let mut pairs = Vec::with_capacity(CHUNKS_PER_ENTRY);
            for i in index..(index + CHUNKS_PER_ENTRY as u64).min(count) {
                let bytes = self.chunk(&from.blob, i).await?;
                pairs.push((chunk_key(&blob, i), bytes));
            }
            index += pairs.len() as u64;
            if let Err(e) = self.write_chunks(pairs).await {
                self.delete_blob(&blob, index * CHUNK as u64).await.ok();
                return Err(e);
            }
        }
        let record = ObjectRecord {
            blob,
            size: from.size,
            created_at: now(),
        };
        self.put_object(dest.0, dest.1, &record).await
    }

    /// Writes chunks of a blob, all or none.
    pub(crate) async fn write_chunks(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> BlobResult<()> {
        self.write(Op::PutMany {
            space: self.chunks(),
            pairs,
        })
        .await?;
        Ok(())
    }

    /// The chunks of `bytes`, numbered from `first`.
    pub(crate) fn chunk_pairs(blob: &str, first: u64, bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        bytes
            .chunks(CHUNK)
            .zip(first..)
            .map(|(chunk, i)| (chunk_key(blob, i), chunk.to_vec()))
            .collect()
    }

    /// Chunk `index` of `blob`; an error if it is gone (the object was replaced or deleted
    /// while it was read).
    pub(crate) async fn chunk(&self, blob: &str, index: u64) -> BlobResult<Vec<u8>> {
        self.store
            .get(&self.chunks(), &chunk_key(blob, index))
            .await
            .map_err(store_error)?
            .ok_or_else(|| "the object was replaced or deleted while it was read".to_string())
    }

    /// Deletes the chunks of a blob of `size` bytes.
    pub(crate) async fn delete_blob(&self, blob: &str, size: u64) -> BlobResult<()> {
        let keys: Vec<Vec<u8>> = (0..chunk_count(size)).map(|i| chunk_key(blob, i)).collect();
        for batch in keys.chunks(DELETE_BATCH) {
            self.write(Op::DeleteMany {
                space: self.chunks(),
                keys: batch.to_vec(),
            })
            .await?;
        }
        Ok(())
    }
}

/// How many chunks hold `size` bytes.
pub(crate) fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_numbered_in_order_and_sized() {
        let bytes = vec![7u8; CHUNK * 2 + 5];
        let pairs = Objects::chunk_pairs("ab", 3, &bytes);
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0].0, b"ab/0000000003");
        assert_eq!(pairs[2].0, b"ab/0000000005");
        assert_eq!(pairs[2].1.len(), 5);
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(CHUNK as u64), 1);
        assert_eq!(chunk_count(CHUNK as u64 + 1), 2);
    }
}
