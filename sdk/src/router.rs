//! Routes: a method and a path pattern with `{param}` segments, each to a handler.

use crate::Error;
use crate::http::{IntoResponse, Request, Response};

type Handler = Box<dyn Fn(Request) -> Response>;

enum Segment {
    Literal(String),
    Param(String),
}

/// Finds and verifies a request's caller.
///
/// Held by the guard rather than called directly, so that a service without guards links no
/// token verification at all (the linker drops what nothing reaches): its component stays a
/// few hundred KiB instead of carrying RSA and elliptic curves.
type Verify = fn(&Request) -> Result<crate::Caller, Error>;

/// Who may call a route.
enum Guard {
    /// Anybody.
    Open,
    /// Any caller with a valid token.
    Caller(Verify),
    /// A caller with one of these roles.
    Roles(Vec<String>, Verify),
}

struct Route {
    method: String,
    segments: Vec<Segment>,
    handler: Handler,
    guard: Guard,
}

/// Maps requests to handlers.
///
/// ```
/// use doppel_sdk::{Request, Router, Error};
/// fn hello(req: Request) -> Result<String, Error> {
///     Ok(format!("hello, {}", req.param("name")?))
/// }
/// let router = Router::new().get("/hello/{name}", hello);
/// let response = router.handle(Request::new("GET", "/hello/world"));
/// assert_eq!(response.text_body(), "hello, world");
/// assert_eq!(router.handle(Request::new("POST", "/hello/world")).status, 405);
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl Router {
    /// A router without routes (every request is a 404).
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a route for `method` and `pattern` (e.g. `/permits/{id}`).
    pub fn route<R: IntoResponse>(
        mut self,
        method: &str,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Router {
        let segments = split(pattern)
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name.to_string()),
                    None => Segment::Literal(s.to_string()),
                },
            )
            .collect();
        self.routes.push(Route {
            method: method.to_ascii_uppercase(),
            segments,
            handler: Box::new(move |req| handler(req).into_response()),
            guard: Guard::Open,
        });
        self
    }

    /// The route added last answers only callers with a valid bearer token (a 401 otherwise);
    /// the handler finds the caller with [`Request::caller`].
    pub fn require_caller(mut self) -> Router {
        if let Some(route) = self.routes.last_mut()
            && matches!(route.guard, Guard::Open)
        {
            route.guard = Guard::Caller(Request::caller);
        }
        self
    }

    /// The route added last answers only callers whose token grants `role` (or another role
    /// given to it the same way): a 401 without a valid token, a 403 without the role.
    ///
    /// ```
    /// use doppel_sdk::{Caller, Request, Router};
    /// let router = Router::new()
    ///     .get("/cases", |_: Request| "every case")
    ///     .require_role("case-worker");
    /// let citizen = Request::new("GET", "/cases").with_caller(Caller::new("ada", &[]));
    /// assert_eq!(router.handle(citizen).status, 403);
    /// let worker = Request::new("GET", "/cases").with_caller(Caller::new("bo", &["case-worker"]));
    /// assert_eq!(router.handle(worker).status, 200);
    /// assert_eq!(router.handle(Request::new("GET", "/cases")).status, 401);
    /// ```
    pub fn require_role(mut self, role: &str) -> Router {
        if let Some(route) = self.routes.last_mut() {
            match &mut route.guard {
                Guard::Roles(roles, _) => roles.push(role.to_string()),
                other => *other = Guard::Roles(vec![role.to_string()], Request::caller),
            }
        }
        self
    }

    /// Adds a `GET` route.
    pub fn get<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Router {
        self.route("GET", pattern, handler)
    }

    /// Adds a `POST` route.
    pub fn post<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Router {
        self.route("POST", pattern, handler)
    }

    /// Adds a `PUT` route.
    pub fn put<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Router {
        self.route("PUT", pattern, handler)
    }

    /// Adds a `DELETE` route.
    pub fn delete<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Router {
        self.route("DELETE", pattern, handler)
    }

    /// Runs the handler of the first matching route; 404 or 405 (with `allow`) otherwise.
    pub fn handle(&self, mut request: Request) -> Response {
        let parts: Vec<&str> = split(&request.path).collect();
        let mut allowed = Vec::new();
        for route in &self.routes {
            let Some(params) = matches(&route.segments, &parts) else {
                continue;
            };
            if route.method != request.method {
                allowed.push(route.method.clone());
                continue;
            }
            request.params = params;
            let (verify, roles) = match &route.guard {
                Guard::Open => return (route.handler)(request),
                Guard::Caller(verify) => (verify, None),
                Guard::Roles(roles, verify) => (verify, Some(roles)),
            };
            let caller = match verify(&request) {
                Ok(caller) => caller,
                Err(e) => return e.into_response(),
            };
            if let Some(roles) = roles
                && !roles.iter().any(|r| caller.has_role(r))
            {
                return crate::auth::lacks_role(roles).into_response();
            }
            request.caller = Some(caller);
            return (route.handler)(request);
        }
        if allowed.is_empty() {
            Error::not_found(format!("no route for {} {}", request.method, request.path))
                .into_response()
        } else {
            allowed.dedup();
            Error::new(
                405,
                "Method Not Allowed",
                format!(
                    "{} is not allowed here; use {}",
                    request.method,
                    allowed.join(", ")
                ),
            )
            .into_response()
            .with_header("allow", &allowed.join(", "))
        }
    }
}

fn matches(
    segments: &[Segment],
    parts: &[&str],
) -> Option<std::collections::BTreeMap<String, String>> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut params = std::collections::BTreeMap::new();
    for (segment, part) in segments.iter().zip(parts) {
        match segment {
            Segment::Literal(l) if l == part => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => {
                params.insert(name.clone(), percent_decode(part));
            }
        }
    }
    Some(params)
}

/// Decodes `%XX` escapes of a path segment.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_methods_and_misses() {
        let router = Router::new()
            .get("/a/{id}", |r: Request| r.param("id").map(str::to_string))
            .post("/a/{id}", |_: Request| (201, "made"))
            .get("/", |_: Request| "root");
        assert_eq!(
            router.handle(Request::new("GET", "/a/x%20y")).text_body(),
            "x y"
        );
        assert_eq!(router.handle(Request::new("POST", "/a/1")).status, 201);
        assert_eq!(router.handle(Request::new("GET", "/")).text_body(), "root");
        let r = router.handle(Request::new("DELETE", "/a/1"));
        assert_eq!(r.status, 405);
        assert!(
            r.headers
                .contains(&("allow".to_string(), "GET, POST".to_string()))
        );
        let r = router.handle(Request::new("GET", "/b"));
        assert_eq!(r.status, 404);
        assert!(r.text_body().contains("\"status\":404"));
    }
}
