//! Requests and responses as plain values.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::auth::Caller;

/// An HTTP request as a handler sees it: the path is the part after the service's prefix.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
    pub(crate) params: BTreeMap<String, String>,
    /// The caller, once verified (by a route's guard or an earlier [`Request::caller`]).
    pub(crate) caller: Option<Caller>,
}

impl Request {
    /// A request built by hand, for unit tests of handlers.
    pub fn new(method: &str, path_and_query: &str) -> Request {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Request {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            query: query.to_string(),
            ..Request::default()
        }
    }

    /// The same request with `body`.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// The same request with a header added.
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// The same request with `caller` taken as verified, for unit tests of handlers.
    pub fn with_caller(mut self, caller: Caller) -> Request {
        self.caller = Some(caller);
        self
    }

    /// Who is calling: the bearer token verified against the identity provider the service
    /// was deployed with ([`crate::auth`]); a 401 problem when there is no valid token.
    pub fn caller(&self) -> Result<Caller, Error> {
        if let Some(caller) = &self.caller {
            return Ok(caller.clone());
        }
        let token = self
            .header("authorization")
            .and_then(crate::auth::bearer)
            .ok_or_else(crate::auth::no_token)?;
        crate::auth::Verifier::from_config()?.verify_remembered(token)
    }

    /// `GET`, `POST`, …
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, without the service prefix and without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string (without `?`).
    pub fn query_string(&self) -> &str {
        &self.query
    }

    /// The query string decoded into `T` (missing fields use `#[serde(default)]`).
    pub fn query<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_urlencoded::from_str(&self.query)
            .map_err(|e| Error::bad_request(format!("invalid query string: {e}")))
    }

    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body decoded as JSON into `T`; a malformed body is a 400 naming the problem.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        if self.body.is_empty() {
            return Err(Error::bad_request("the request needs a JSON body"));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }

    /// The path parameter `name` (from a `{name}` segment of the route).
    pub fn param(&self, name: &str) -> Result<&str, Error> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::internal(format!("the route has no parameter {name:?}")))
    }

    /// The path parameter `name` parsed into `T`; unparsable is a 400.
    pub fn param_as<T: std::str::FromStr>(&self, name: &str) -> Result<T, Error> {
        let raw = self.param(name)?;
        raw.parse()
            .map_err(|_| Error::bad_request(format!("{name} {raw:?} is not valid here")))
    }
}

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `200` with a plain-text body.
    pub fn text(body: impl Into<String>) -> Response {
        Response::new(200)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into().into_bytes())
    }

    /// `200` with `value` as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(200)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(e) => Error::internal(format!("cannot encode the response: {e}")).into_response(),
        }
    }

    /// The same response with another status.
    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// The same response with a header added.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The same response with `body`.
    pub fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    /// The body as text (for tests).
    pub fn text_body(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `value` answered as JSON with status 200 (or another, with [`Json::with_status`]).
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The same JSON answer with `status` (e.g. 201 after creating something).
    pub fn with_status(self, status: u16) -> (u16, Json<T>) {
        (status, self)
    }
}

/// Anything a handler may return.
pub trait IntoResponse {
    /// Turns the value into a response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for () {
    fn into_response(self) -> Response {
        Response::new(204)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        Response::json(&self.0)
    }
}

impl<T: IntoResponse> IntoResponse for (u16, T) {
    fn into_response(self) -> Response {
        self.1.into_response().with_status(self.0)
    }
}

/// An error answers as problem+json (RFC 9457) with its status.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Problem<'a> {
            r#type: &'static str,
            #[serde(flatten)]
            error: &'a Error,
        }
        let body = serde_json::to_vec(&Problem {
            r#type: "about:blank",
            error: &self,
        })
        .unwrap_or_default();
        let mut response = Response::new(self.status)
            .with_header("content-type", "application/problem+json")
            .with_body(body);
        response.headers.extend(self.headers);
        response
    }
}

impl<T: IntoResponse> IntoResponse for Result<T, Error> {
    fn into_response(self) -> Response {
        match self {
            Ok(v) => v.into_response(),
            Err(e) => e.into_response(),
        }
    }
}
