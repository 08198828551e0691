//! What a host keeps on its disk, looked at as an auditor of that disk would.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use doppel_guests as guests;

use crate::support::Host;

/// Every file and folder below `dir` that its group or others may read, write or enter.
fn not_private(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            found.push((entry.path(), mode));
        }
        if meta.is_dir() {
            found.extend(not_private(&entry.path()));
        }
    }
    found
}

/// The store, the raft log, the module cache, keys and credentials: all owner-only, including
/// what an older version left readable in the data directory.
#[test]
fn every_file_and_folder_in_the_data_directory_is_its_owners_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let older = data.join("left-by-an-older-version");
    std::fs::create_dir_all(&older).unwrap();
    std::fs::write(older.join("file"), "x").unwrap();
    std::fs::set_permissions(&older, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(older.join("file"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let host = Host::spawn(&data, &[]);
    host.deploy(guests::COUNTER, "counter", &[]);
    for _ in 0..3 {
        assert_eq!(host.post("/counter/visits", "").0, 200);
    }
    let open = not_private(&data);
    assert!(open.is_empty(), "readable by others: {open:?}");
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
}
