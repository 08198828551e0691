//! A victim service's requests/s and latency with and without an attack on its neighbour, in
//! one run: 1,050 connections (from three loopback addresses, each under the per-address cap)
//! send a POST's headers and one byte of a 1 MB body to another service on the same host, and
//! reconnect when they are cut off (every 5 s). wrk loads the victim (examples/hello) for
//! `HOSTILE_SECONDS` (default 8) per run, quiet and attacked alternating, `HOSTILE_ROUNDS`
//! (default 3) each, at `HOSTILE_CONNECTIONS` (default 1,64). Run:
//! `cargo bench -p doppel --bench hostile`.

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::wrk;
use support::Host;

fn trickle(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    let local: SocketAddr = format!("{from}:0").parse().ok()?;
    socket.bind(&local.into()).ok()?;
    socket.connect(&to.into()).ok()?;
    let mut stream: TcpStream = socket.into();
    stream
        .write_all(b"POST /target/body HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\nx")
        .ok()?;
    Some(stream)
}

/// Keeps `n` trickling connections open until `stop`: each one cut off is replaced.
fn attack(to: SocketAddr, n: usize, stop: Arc<AtomicBool>, opened: Arc<AtomicU64>) {
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        held.retain(|s| {
            let mut byte = [0u8; 1];
            s.set_nonblocking(true).ok();
            // A closed or answered connection is replaced.
            matches!(s.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        while held.len() < n {
            if let Some(s) = trickle(&format!("127.0.0.{}", 2 + held.len() % 3), to) {
                held.push(s);
                opened.fetch_add(1, Ordering::Relaxed);
            } else {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() {
    let seconds = common::env_number("HOSTILE_SECONDS", 8) as u32;
    let rounds = common::env_number("HOSTILE_ROUNDS", 3);
    let connections = common::env_list("HOSTILE_CONNECTIONS", "1,64");
    let host = Host::start();
    host.deploy(doppel_guests::HELLO, "hello", &[]);
    host.deploy(doppel_guests::MISBEHAVE, "target", &[]);
    let url = host.url("/hello/");
    println!(
        "the victim (examples/hello) quiet and while 1,050 trickling connections attack its neighbour:"
    );
    for &c in &connections {
        let (mut quiet, mut attacked) = (Vec::new(), Vec::new());
        let opened = Arc::new(AtomicU64::new(0));
        for _ in 0..rounds {
            quiet.push(wrk(&url, c, seconds, "GET"));
            let stop = Arc::new(AtomicBool::new(false));
            let attacker = {
                let (stop, opened, to) = (stop.clone(), opened.clone(), host.listen);
                std::thread::spawn(move || attack(to, 1050, stop, opened))
            };
            std::thread::sleep(Duration::from_secs(1));
            attacked.push(wrk(&url, c, seconds, "GET"));
            stop.store(true, Ordering::Relaxed);
            attacker.join().unwrap();
        }
        println!("  {c} connection(s), median of {rounds} rounds of {seconds} s:");
        let q = common::summary("quiet", &quiet);
        let a = common::summary("attacked", &attacked);
        println!(
            "    attacked/quiet: {:.2}× requests/s, p99 {:.2}×; {} trickling connections opened",
            a.rps / q.rps,
            a.p99_ms / q.p99_ms.max(0.001),
            opened.load(Ordering::Relaxed)
        );
    }
}
