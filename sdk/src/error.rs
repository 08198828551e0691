//! Errors that become proper HTTP answers (RFC 9457 problem+json) instead of traps; `http`
//! turns them into responses.

use serde::Serialize;

/// A failed request: status, a short title, and a detail for the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Error {
    /// HTTP status.
    pub status: u16,
    /// Short, stable summary ("Not Found").
    pub title: String,
    /// What exactly went wrong and, where possible, how to fix it.
    pub detail: String,
    /// Per-field problems of a validation failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Headers the answer carries (e.g. `WWW-Authenticate` on a 401).
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
}

/// One invalid field of a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, e.g. `applicant.name`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Error {
    /// An error with any status.
    pub fn new(status: u16, title: &str, detail: impl Into<String>) -> Error {
        Error {
            status,
            title: title.to_string(),
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The same error, answered with a header added.
    pub fn with_header(mut self, name: &str, value: &str) -> Error {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Error {
        Error::new(400, "Bad Request", detail)
    }

    /// 404: no such thing.
    pub fn not_found(detail: impl Into<String>) -> Error {
        Error::new(404, "Not Found", detail)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Error {
        Error::new(409, "Conflict", detail)
    }

    /// 422 with the fields that failed validation.
    pub fn invalid(errors: Vec<FieldError>) -> Error {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Error {
            errors,
            ..Error::new(422, "Unprocessable Content", detail)
        }
    }

    /// 500: the service itself failed.
    pub fn internal(detail: impl Into<String>) -> Error {
        Error::new(500, "Internal Server Error", detail)
    }

    /// 503: a dependency (the store) failed; retrying may help.
    pub fn unavailable(detail: impl Into<String>) -> Error {
        Error::new(503, "Service Unavailable", detail)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for Error {}

/// Collects validation problems, then fails with all of them at once.
#[derive(Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// An empty validator.
    pub fn new() -> Validator {
        Validator::default()
    }

    /// Records a problem with `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.errors.push(FieldError {
                field: field.to_string(),
                message: message.to_string(),
            });
        }
        self
    }

    /// Requires `value` to have between 1 and `max` characters after trimming.
    pub fn text(&mut self, value: &str, field: &str, max: usize) -> &mut Self {
        let len = value.trim().chars().count();
        self.check(len > 0, field, "is required");
        self.check(
            len <= max,
            field,
            &format!("must be at most {max} characters"),
        )
    }

    /// `Ok` if nothing was recorded, else a 422 listing every problem.
    pub fn finish(&mut self) -> Result<(), Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(std::mem::take(&mut self.errors)))
        }
    }
}
