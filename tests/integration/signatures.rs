//! Signed modules, tried as someone who holds a deploy credential but not a signing key would:
//! an unsigned component, a flipped byte, a signature lifted onto another component, a key
//! nobody trusts, a key no longer trusted and an old release replayed are each refused before
//! anything is compiled; a component signed by a trusted key is served and shows its signer.

use std::path::{Path, PathBuf};

use doppel_guests as guests;

use crate::support::{Host, doppel, precompiled_dir};

/// Makes a signing key pair under `dir` with the real CLI; answers the secret key's path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let out = doppel().arg("keygen").arg(&key).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    key
}

/// Signs `component` with `key` (and a release version) into `out`, with the real CLI; answers
/// the signed file's path.
fn sign(component: &str, key: &Path, release: Option<&str>, out: &Path) -> String {
    let mut cmd = doppel();
    cmd.arg("sign")
        .arg(component)
        .arg("--key")
        .arg(key)
        .arg("-o")
        .arg(out);
    if let Some(r) = release {
        cmd.args(["--release", r]);
    }
    let done = cmd.output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    out.to_str().unwrap().to_string()
}

/// The length of the first section (the signature, in a signed component), header included:
/// id byte, LEB128 size, payload.
fn first_section_end(bytes: &[u8]) -> usize {
    let (mut size, mut shift, mut at) = (0usize, 0, 9);
    loop {
        let b = bytes[at];
        size |= usize::from(b & 0x7f) << shift;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    at + size
}

fn precompiled_count(host: &Host) -> usize {
    std::fs::read_dir(precompiled_dir(host))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

/// The matrix of issue 20: valid; unsigned; flipped byte; a valid signature over another
/// component; an untrusted key; a removed key; an older release replayed (refused, then let
/// through on purpose and audited). Every refusal comes before compilation: no precompiled copy
/// appears for a refused upload.
#[test]
fn only_components_signed_by_a_trusted_key_deploy_and_releases_do_not_go_back() {
    let host = Host::start();
    let dir = tempfile::tempdir().unwrap();
    let release_key = keygen(dir.path(), "release");
    let rogue_key = keygen(dir.path(), "rogue");
    let release_pub = format!("{}.pub", release_key.display());
    let rogue_pub = format!("{}.pub", rogue_key.display());
    let hello_1 = sign(
        guests::HELLO,
        &release_key,
        Some("1.0.0"),
        &dir.path().join("hello-1.wasm"),
    );
    let hello_2 = sign(
        guests::HELLO,
        &release_key,
        Some("2.0"),
        &dir.path().join("hello-2.wasm"),
    );
    let by_rogue = sign(
        guests::COUNTER,
        &rogue_key,
        None,
        &dir.path().join("rogue.wasm"),
    );

    // No policy yet: unsigned components deploy as before, but a signature nobody trusts is
    // refused all the same (it was altered, or comes from a publisher nobody vouched for).
    host.deploy(guests::HELLO, "plain", &[]);
    let err = host.cli_err(&["deploy", &hello_1, "--name", "svc"]);
    assert!(
        err.contains("not valid for any key this cluster trusts"),
        "{err}"
    );

    // Only an admin changes the trust policy.
    let operator = host.cli_ok(&["tokens", "create", "otto", "--role", "operator"]);
    let denied = doppel()
        .args([
            "trust",
            "add",
            "mine",
            &rogue_pub,
            "--token",
            operator.trim(),
        ])
        .arg("--data")
        .arg(&host.data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&denied.stderr).contains("this needs an admin"));
    let err = host.cli_err(&["trust", "require", "on"]);
    assert!(err.contains("trust a key first"), "{err}");
    let added = host.cli_ok(&["trust", "add", "release", &release_pub]);
    assert!(added.contains("ed25519:"), "{added}");
    let err = host.cli_err(&["trust", "add", "again", &release_pub]);
    assert!(err.contains("trusted already, as \"release\""), "{err}");
    host.cli_ok(&["trust", "require", "on"]);

    let compiled = precompiled_count(&host);
    // Unsigned.
    let err = host.cli_err(&["deploy", guests::COUNTER, "--name", "svc"]);
    assert!(
        err.contains("not signed, and this cluster requires"),
        "{err}"
    );
    // A flipped byte right after the signature, where it also makes the component invalid: the
    // signature check answers, so it came first.
    let mut flipped = std::fs::read(&hello_1).unwrap();
    let at = first_section_end(&flipped);
    flipped[at] ^= 0xff;
    let flipped = write(dir.path(), "flipped.wasm", &flipped);
    let err = host.cli_err(&["deploy", &flipped, "--name", "svc"]);
    assert!(err.contains("not valid for any key"), "{err}");
    // A valid signature, lifted onto another (valid) component.
    let signed = std::fs::read(&hello_1).unwrap();
    let counter = std::fs::read(guests::COUNTER).unwrap();
    let mut lifted = signed[..first_section_end(&signed)].to_vec();
    lifted.extend_from_slice(&counter[8..]);
    let lifted = write(dir.path(), "lifted.wasm", &lifted);
    let err = host.cli_err(&["deploy", &lifted, "--name", "svc"]);
    assert!(err.contains("not valid for any key"), "{err}");
    // Signed by a key the cluster does not trust.
    let err = host.cli_err(&["deploy", &by_rogue, "--name", "svc"]);
    assert!(err.contains("not valid for any key"), "{err}");
    assert_eq!(
        precompiled_count(&host),
        compiled,
        "a refused component was compiled"
    );

    // Valid: served, and its signer and release shown.
    host.deploy(&hello_2, "svc", &[]);
    assert_eq!(host.get("/svc/").0, 200);
    let listed: serde_json::Value = serde_json::from_str(&host.cli_ok(&["ls", "--json"])).unwrap();
    let svc = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "svc")
        .unwrap();
    assert_eq!(svc["signed_by"], serde_json::json!(["release"]));
    assert_eq!(svc["release"], "2.0");

    // An older release replayed: refused, unless on purpose, which the audit trail names.
    let err = host.cli_err(&["deploy", &hello_1, "--name", "svc"]);
    assert!(
        err.contains("release 1.0.0 is older than release 2.0"),
        "{err}"
    );
    host.deploy(&hello_1, "svc", &["--allow-older"]);
    let audit = host.cli_ok(&["audit", "--json"]);
    assert!(
        audit.contains("release 1.0.0 replaced the newer 2.0 (--allow-older)"),
        "{audit}"
    );

    // A key trusted, then removed: what it signed is refused from then on; what runs stays.
    host.cli_ok(&["trust", "add", "vendor", &rogue_pub]);
    host.deploy(&by_rogue, "vendor-svc", &[]);
    host.cli_ok(&["trust", "rm", "vendor"]);
    let err = host.cli_err(&["deploy", &by_rogue, "--name", "vendor-svc-2"]);
    assert!(err.contains("not valid for any key"), "{err}");
    assert_eq!(host.get("/vendor-svc/visits").0, 200);
    let trusted = host.cli_ok(&["trust", "ls"]);
    assert!(trusted.contains("required for every deploy") && !trusted.contains("vendor"));
}

/// A service can require signatures for itself before the whole cluster does, and the
/// requirement stays with the name.
#[test]
fn a_service_that_requires_signatures_keeps_requiring_them() {
    let host = Host::start();
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k");
    let public = format!("{}.pub", key.display());
    let signed = sign(guests::HELLO, &key, None, &dir.path().join("hello.wasm"));
    host.cli_ok(&["trust", "add", "k", &public]);
    let err = host.cli_err(&[
        "deploy",
        guests::HELLO,
        "--name",
        "strict",
        "--require-signatures",
    ]);
    assert!(
        err.contains("service \"strict\" requires signatures"),
        "{err}"
    );
    host.deploy(&signed, "strict", &["--require-signatures"]);
    // A later deploy without the flag cannot drop it.
    let err = host.cli_err(&["deploy", guests::HELLO, "--name", "strict"]);
    assert!(
        err.contains("service \"strict\" requires signatures"),
        "{err}"
    );
    // Other services are not affected.
    host.deploy(guests::HELLO, "relaxed", &[]);
    assert_eq!(host.get("/strict/").0, 200);
    assert_eq!(host.get("/relaxed/").0, 200);
}
