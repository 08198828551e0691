//! Misbehaving guests and clients fail alone: a 5xx or a guest-visible error for that request, the
//! cause in the service's log, and the host and every other service keep serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use doppel_guests as guests;

use crate::support::{Host, eventually, http};

fn logs(host: &Host, service: &str) -> String {
    host.cli_ok(&["logs", service])
}

#[test]
fn a_trap_fails_one_request_and_is_logged() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "bad", &[]);
    host.deploy(guests::HTTP_020, "good", &[]);
    let (status, body) = host.get("/bad/trap");
    assert_eq!(status, 500);
    assert!(body.contains("doppel logs bad"), "{body}");
    let log = logs(&host, "bad");
    assert!(
        log.contains("deliberate trap"),
        "the panic message reaches the log: {log}"
    );
    assert!(log.contains("request failed"), "{log}");
    assert_eq!(host.get("/bad/ok"), (200, "fine".into()));
    assert_eq!(host.get("/good/").0, 200);
    let ls: serde_json::Value = serde_json::from_str(&host.cli_ok(&["ls", "--json"])).unwrap();
    let bad = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "bad")
        .unwrap();
    assert_eq!(bad["errors"], 1);
}

#[test]
fn an_endless_loop_is_stopped_at_the_timeout_while_others_keep_serving() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "bad", &["--timeout", "2s"]);
    host.deploy(guests::HTTP_020, "good", &[]);
    let looping = {
        let url = host.url("/bad/loop");
        std::thread::spawn(move || {
            let r = http().get(url).send().unwrap();
            r.status().as_u16()
        })
    };
    // While the loop spins, other requests are answered.
    for _ in 0..20 {
        assert_eq!(host.get("/good/").0, 200);
    }
    assert_eq!(looping.join().unwrap(), 504);
    assert!(logs(&host, "bad").contains("time limit"));
    // A guest stuck waiting (not computing) is stopped too.
    let (status, _) = host.get("/bad/sleep?ms=60000");
    assert_eq!(status, 504);
    assert_eq!(host.get("/bad/ok").0, 200);
}

#[test]
fn memory_past_the_limit_fails_the_request_and_says_why() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "bad", &["--max-memory", "32MiB"]);
    assert_eq!(host.get("/bad/alloc?mb=8").0, 200);
    let (status, _) = host.get("/bad/alloc?mb=64");
    assert_eq!(status, 500);
    let log = logs(&host, "bad");
    assert!(log.contains("past its limit of 33554432 bytes"), "{log}");
    assert_eq!(
        host.get("/bad/alloc?mb=8").0,
        200,
        "the next instance starts fresh"
    );
}

/// A request never sees what an earlier one left in memory: instance slots are reused, and only
/// the pages a request dirtied are reset after it (where Linux can tell which), so a page the
/// reset missed would show here as a changed static or a non-zero byte in fresh heap memory.
#[test]
fn every_request_starts_from_clean_memory() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "bad", &[]);
    let check = |host: &Host| {
        for _ in 0..25 {
            let (status, body) = host.get("/bad/leftovers");
            assert_eq!((status, body.as_str()), (200, "7 0 0"));
        }
    };
    check(&host);
    // Several at once, so that slots are in use side by side and reused out of order.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| check(&host));
        }
    });
    // After a request that grew its memory well past the fresh heap and wrote all of it.
    assert_eq!(host.get("/bad/alloc?mb=8").0, 200);
    check(&host);
}

#[test]
fn request_bodies_over_the_limit_are_refused() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "bad", &["--max-body", "64KiB"]);
    assert_eq!(
        host.post("/bad/body", vec![b'x'; 1000]),
        (200, "read 1000 bytes".into())
    );
    let (status, body) = host.post("/bad/body", vec![b'x'; 100_000]);
    assert_eq!(status, 413);
    assert!(body.contains("65536"), "{body}");
    // Without a declared length the body is cut off at the limit; the guest sees a read error.
    let chunks = futures_free_stream(vec![b'y'; 100_000]);
    let (status, body) = host.post("/bad/body", chunks);
    assert_eq!(status, 413, "{body}");
    assert!(body.starts_with("body error"), "{body}");
}

