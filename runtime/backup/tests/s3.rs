//! Against a real S3-compatible server (s3s-fs, installed by `tests/install-servers.sh`): an
//! object the cluster created is never written again — a second create of the same name is
//! refused by the store (`If-None-Match: *`), and the first bytes stay.

use std::process::{Command, Stdio};

use doppel_backup::BackupError;
use doppel_backup::location::Location;

#[tokio::test]
async fn an_s3_store_refuses_to_overwrite_an_object() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/install-servers.sh"
    );
    let out = Command::new(script).arg("s3").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("backups")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "ak-test", "--secret-key", "sk-test"])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "ak-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "sk-test");
        std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ALLOW_HTTP", "true");
    }
    let location = Location::open("s3://backups/doppel").unwrap();
    location.create("objects/1", b"one".to_vec()).await.unwrap();
    let again = location.create("objects/1", b"two".to_vec()).await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(matches!(again, Err(BackupError::Exists(_))), "{again:?}");
    let on_disk = std::fs::read(root.path().join("backups/doppel/objects/1")).unwrap();
    assert_eq!(on_disk, b"one");
}
