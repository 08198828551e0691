//! Exercises every interface the host links except keyvalue; also exports `wasi:cli/run`
//! (it is a binary), as components built for `wasmtime serve` often do.

use test_support::{param, path_and_query, read_body, respond};
use wasi::http::types::{IncomingRequest, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
        inline: "package test:basics; world basics { import wasi:config/store@0.2.0-rc.1; }",
        path: "../../../modules/wit/config",
        generate_all,
    });
}
use bindings::wasi::config::store as config;

struct Handler;

/// Calls `to` (`SCHEME://AUTHORITY/PATH`, no percent-encoding) and says what came back: the status
/// and body, or the error the host gave.
fn outbound(to: &str) -> String {
    use wasi::http::types::{OutgoingRequest, Scheme};
    let (scheme, rest) = to.split_once("://").unwrap_or(("https", to));
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(wasi::http::types::Fields::new());
    let _ = req.set_scheme(Some(&if scheme == "http" {
        Scheme::Http
    } else {
        Scheme::Https
    }));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some(path));
    let response = match wasi::http::outgoing_handler::handle(req, None) {
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => response,
                Some(Ok(Err(e))) => return format!("outbound refused: {e:?}"),
                other => return format!("outbound odd: {other:?}"),
            }
        }
        Err(e) => return format!("outbound refused: {e:?}"),
    };
    let status = response.status();
    let mut body = Vec::new();
    if let Ok(incoming) = response.consume()
        && let Ok(stream) = incoming.stream()
    {
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend(chunk),
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(e) => return format!("outbound body failed after {} bytes: {e:?}", body.len()),
            }
        }
    }
    format!("outbound {status}: {}", String::from_utf8_lossy(&body))
}

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (path, params) = path_and_query(&request);
        let text = match path.as_str() {
            "/echo" => {
                let prefix = request
                    .headers()
                    .get("x-forwarded-prefix")
                    .first()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let body = read_body(&request).unwrap_or_else(|e| e.into_bytes());
                format!(
                    "method={:?} path={} prefix={prefix} body={}",
                    request.method(),
                    request.path_with_query().unwrap_or_default(),
                    String::from_utf8_lossy(&body)
                )
            }
            "/config" => match config::get(param(&params, "key").unwrap_or("")) {
                Ok(Some(v)) => v,
                Ok(None) => "<unset>".to_string(),
                Err(e) => format!("error: {e:?}"),
            },
            "/config-all" => {
                let mut all = config::get_all().unwrap_or_default();
                all.sort();
                all.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            "/env" => std::env::var(param(&params, "name").unwrap_or(""))
                .unwrap_or_else(|_| "<unset>".into()),
            "/log" => {
                println!("to stdout: {}", param(&params, "msg").unwrap_or(""));
                eprintln!("to stderr: {}", param(&params, "msg").unwrap_or(""));
                "logged".to_string()
            }
            "/outbound" => outbound(param(&params, "to").unwrap_or("https://example.com/")),
            "/file" => match std::fs::read("/etc/passwd") {
                Ok(_) => "file readable".to_string(),
                Err(e) => format!("file refused: {e}"),
            },
            "/socket" => match std::net::TcpStream::connect("127.0.0.1:1") {
                Ok(_) => "socket opened".to_string(),
                Err(e) => format!("socket refused: {e}"),
            },
            "/clock-random" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let random = wasi::random::random::get_random_u64();
                let other = wasi::random::random::get_random_u64();
                format!("time={now} random_differs={}", random != other)
            }
            _ => {
                respond(out, 404, format!("no route {path}").as_bytes());
                return;
            }
        };
        respond(out, 200, text.as_bytes());
    }
}

wasi::http::proxy::export!(Handler);

fn main() {
    println!("http-basics also runs as a command");
}
