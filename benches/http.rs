//! Hello-world requests/s and latency: doppel against `wasmtime serve` (same wasmtime version,
//! same component: examples/hello) and against a plain native hyper server answering the same
//! text (the cost of the sandbox), at 1 and 64 connections, alternating in one run.
//! Needs `benches/install-peers.sh` (wasmtime-cli and wrk). Run: `cargo bench -p doppel --bench http`.

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::wrk;
use support::Host;

const ROUNDS: usize = 3;
const SECONDS: u32 = 8;

fn wasmtime_serve(port: u16) -> std::process::Child {
    let wasmtime = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benches/.tools/bin/wasmtime"
    );
    Command::new(wasmtime)
        .args([
            "serve",
            "-S",
            "cli",
            "-S",
            "config",
            "-S",
            "config-var=greeting=Moin",
            "--addr",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg(doppel_guests::HELLO)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("benches/.tools/bin/wasmtime is missing: run benches/install-peers.sh")
}

/// The native peer: hyper on tokio with as many workers as doppel's host (one per core),
/// answering every request with examples/hello's text. Runs as a child process of this bench
/// (`http native-hello PORT`), so that it is measured like the others, from outside.
fn native_hello(port: u16) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    let response = hyper::Response::builder()
                        .header("content-type", "text/plain; charset=utf-8")
                        .body(Full::new(Bytes::from_static(b"Moin, world!\n")))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "native-hello") {
        native_hello(args[at + 1].parse().unwrap());
        return;
    }
    let native_port = common::free_port();
    let mut native = Command::new(std::env::current_exe().unwrap())
        .args(["native-hello", &native_port.to_string()])
        .spawn()
        .unwrap();
    let native_url = format!("http://127.0.0.1:{native_port}/");
    common::first_answer(&native_url, Duration::from_secs(30))
        .expect("the native server did not answer");
    let mut host = Host::start();
    host.deploy(doppel_guests::HELLO, "hello", &[]);
    let ours_url = format!("http://{}/hello/", host.listen);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut theirs = wasmtime_serve(port);
    let theirs_url = format!("http://127.0.0.1:{port}/");
    common::first_answer(&theirs_url, Duration::from_secs(60))
        .expect("wasmtime serve did not answer");
    println!("hello world (examples/hello), median of {ROUNDS} alternating {SECONDS}s runs each:");
    for connections in [1u32, 64] {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            a.push(wrk(&ours_url, connections, SECONDS, "GET"));
            b.push(wrk(&theirs_url, connections, SECONDS, "GET"));
            c.push(wrk(&native_url, connections, SECONDS, "GET"));
        }
        println!("  {connections} connection(s):");
        let ours = common::summary("doppel", &a);
        let peer = common::summary("wasmtime serve", &b);
        let plain = common::summary("native hyper", &c);
        println!(
            "    ratio doppel/wasmtime: {:.2}× requests/s (goal ≥ 1.2×), p99 {:.2}× (goal ≤ 1)",
            ours.rps / peer.rps,
            ours.p99_ms / peer.p99_ms
        );
        println!(
            "    ratio doppel/native hyper: {:.2}× requests/s (the sandbox's cost; aim ≥ 0.5×), p99 {:.2}×",
            ours.rps / plain.rps,
            ours.p99_ms / plain.p99_ms
        );
    }
    let _ = native.kill();
    let _ = native.wait();
    let _ = theirs.kill();
    let _ = theirs.wait();
    host.stop();
}
