//! A handler built against wasi:http 0.2.0 (the first release): must run on a host built for 0.2.x.
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Handler;

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("body");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("stream");
        stream
            .blocking_write_and_flush(b"hello from wasi 0.2.0\n")
            .expect("write");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(Handler);
