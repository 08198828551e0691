//! S3 Object Lock: a target with a retention asks the store, on every object it creates, to
//! keep it (compliance mode, a retain-until date at least the retention ahead, with the
//! checksum S3 requires on a locked bucket); a target without one asks nothing, and a directory
//! cannot lock. The S3 endpoint is a stub on loopback that records each request: what it
//! checks is what doppel sends (what the store then does is the store's).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use doppel_backup::location::Location;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Answers every request `200` with an ETag, and records each request's head (lowercased).
async fn stub(listener: tokio::net::TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let head_end = loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    let mut chunk = [0u8; 4096];
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let mut chunk = [0u8; 4096];
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..head_end + length);
                seen.lock().unwrap().push(head);
                let answer = "HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n";
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

#[tokio::test]
async fn a_locked_target_asks_the_store_to_keep_each_object() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(stub(listener, seen.clone()));
    // SAFETY: set before anything else in this test binary reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "ak-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "sk-test");
        std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
        std::env::set_var("AWS_REGION", "eu-central-1");
    }
    let retain = Duration::from_secs(30 * 24 * 3600);
    let asked_at = time::OffsetDateTime::now_utc();
    let locked = Location::open_locked("s3://backups/doppel", retain).unwrap();
    locked.create("objects/1", b"one".to_vec()).await.unwrap();
    let plain = Location::open("s3://backups/doppel").unwrap();
    plain.create("objects/2", b"two".to_vec()).await.unwrap();
    assert!(
        Location::open_locked("file:///tmp/doppel-lock-test", retain).is_err(),
        "a directory cannot lock"
    );

    let heads = seen.lock().unwrap().clone();
    let put = |object: &str| {
        heads
            .iter()
            .find(|h| h.starts_with("put ") && h.lines().next().unwrap().contains(object))
            .unwrap_or_else(|| panic!("no PUT of {object} in {heads:?}"))
            .clone()
    };
    let first = put("objects/1");
    assert_eq!(header(&first, "x-amz-object-lock-mode"), Some("compliance"));
    let until = header(&first, "x-amz-object-lock-retain-until-date").expect("a retain-until date");
    let until = time::OffsetDateTime::parse(
        &until.to_uppercase(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        until >= asked_at + retain,
        "kept until {until}, asked at {asked_at} for {retain:?}"
    );
    assert!(header(&first, "x-amz-checksum-sha256").is_some(), "{first}");
    assert_eq!(
        header(&first, "if-none-match"),
        Some("*"),
        "still create-only"
    );
    let second = put("objects/2");
    assert!(!second.contains("x-amz-object-lock"), "{second}");
}