/// A body reqwest must send chunked (no content-length).
fn futures_free_stream(bytes: Vec<u8>) -> reqwest::blocking::Body {
    reqwest::blocking::Body::new(std::io::Cursor::new(bytes))
}

#[test]
fn keys_values_and_quota_over_the_limits_are_guest_visible_errors() {
    let host = Host::start();
    host.deploy(
        guests::MISBEHAVE,
        "bad",
        &[
            "--max-key",
            "100",
            "--max-value",
            "10KiB",
            "--quota",
            "64KiB",
        ],
    );
    assert_eq!(host.get("/bad/kv?key=100&value=10240").1, "stored");
    let text = host.get("/bad/kv?key=101&value=1").1;
    assert!(
        text.contains("refused") && text.contains("key is 101 bytes"),
        "{text}"
    );
    let text = host.get("/bad/kv?key=10&value=10241").1;
    assert!(
        text.contains("refused") && text.contains("value is 10241 bytes"),
        "{text}"
    );
    // Fill up to the quota with distinct keys (key length varies the key).
    let mut refused = None;
    for len in 1..20 {
        let text = host.get(&format!("/bad/kv?key={len}&value=10000")).1;
        if text.contains("quota") {
            refused = Some(text);
            break;
        }
    }
    let text = refused.expect("the quota was never reached");
    assert!(text.contains("storage quota exceeded"), "{text}");
    assert_eq!(host.get("/bad/ok").0, 200);
    // Bucket names have a limit too.
    let text = host
        .get(&format!("/bad/kv?b={}&key=1&value=1", "b".repeat(300)))
        .1;
    assert!(
        text.contains("bucket names are at most 255 bytes"),
        "{text}"
    );
}

#[test]
fn a_handler_that_never_responds_gets_a_500() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "bad", &[]);
    let (status, body) = host.get("/bad/noresponse");
    assert_eq!(status, 500);
    assert!(body.contains("no response"), "{body}");
}

#[test]
fn slow_clients_are_cut_off_and_do_not_block_others() {
    let host = Host::start_with(&["--header-timeout", "1s"]);
    host.deploy(guests::HTTP_020, "good", &[]);
    // Several clients that send half a request line and then nothing.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(host.listen).unwrap();
            s.write_all(b"GET /good/ HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    assert_eq!(host.get("/good/").0, 200);
    // The host closes them once the header timeout passes.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(
            buf.is_empty() || text.contains("408"),
            "unexpected answer to a stalled request: {text}"
        );
    }
    // Malformed requests get a 400 and the host serves on.
    let mut s = TcpStream::connect(host.listen).unwrap();
    s.write_all(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        String::from_utf8_lossy(&buf).contains("400"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    eventually("the host keeps serving", || host.get("/good/").0 == 200);
}

/// The admin and peer ports have the service port's protections: a client that starts a TLS
/// handshake and then sends nothing more is cut off after the header timeout, and the API serves
/// on meanwhile.
#[test]
fn slow_clients_of_the_admin_and_peer_ports_are_cut_off_too() {
    let host = Host::start_with(&["--header-timeout", "1s"]);
    // The first bytes of a TLS record header, and then nothing.
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|i| {
            let port = if i % 2 == 0 { host.admin } else { host.peer };
            let mut s = TcpStream::connect(port).unwrap();
            s.write_all(&[0x16, 0x03, 0x01]).unwrap();
            s
        })
        .collect();
    assert!(host.cli_ok(&["ls"]).contains("No services deployed"));
    for s in &mut slow {
        // Bounded wait for the host to close it (without a header timeout it never would).
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        let closed = s.read_to_end(&mut buf).is_ok();
        let text = String::from_utf8_lossy(&buf);
        assert!(closed, "a stalled TLS handshake was still open after 30 s");
        assert!(
            buf.is_empty(),
            "unexpected answer to a stalled handshake: {text}"
        );
    }
    assert!(host.cli_ok(&["ls"]).contains("No services deployed"));
}
