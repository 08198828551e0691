//! The write-ahead log: commands appended in groups and `fdatasync`ed before any is acknowledged.
//!
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload`, the payload a postcard-encoded
//! [`Entry`]. Segments are named after the index of their first entry. A torn record at the end
//! of the newest segment is a write that was never acknowledged (its sync had not returned), so
//! recovery cuts it off; a bad record anywhere else is corruption and stops the host.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::command::Command;
use crate::engine::sync_dir;

const HEADER: usize = 8;

/// One logged command and its position.
#[derive(Deserialize)]
pub(crate) struct Entry {
    pub(crate) index: u64,
    pub(crate) command: Command,
}

/// The encoding side of [`Entry`]: borrows the command so that logging never copies a module.
#[derive(Serialize)]
pub(crate) struct EntryRef<'a> {
    pub(crate) index: u64,
    pub(crate) command: &'a Command,
}

pub(crate) struct Wal {
    dir: PathBuf,
    file: File,
    size: u64,
    buf: Vec<u8>,
}

fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}.wal")
}

/// Segments in the directory, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let index = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(index) = index {
            found.push((index, path));
        }
    }
    found.sort();
    Ok(found)
}

impl Wal {
    /// Opens the log in `dir` and returns the entries after `applied`, in order.
    pub(crate) fn open(dir: &Path, applied: u64) -> Result<(Wal, Vec<Entry>), StoreError> {
        std::fs::create_dir_all(dir)?;
        let found = segments(dir)?;
        let mut replay = Vec::new();
        let mut expected = applied + 1;
        for (i, (_, path)) in found.iter().enumerate() {
            let newest = i + 1 == found.len();
            let mut bytes = Vec::new();
            File::open(path)?.read_to_end(&mut bytes)?;
            let (entries, good_len) = decode(&bytes);
            if good_len < bytes.len() {
                if !newest {
                    return Err(StoreError::Corrupt(format!(
                        "write-ahead log segment {} is damaged at byte {good_len}, and it is not \
                         the newest segment; restore the data directory from a backup",
                        path.display()
                    )));
                }
                tracing::warn!(
                    segment = %path.display(),
                    cut = bytes.len() - good_len,
                    "cutting off a torn record at the end of the write-ahead log (a write that was never acknowledged)"
                );
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(good_len as u64)?;
                f.sync_all()?;
            }
            for entry in entries {
                if entry.index < expected {
                    continue;
                }
                if entry.index != expected {
                    return Err(StoreError::Corrupt(format!(
                        "write-ahead log skips from entry {} to {}",
                        expected - 1,
                        entry.index
                    )));
                }
                expected += 1;
                replay.push(entry);
            }
        }
        let wal = Wal::create_segment(dir, expected)?;
        Ok((wal, replay))
    }

    fn create_segment(dir: &Path, first_index: u64) -> Result<Wal, StoreError> {
        let path = dir.join(segment_name(first_index));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            file,
            size,
            buf: Vec::new(),
        })
    }

    /// Appends a group of entries and returns once they are on stable storage.
    pub(crate) fn append(&mut self, entries: &[EntryRef<'_>]) -> Result<(), StoreError> {
        self.buf.clear();
        for entry in entries {
            let start = self.buf.len();
            self.buf.extend_from_slice(&[0; HEADER]);
            postcard::to_io(entry, &mut self.buf)
                .map_err(|e| StoreError::Corrupt(format!("cannot encode a command: {e}")))?;
            let payload = &self.buf[start + HEADER..];
            let len = u32::try_from(payload.len())
                .map_err(|_| StoreError::Corrupt("a command over 4 GiB".into()))?;
            let crc = crc32fast::hash(payload);
            self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
            self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
        self.file.write_all(&self.buf)?;
        // fdatasync: the data and the file length reach the device; that is all replay needs.
        self.file.sync_data()?;
        self.size += self.buf.len() as u64;
        if self.buf.capacity() > 64 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Bytes in the current segment.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Starts a new segment at `next_index` and deletes every older one. Call only after the
    /// engine has checkpointed everything before `next_index`.
    pub(crate) fn rotate(&mut self, next_index: u64) -> Result<(), StoreError> {
        let fresh = Wal::create_segment(&self.dir, next_index)?;
        let old = std::mem::replace(self, fresh);
        drop(old.file);
        for (first, path) in segments(&self.dir)? {
            if first < next_index {
                std::fs::remove_file(path)?;
            }
        }
        sync_dir(&self.dir)?;
        Ok(())
    }
}

/// Decodes records until the first bad one; returns them and the length of the good prefix.
fn decode(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match postcard::from_bytes::<Entry>(payload) {
            Ok(entry) => entries.push(entry),
            Err(_) => break,
        }
        at += HEADER + len;
    }
    (entries, at)
}
