//! Hostile clients against one host, as an anonymous client of the service port would play them:
//! trickling request bodies at one service while another serves a steady load, more connections
//! from one address than it may have, and more concurrent requests for one service than its
//! share. Each attack fails; the other services do not notice.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use doppel_guests as guests;

use crate::support::{Host, http};

/// A connection to `to` from the loopback address `from` (the attacker's own address, so that
/// per-address caps apply to it and not to the test's other clients on 127.0.0.1).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Everything `stream` sends until it closes (or `limit` passes), and how long that took.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    (String::from_utf8_lossy(&buf).into_owned(), start.elapsed())
}

/// Latencies in ms of `n` GETs of `url` from `threads` threads, and how many failed.
fn steady_load(url: &str, threads: usize, n: usize) -> (Vec<f64>, usize) {
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let url = url.to_string();
            std::thread::spawn(move || {
                let client = http();
                let mut times = Vec::new();
                let mut failed = 0;
                for _ in 0..n / threads {
                    let start = Instant::now();
                    match client.get(&url).send() {
                        Ok(r) if r.status().is_success() => {
                            times.push(start.elapsed().as_secs_f64() * 1000.0)
                        }
                        _ => failed += 1,
                    }
                }
                (times, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for w in workers {
        let (times, f) = w.join().unwrap();
        all.extend(times);
        failed += f;
    }
    all.sort_by(f64::total_cmp);
    (all, failed)
}

fn p99(sorted: &[f64]) -> f64 {
    sorted[((sorted.len() - 1) as f64 * 0.99) as usize]
}

#[test]
fn trickling_bodies_hold_no_instance_and_are_cut_off_while_other_services_serve() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "target", &[]);
    host.deploy(guests::HTTP_020, "victim", &[]);
    let victim = host.url("/victim/");
    let (quiet, failed) = steady_load(&victim, 4, 400);
    assert_eq!(failed, 0);

    // 1,050 connections from three addresses (each under the per-address cap) send a POST's
    // headers and one byte of a 1 MB body, then nothing: enough to have held the host's whole
    // instance pool (1,000) before instances waited for bodies.
    let attack_started = Instant::now();
    let mut attackers: Vec<TcpStream> = (0..1050)
        .map(|i| {
            let mut s = connect_from(&format!("127.0.0.{}", 2 + i % 3), host.listen);
            s.write_all(
                b"POST /target/body HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\nx",
            )
            .unwrap();
            s
        })
        .collect();
    let (loaded, failed) = steady_load(&victim, 4, 400);
    let success = loaded.len() as f64 / (loaded.len() + failed) as f64;
    assert!(success >= 0.99, "{failed} of 400 victim requests failed");
    // Twice the quiet p99, or 25 ms more on a machine where a quiet p99 is a few ms.
    let (quiet_p99, loaded_p99) = (p99(&quiet), p99(&loaded));
    assert!(
        loaded_p99 <= (2.0 * quiet_p99).max(quiet_p99 + 25.0),
        "victim p99 {loaded_p99:.1} ms under attack, {quiet_p99:.1} ms quiet"
    );
    // The target itself still serves a client that sends its body.
    assert_eq!(host.post("/target/body", "whole").0, 200);

    // Every trickling request is answered 408 once it falls behind the minimum rate (5 s for
    // its first bytes) and its connection closed after a short drain.
    for s in &mut attackers {
        let (answer, _) = read_until_closed(s, Duration::from_secs(30));
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("slower than"), "{answer}");
    }
    let all_closed = attack_started.elapsed();
    assert!(
        all_closed < Duration::from_secs(20),
        "the last stalled connection closed after {all_closed:?}"
    );
}

#[test]
fn one_address_cannot_take_every_connection() {
    let host = Host::start_with(&["--max-connections-per-client", "4"]);
    host.deploy(guests::HTTP_020, "hello", &[]);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from("127.0.0.3", host.listen))
        .collect();
    // The fifth from the same address is told why and closed; another address is served.
    let mut fifth = connect_from("127.0.0.3", host.listen);
    let (answer, _) = read_until_closed(&mut fifth, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert_eq!(host.get("/hello/").0, 200);
    drop(held);
    crate::support::eventually("the address may connect again", || {
        let mut s = connect_from("127.0.0.3", host.listen);
        s.write_all(b"GET /hello/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        read_until_closed(&mut s, Duration::from_secs(10))
            .0
            .starts_with("HTTP/1.1 200")
    });
}

#[test]
fn one_service_cannot_take_more_than_its_share_of_instances() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "slow", &["--max-instances", "2"]);
    host.deploy(guests::HTTP_020, "other", &[]);
    let refused = host.cli_err(&[
        "deploy",
        guests::MISBEHAVE,
        "--name",
        "greedy",
        "--max-instances",
        "5000",
    ]);
    assert!(
        refused.contains("--max-instances must be between 1 and 1000"),
        "{refused}"
    );
    // Two requests take both of its slots for 4 s.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let url = host.url("/slow/sleep?ms=4000");
            std::thread::spawn(move || http().get(url).send().unwrap().status().as_u16())
        })
        .collect();
    crate::support::eventually("both slots are taken", || {
        let started = Instant::now();
        let r = http().get(host.url("/slow/ok")).send().unwrap();
        r.status().as_u16() == 503 && started.elapsed() >= Duration::from_millis(900)
    });
    // A third waits its second in the queue and is told to come back; the other service and
    // the pool are untouched.
    let r = http().get(host.url("/slow/ok")).send().unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.text().unwrap().contains("--max-instances"));
    assert_eq!(host.get("/other/").0, 200);
    for b in busy {
        assert_eq!(b.join().unwrap(), 200);
    }
    assert_eq!(host.get("/slow/ok"), (200, "fine".into()));
}

