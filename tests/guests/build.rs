//! Builds the guest components with a nested `cargo build --target wasm32-wasip2` into its own
//! target directory (sharing the outer one would deadlock on cargo's lock), then writes a constant
//! per component with its path.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, is a binary). Binaries keep dashes in their file name; libraries get underscores.
const GUESTS: &[(&str, bool)] = &[
    ("test-http-basics", true),
    ("test-http-020", false),
    ("test-kv-draft", false),
    ("test-kv-draft2", false),
    ("test-misbehave", false),
    ("test-no-handler", true),
    ("test-unsupported-import", false),
    ("test-callers", false),
    ("test-logging", false),
    ("test-blobs", false),
    ("hello", false),
    ("counter", false),
    ("permits", false),
    ("registry", false),
    ("appointments", false),
];

/// rustup installs the targets that `rust-toolchain.toml` lists only when it installs the toolchain
/// itself; a machine that already had 1.95.0 lacks `wasm32-wasip2`. Add it here so that the README's
/// test command works on such a machine too.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if libdir.is_some_and(|dir| dir.is_dir()) {
        return;
    }
    println!("cargo:warning=installing the wasm32-wasip2 target with rustup");
    let added = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        added,
        "the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed; install it by hand"
    );
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    for dir in ["sdk", "examples", "modules", "tests/programs"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    let target_dir = root.join("target").join("guests");
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    // What the outer cargo set for its own build must not leak into the guests' build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    // Small components: no debug info in what is uploaded and deployed.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components for wasm32-wasip2 failed; is the target installed? (`rustup target add wasm32-wasip2`; rust-toolchain.toml lists it)"
    );
    let out_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut code = String::new();
    for (package, is_bin) in GUESTS {
        let file = if *is_bin {
            package.to_string()
        } else {
            package.replace('-', "_")
        };
        let path = out_dir.join(format!("{file}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        let constant = package
            .trim_start_matches("test-")
            .replace('-', "_")
            .to_uppercase();
        code.push_str(&format!(
            "/// The `{package}` component.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, code).unwrap();
}
