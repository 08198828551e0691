//! Names the engine and consensus versions this `doppel` was built with, for `doppel --version`:
//! read from the workspace's Cargo.lock, which pins them (`=` in Cargo.toml).

use std::path::Path;

fn main() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    for (name, var) in [
        ("wasmtime", "DOPPEL_WASMTIME_VERSION"),
        ("openraft", "DOPPEL_OPENRAFT_VERSION"),
    ] {
        let version = locked_version(&text, name).unwrap_or("unknown");
        println!("cargo:rustc-env={var}={version}");
    }
}

/// The version of `name` in a Cargo.lock (its first entry: both are locked to one version).
fn locked_version<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let entry = format!("name = \"{name}\"\nversion = \"");
    let start = lock.find(&entry)? + entry.len();
    lock[start..].split('"').next()
}
