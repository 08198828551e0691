//! Why appends travel over a kept, upgraded connection: one small exchange between two
//! processes on loopback, as an HTTP POST per exchange through reqwest and axum (what appends
//! used to be) against one frame each way over an HTTP connection upgraded once (what they are,
//! `src/append_stream.rs`) and over plain TCP. 5,000 lockstep exchanges of 300 bytes per round,
//! three rounds; p50 and p90 per exchange.
//! Run: `cargo bench -p doppel-replication --bench round_trip`.

use std::process::{Command, Stdio};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::serve::ListenerExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const EXCHANGES: usize = 5_000;
const PROTOCOL: &str = "bench-echo";

async fn echo_frames(mut io: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buf = vec![0; 1 << 16];
    loop {
        let mut len = [0; 4];
        if io.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_le_bytes(len) as usize;
        if io.read_exact(&mut buf[..n]).await.is_err() {
            return;
        }
        let mut out = len.to_vec();
        out.extend_from_slice(&buf[..n]);
        if io.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn upgrade(mut request: Request) -> axum::response::Response {
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            echo_frames(hyper_util::rt::TokioIo::new(io)).await;
        }
    });
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// The other process: an HTTP server (echo POST, upgrade) and a plain TCP echo; prints both ports.
async fn serve() {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!(
        "{} {}",
        http.local_addr().unwrap().port(),
        tcp.local_addr().unwrap().port()
    );
    let app = axum::Router::new()
        .route(
            "/echo",
            axum::routing::post(|body: axum::body::Bytes| async move { body }),
        )
        .route("/upgrade", axum::routing::post(upgrade));
    let http = http.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(http, app).await.unwrap() });
    loop {
        let (s, _) = tcp.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        tokio::spawn(echo_frames(s));
    }
}

fn percentiles(mut micros: Vec<f64>) -> (f64, f64) {
    micros.sort_by(f64::total_cmp);
    (micros[micros.len() / 2], micros[micros.len() * 9 / 10])
}

async fn lockstep(io: &mut (impl AsyncRead + AsyncWrite + Unpin), body: &[u8]) -> (f64, f64) {
    let mut buf = vec![0; 1 << 16];
    let mut times = Vec::with_capacity(EXCHANGES);
    for _ in 0..EXCHANGES {
        let start = Instant::now();
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(body);
        io.write_all(&out).await.unwrap();
        let mut len = [0; 4];
        io.read_exact(&mut len).await.unwrap();
        let n = u32::from_le_bytes(len) as usize;
        io.read_exact(&mut buf[..n]).await.unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    percentiles(times)
}

async fn posts(http: &reqwest::Client, url: &str, body: &[u8]) -> (f64, f64) {
    let mut times = Vec::with_capacity(EXCHANGES);
    for _ in 0..EXCHANGES {
        let start = Instant::now();
        let response = http
            .post(url)
            .bearer_auth("secret")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.bytes().await.unwrap().len(), body.len());
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    percentiles(times)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--serve") {
        return serve().await;
    }
    let mut server = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ports = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut ports,
    )
    .unwrap();
    let (http_port, tcp_port) = ports.trim().split_once(' ').unwrap();
    let base = format!("http://127.0.0.1:{http_port}");
    let body = vec![7u8; 300];
    let http = reqwest::Client::new();
    println!("one 300-byte exchange between two processes, {EXCHANGES} per round (µs):");
    for round in 1..=3 {
        let (post50, post90) = posts(&http, &format!("{base}/echo"), &body).await;
        let response = http
            .post(format!("{base}/upgrade"))
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, PROTOCOL)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut upgraded = response.upgrade().await.unwrap();
        let (up50, up90) = lockstep(&mut upgraded, &body).await;
        let mut tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{tcp_port}"))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let (tcp50, tcp90) = lockstep(&mut tcp, &body).await;
        println!(
            "  round {round}: POST each p50 {post50:>4.0} p90 {post90:>4.0}   upgraded p50 {up50:>4.0} p90 {up90:>4.0}   tcp p50 {tcp50:>4.0} p90 {tcp90:>4.0}   upgraded/POST {:.2}",
            up50 / post50
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
