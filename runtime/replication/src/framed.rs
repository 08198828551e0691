//! Length- and checksum-framed records in an append-only file.
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload`; a zero length ends the records.
//!
//! An [`Appender`] allocates its file ahead of the records, [`GROW`] bytes at a time, so that
//! an append overwrites allocated zeros instead of growing the file. Growing the file changes
//! its size, and ext4 then has to commit its journal on every `fdatasync`; writing into space
//! allocated earlier only flushes the data: a 300-byte record plus `fdatasync` takes 0.6–0.7 of
//! the time (`cargo bench -p doppel-replication --bench sync`; figures in `benches/README.md`).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use doppel_store::crash;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How far ahead of the records an [`Appender`] allocates its file.
const GROW: u64 = 16 << 20;

/// Fills `buf` from `reader`; false if the reader ends first.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Where a record's frame is in its file, and how many bytes its payload takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    /// The frame's first byte.
    pub(crate) at: u64,
    /// The payload's length.
    pub(crate) len: u32,
}

/// Hands each record at the start of `file` (`size` bytes long), with where it is, to `each`,
/// up to the first that is torn, absent (zero length) or does not decode; returns where they
/// end. Reads no further than that, so the zeros allocated behind the records cost nothing, and
/// holds one record at a time.
fn parse<T: DeserializeOwned>(
    file: &File,
    size: u64,
    mut each: impl FnMut(T, Place),
) -> std::io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut at = 0u64;
    let mut header = [0; 8];
    let mut payload = Vec::new();
    while fill(&mut reader, &mut header)? {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        // A torn length may claim more than the file holds: stop before allocating for it.
        if len == 0 || at + 8 + u64::from(len) > size {
            break;
        }
        payload.resize(len as usize, 0);
        if !fill(&mut reader, &mut payload)? || crc32fast::hash(&payload) != crc {
            break;
        }
        match postcard::from_bytes(&payload) {
            Ok(record) => each(record, Place { at, len }),
            Err(_) => break,
        }
        at += 8 + u64::from(len);
    }
    Ok(at)
}

/// Reads the records of a file written whole by [`rewrite`] (a snapshot), without opening it
/// for writing.
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> std::io::Result<Vec<T>> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut records = Vec::new();
    parse(&file, size, |r, _| records.push(r))?;
    Ok(records)
}

/// Reads the one record whose frame is at `place` in `file`, checking its checksum.
fn read_one<T: DeserializeOwned>(file: &File, place: Place) -> std::io::Result<T> {
    let mut frame = vec![0; 8 + place.len as usize];
    file.read_exact_at(&mut frame, place.at)?;
    let (header, payload) = frame.split_at(8);
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len != place.len || crc32fast::hash(payload) != crc {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the record at byte {} of the file is not what was written there",
                place.at
            ),
        ));
    }
    postcard::from_bytes(payload)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// An open framed file that records are appended to.
pub(crate) struct Appender {
    file: File,
    /// Where the records end: the next append goes here.
    end: u64,
    /// How much of the file is allocated (its length), zeros from `end` on; `u64::MAX` once the
    /// file system has said it cannot allocate ahead, so that appends stop asking.
    allocated: u64,
}

/// Reads every sound record of `path` and cuts the file where they end. Behind them there may be
/// allocated zeros, or what a crash left of writes never acknowledged (their sync never
/// returned); either goes, so that a later, shorter record cannot bring a whole stale one behind
/// it back into line. The next append allocates ahead again. Hands each record to `each` and
/// returns the file ready for appending.
pub(crate) fn open<T: DeserializeOwned>(
    path: &Path,
    each: impl FnMut(T, Place),
) -> std::io::Result<Appender> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    let size = file.metadata()?.len();
    let at = parse(&file, size, each)?;
    if at < size {
        // Only the first bytes behind the records are read, to tell a torn record (worth a
        // warning) from allocated zeros (the normal case).
        let mut behind = [0; 64];
        let n = file.read_at(&mut behind, at)?;
        if behind[..n].iter().any(|&b| b != 0) {
            tracing::warn!(path = %path.display(), cut = size - at, "cutting off a torn record at the end of the raft log");
        }
        file.set_len(at)?;
    }
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(Appender {
        file,
        end: at,
        allocated: at,
    })
}

/// Appends the frames of `records` to `buf`; where each starts in `buf`, and its payload's length.
pub(crate) fn encode<'a, T: Serialize + 'a>(
    records: impl IntoIterator<Item = &'a T>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Vec<Place>> {
    let mut places = Vec::new();
    for record in records {
        let start = buf.len();
        buf.extend_from_slice(&[0; 8]);
        postcard::to_io(record, &mut *buf).map_err(std::io::Error::other)?;
        let len = u32::try_from(buf.len() - start - 8).map_err(std::io::Error::other)?;
        let crc = crc32fast::hash(&buf[start + 8..]);
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        places.push(Place {
            at: start as u64,
            len,
        });
    }
    Ok(places)
}

/// Allocates `file` up to `len` bytes (zeros), without writing them. False where the file
/// system cannot (the file then grows with each append, as any file does).
fn allocate(file: &File, len: u64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: a plain system call on a file descriptor `file` owns for the whole call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(err),
    }
}

impl Appender {
    /// The bytes the records take.
    pub(crate) fn len(&self) -> u64 {
        self.end
    }

    /// Reads back the record at `place` (one this file holds).
    pub(crate) fn read_at<T: DeserializeOwned>(&self, place: Place) -> std::io::Result<T> {
        read_one(&self.file, place)
    }

    /// Appends `records`; with `sync`, returns only once they are on stable storage. `point`
    /// names the step for crash tests ([`crash::point`]). Returns where each record is.
    pub(crate) fn append<T: Serialize>(
        &mut self,
        records: &[T],
        sync: bool,
        point: &str,
    ) -> std::io::Result<Vec<Place>> {
        let mut buf = Vec::new();
        let mut places = encode(records, &mut buf)?;
        for place in &mut places {
            place.at += self.end;
        }
        let end = self.end + buf.len() as u64;
        if end > self.allocated {
            let want = end + GROW;
            // The new length reaches the disk with the next sync of data, as any append's does.
            self.allocated = if allocate(&self.file, want)? {
                want
            } else {
                u64::MAX
            };
        }
        self.file.write_all_at(&buf, self.end)?;
        let start = self.end;
        crash::point(point, "unsynced", || {
            // A power cut now loses the bytes not yet synced: allocated space reads as zeros.
            let _ = self.file.write_all_at(&vec![0; buf.len()], start);
            let _ = self.file.sync_all();
        });
        if sync {
            let started = std::time::Instant::now();
            self.file.sync_data()?;
            crate::metrics::LOG_SYNC_SECONDS.observe(started.elapsed().as_secs_f64());
            crash::point(point, "synced", || {});
        }
        self.end = end;
        Ok(places)
    }
}

/// Replaces `path` with a file holding exactly `records` (temp file, fsync, rename, fsync dir),
/// made one at a time so that they are never all in memory at once. `point` names the step for
/// crash tests. Returns the new file and where each record is in it.
pub(crate) fn rewrite<T: Serialize>(
    path: &Path,
    records: impl IntoIterator<Item = std::io::Result<T>>,
    point: &str,
) -> std::io::Result<(Appender, Vec<Place>)> {
    let tmp = path.with_extension("rewrite");
    let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    let mut places = Vec::new();
    let mut size = 0u64;
    let mut frame = Vec::new();
    for record in records {
        frame.clear();
        let place = encode(std::iter::once(&record?), &mut frame)?[0];
        f.write_all(&frame)?;
        places.push(Place {
            at: size,
            len: place.len,
        });
        size += frame.len() as u64;
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    // A power cut before the sync leaves a temp file of any length, or none.
    crash::point(point, "unsynced", || {
        let _ = std::fs::remove_file(&tmp);
    });
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    crash::point(point, "renamed", || {});
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    let appender = Appender {
        file: OpenOptions::new().read(true).write(true).open(path)?,
        end: size,
        allocated: size,
    };
    Ok((appender, places))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens `path`, with the records it holds.
    fn open_all(path: &Path) -> (Vec<String>, Appender) {
        let mut records = Vec::new();
        let file = open::<String>(path, |r, _| records.push(r)).unwrap();
        (records, file)
    }

    fn frame(record: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&[record.to_string()], &mut buf).unwrap();
        buf
    }

    #[test]
    fn nothing_behind_a_torn_record_reappears_after_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (_, mut file) = open_all(&path);
        file.append(&["kept".to_string()], true, "test").unwrap();
        // A crash left a torn record, and behind it a whole one that was never synced.
        let mut torn = frame("a record cut short");
        torn.truncate(torn.len() - 3);
        torn.extend(frame("stale"));
        file.file.write_all_at(&torn, file.end).unwrap();
        drop(file);
        let (records, mut file) = open_all(&path);
        assert_eq!(records, ["kept"]);
        // A short record where the torn one began must not bring "stale" back into line.
        file.append(&["new".to_string()], true, "test").unwrap();
        drop(file);
        let (records, file) = open_all(&path);
        assert_eq!(records, ["kept", "new"]);
        // A torn length claiming far more than the file holds ends the records too (and is not
        // allocated for).
        file.file
            .write_all_at(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5], file.end)
            .unwrap();
        drop(file);
        let (records, _) = open_all(&path);
        assert_eq!(records, ["kept", "new"]);
    }

    #[test]
    fn records_end_where_the_allocated_zeros_begin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (_, mut file) = open_all(&path);
        file.append(&["one".to_string(), "two".to_string()], true, "test")
            .unwrap();
        let records_end = file.len();
        drop(file);
        let allocated = std::fs::metadata(&path).unwrap().len();
        assert!(
            allocated > records_end,
            "the file is allocated ahead of its records ({allocated} bytes for {records_end})"
        );
        let (records, mut file) = open_all(&path);
        assert_eq!(records, ["one", "two"]);
        assert_eq!(file.len(), records_end);
        // Reopening cuts the file at the records; the next append allocates ahead again.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), records_end);
        file.append(&["three".to_string()], false, "test").unwrap();
        drop(file);
        assert!(std::fs::metadata(&path).unwrap().len() > records_end);
        let (records, _) = open_all(&path);
        assert_eq!(records, ["one", "two", "three"]);
        // A file written whole is read back whole, and appends go on at its end.
        let (mut file, places) = rewrite(&path, [Ok("only".to_string())], "test").unwrap();
        let after = file.append(&["after".to_string()], true, "test").unwrap();
        // Each record is read back alone from where it was said to be.
        assert_eq!(file.read_at::<String>(places[0]).unwrap(), "only");
        assert_eq!(file.read_at::<String>(after[0]).unwrap(), "after");
        let wrong = Place {
            at: after[0].at,
            len: places[0].len,
        };
        assert!(file.read_at::<String>(wrong).is_err());
        drop(file);
        assert_eq!(read::<String>(&path).unwrap(), ["only", "after"]);
    }
}
