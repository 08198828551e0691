//! Length- and checksum-framed records in an append-only file.
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use doppel_store::crash;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads every sound record of `path`; cuts off a torn tail (a write whose sync never returned,
/// so never acknowledged). Returns the records and the file opened for appending.
pub(crate) fn open<T: DeserializeOwned>(path: &Path) -> std::io::Result<(Vec<T>, File, u64)> {
    let mut bytes = Vec::new();
    if path.exists() {
        File::open(path)?.read_to_end(&mut bytes)?;
    }
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match postcard::from_bytes(payload) {
            Ok(record) => records.push(record),
            Err(_) => break,
        }
        at += 8 + len;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), cut = bytes.len() - at, "cutting off a torn record at the end of the raft log");
        file.set_len(at as u64)?;
    }
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok((records, file, at as u64))
}

/// Appends the frames of `records` to `buf`.
pub(crate) fn encode<T: Serialize>(records: &[T], buf: &mut Vec<u8>) -> std::io::Result<()> {
    for record in records {
        let start = buf.len();
        buf.extend_from_slice(&[0; 8]);
        postcard::to_io(record, &mut *buf).map_err(std::io::Error::other)?;
        let len = u32::try_from(buf.len() - start - 8).map_err(std::io::Error::other)?;
        let crc = crc32fast::hash(&buf[start + 8..]);
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

/// Appends `records`; with `sync`, returns only once they are on stable storage. The bytes
/// written. `point` names the step for crash tests ([`crash::point`]).
pub(crate) fn append<T: Serialize>(
    file: &mut File,
    records: &[T],
    sync: bool,
    point: &str,
) -> std::io::Result<u64> {
    let mut buf = Vec::new();
    encode(records, &mut buf)?;
    file.write_all(&buf)?;
    crash::point(point, "unsynced", || {
        // A power cut now loses the bytes not yet synced.
        if let Ok(meta) = file.metadata() {
            let _ = file.set_len(meta.len().saturating_sub(buf.len() as u64));
            let _ = file.sync_all();
        }
    });
    if sync {
        file.sync_data()?;
        crash::point(point, "synced", || {});
    }
    Ok(buf.len() as u64)
}

/// Replaces `path` with a file holding exactly `records` (temp file, fsync, rename, fsync dir).
/// `point` names the step for crash tests.
pub(crate) fn rewrite<T: Serialize>(
    path: &Path,
    records: &[T],
    point: &str,
) -> std::io::Result<(File, u64)> {
    let mut frames = Vec::new();
    encode(records, &mut frames)?;
    rewrite_frames(path, &frames, point)
}

/// [`rewrite`] with the records already framed.
pub(crate) fn rewrite_frames(
    path: &Path,
    frames: &[u8],
    point: &str,
) -> std::io::Result<(File, u64)> {
    let tmp = path.with_extension("rewrite");
    let mut f = File::create(&tmp)?;
    f.write_all(frames)?;
    // A power cut before the sync leaves a temp file of any length, or none.
    crash::point(point, "unsynced", || {
        let _ = std::fs::remove_file(&tmp);
    });
    let size = frames.len() as u64;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    crash::point(point, "renamed", || {});
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok((OpenOptions::new().append(true).open(path)?, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(record: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&[record.to_string()], &mut buf).unwrap();
        buf
    }

    #[test]
    fn nothing_behind_a_torn_record_reappears_after_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (_, mut file, _) = open::<String>(&path).unwrap();
        append(&mut file, &["kept".to_string()], true, "test").unwrap();
        // A crash left a torn record, and behind it a whole one that was never synced.
        let mut torn = frame("a record cut short");
        torn.truncate(torn.len() - 3);
        torn.extend(frame("stale"));
        file.write_all(&torn).unwrap();
        drop(file);
        let (records, mut file, _) = open::<String>(&path).unwrap();
        assert_eq!(records, ["kept"]);
        // A short record where the torn one began must not bring "stale" back into line.
        append(&mut file, &["new".to_string()], true, "test").unwrap();
        drop(file);
        let (records, _, _) = open::<String>(&path).unwrap();
        assert_eq!(records, ["kept", "new"]);
    }
}