#[test]
fn a_body_that_stalls_after_its_beginning_is_cut_off_for_the_guest() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "bad", &[]);
    // 80 KiB at once (past what arrives before the instance is made), then nothing.
    let started = Instant::now();
    let mut s = connect_from("127.0.0.4", host.listen);
    s.write_all(b"POST /bad/body HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n")
        .unwrap();
    s.write_all(&vec![b'x'; 80 << 10]).unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(30));
    // The guest's read fails once the body falls behind 16 KiB/s after its first 5 s: 80 KiB
    // are due by 10 s.
    assert!(answer.contains("body error"), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(25),
        "cut off after {took:?}"
    );
}

/// A process's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    crate::support::proc_status_bytes(pid, "VmRSS")
}

#[test]
fn bodies_stalled_at_a_standby_are_streamed_on_and_cut_off() {
    let hosts = crate::support::cluster_each(&[&["--label", "zone=a"], &["--label", "zone=b"]]);
    hosts[0].deploy(guests::MISBEHAVE, "bad", &["--on", "zone=a"]);
    let standby = &hosts[1];
    crate::support::eventually("the standby forwards to the active host", || {
        standby.get("/bad/ok") == (200, "fine".into())
    });
    let before = rss(standby.pid());
    // 100 connections send 2 MiB of a 9 MiB body at once, then nothing: 200 MiB that a standby
    // holding bodies to forward them would keep in memory.
    let chunk = vec![b'x'; 2 << 20];
    let started = Instant::now();
    let mut peak = 0;
    let mut stalled: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = connect_from(&format!("127.0.0.{}", 5 + i % 3), standby.listen);
            s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(b"POST /bad/body HTTP/1.1\r\nhost: x\r\ncontent-length: 9437184\r\n\r\n")
                .unwrap();
            s.write_all(&chunk).unwrap();
            peak = peak.max(rss(standby.pid()));
            s
        })
        .collect();
    for _ in 0..20 {
        peak = peak.max(rss(standby.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Bound: what each connection may hold — its read buffer (64 KiB), the 64 KiB read before
    // anything else, one frame on its way, the TLS and write buffers towards the active host —
    // is under 640 KiB: 100 connections under 64 MiB, a third of what buffering would take.
    let grown = peak.saturating_sub(before);
    eprintln!(
        "the standby's RSS grew by {} MiB under the attack",
        grown >> 20
    );
    assert!(grown < 64 << 20, "the standby grew by {} MiB", grown >> 20);
    // Each stalled body is cut off once it sends nothing for 10 s, and its connection closed.
    for s in &mut stalled {
        let (answer, _) = read_until_closed(s, Duration::from_secs(60));
        assert!(
            answer.starts_with("HTTP/1.1 408") || answer.contains("body error"),
            "{answer}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the last stalled connection closed after {:?}",
        started.elapsed()
    );
    // Both hosts serve on.
    assert_eq!(standby.get("/bad/ok"), (200, "fine".into()));
    assert_eq!(hosts[0].get("/bad/ok"), (200, "fine".into()));
}

#[test]
fn a_guest_hoarding_host_resources_is_stopped_at_its_cap() {
    let host = Host::start();
    host.deploy(guests::MISBEHAVE, "hoarder", &[]);
    host.deploy(guests::HTTP_020, "other", &[]);
    assert_eq!(
        host.get("/hoarder/handles?n=100"),
        (200, "holding 100".into())
    );
    // 50,000 keyvalue handles at once: past the 10,000 host-side resources a request may hold.
    let (status, body) = host.get("/hoarder/handles?n=50000");
    assert!(
        status == 500 || body.starts_with("refused after"),
        "{status} {body}"
    );
    assert!(!body.contains("holding 50000"), "{body}");
    // Only that request failed: the service and its neighbour serve on.
    assert_eq!(
        host.get("/hoarder/handles?n=100"),
        (200, "holding 100".into())
    );
    assert_eq!(host.get("/other/").0, 200);
}
