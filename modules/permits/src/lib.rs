//! Building permits: citizens submit applications; case workers move them through
//! submitted → in_review → approved | rejected. The full history is kept and final states are final.
//!
//! Who may do what (callers are verified bearer tokens, `doppel_sdk::auth`): any citizen with a
//! token submits, and sees and lists only the applications they submitted (the owner is the
//! token's subject); a `case-worker` lists every application, sees each one's history and moves
//! it on. Someone else's application answers 404, as one that does not exist.
//!
//! Building plans are attached as PDF documents (`PUT /applications/{id}/attachments/{name}`,
//! `application/pdf`, at most [`MAX_ATTACHMENT`] bytes, checked to be a PDF), kept as objects of
//! the `attachments` container (`wasi:blobstore`) and listed with the application.

use doppel_sdk::blob::Container;
use doppel_sdk::{Bucket, Caller, Error, Json, Page, Request, Response, Router, Validator, time};
use serde::{Deserialize, Serialize};

/// Where a case stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Received, not yet looked at.
    Submitted,
    /// A case worker is on it.
    InReview,
    /// Granted (final).
    Approved,
    /// Refused, with a reason (final).
    Rejected,
}

impl Status {
    /// Whether a case may move from `self` to `to`.
    pub fn may_become(self, to: Status) -> bool {
        matches!(
            (self, to),
            (Status::Submitted, Status::InReview)
                | (Status::InReview, Status::Approved | Status::Rejected)
        )
    }

    fn is_final(self) -> bool {
        matches!(self, Status::Approved | Status::Rejected)
    }
}

/// Kinds of building work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkType {
    /// A new building.
    NewBuilding,
    /// Extending an existing one.
    Extension,
    /// Renovating without changing its footprint.
    Renovation,
    /// Tearing down.
    Demolition,
}

/// The person applying.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applicant {
    /// Full name.
    pub name: String,
    /// Where to send decisions.
    pub email: String,
}

/// What a citizen submits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApplication {
    /// Who applies.
    pub applicant: Applicant,
    /// Cadastral parcel, e.g. `Gemarkung Mitte 12/345`.
    pub parcel: String,
    /// What kind of work.
    pub work_type: WorkType,
    /// What will be built.
    pub description: String,
}

/// One step of a case's history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// The status entered.
    pub status: Status,
    /// When.
    pub at: String,
    /// Why (required for a rejection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A permit application and its history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Application {
    /// `P-000001`…
    pub id: String,
    /// Who submitted it: the subject of their token.
    #[serde(default)]
    pub owner: String,
    /// Who applies.
    pub applicant: Applicant,
    /// The parcel.
    pub parcel: String,
    /// What kind of work.
    pub work_type: WorkType,
    /// What will be built.
    pub description: String,
    /// Current status.
    pub status: Status,
    /// Every status the case has had, oldest first.
    pub history: Vec<Event>,
    /// The documents attached (read from the `attachments` container when the application is
    /// fetched; never stored in the record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A document attached to an application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Its file name, e.g. `site-plan.pdf`.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Its media type (always `application/pdf` for now).
    pub content_type: String,
}

/// The largest attachment accepted, in bytes (under the host's default 10 MiB request body).
pub const MAX_ATTACHMENT: usize = 8 << 20;
const PDF: &str = "application/pdf";

/// A status change requested by a case worker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// The new status.
    pub to: Status,
    /// Why; required when rejecting.
    pub reason: Option<String>,
}

fn bucket() -> Result<Bucket, Error> {
    Bucket::open("applications")
}

fn key(id: &str) -> String {
    format!("application/{id}")
}

/// The role that sees and decides every application.
pub const CASE_WORKER: &str = "case-worker";

/// Whether `caller` may see `application`.
fn may_see(caller: &Caller, application: &Application) -> bool {
    caller.has_role(CASE_WORKER) || application.owner == caller.subject
}

fn valid_id(id: &str) -> bool {
    id.len() == 8 && id.starts_with("P-") && id[2..].bytes().all(|b| b.is_ascii_digit())
}

fn submit(req: Request) -> Result<(u16, Json<Application>), Error> {
    let caller = req.caller()?;
    let new: NewApplication = req.json()?;
    Validator::new()
        .text(&new.applicant.name, "applicant.name", 200)
        .check(
            new.applicant.email.contains('@')
                && !new.applicant.email.contains(' ')
                && new.applicant.email.len() <= 254,
            "applicant.email",
            "must be an e-mail address",
        )
        .text(&new.parcel, "parcel", 100)
        .text(&new.description, "description", 5000)
        .finish()?;
    let applications = bucket()?;
    let number = applications.increment("next-number", 1)?;
    let id = format!("P-{number:06}");
    let application = Application {
        id: id.clone(),
        owner: caller.subject,
        applicant: Applicant {
            name: new.applicant.name.trim().to_string(),
            email: new.applicant.email.trim().to_string(),
        },
        parcel: new.parcel.trim().to_string(),
        work_type: new.work_type,
        description: new.description.trim().to_string(),
        status: Status::Submitted,
        history: vec![Event {
            status: Status::Submitted,
            at: time::now(),
            reason: None,
        }],
        attachments: Vec::new(),
    };
    applications.put(&key(&id), &application)?;
    println!(
        "application {id} submitted for parcel {}",
        application.parcel
    );
    Ok((201, Json(application)))
}

/// The application `id` if `caller` may see it; 400 for a malformed id, 404 otherwise.
fn visible(caller: &Caller, id: &str) -> Result<Application, Error> {
    if !valid_id(id) {
        return Err(Error::bad_request(format!(
            "{id:?} is not an application id (like P-000001)"
        )));
    }
    bucket()?
        .get(&key(id))?
        .filter(|a: &Application| may_see(caller, a))
        .ok_or_else(|| Error::not_found(format!("no application {id}")))
}

fn fetch(req: Request) -> Result<Json<Application>, Error> {
    let caller = req.caller()?;
    let mut application = visible(&caller, req.param("id")?)?;
    application.attachments = attachments_of(&application.id)?;
    Ok(Json(application))
}

fn attachments() -> Result<Container, Error> {
    Container::open("attachments")
}

fn attachments_of(id: &str) -> Result<Vec<Attachment>, Error> {
    let container = attachments()?;
    let prefix = format!("{id}/");
    let mut out = Vec::new();
    for object in container.list(&prefix)? {
        if let Some(info) = container.info(&object)? {
            out.push(Attachment {
                name: object[prefix.len()..].to_string(),
                size: info.size,
                content_type: PDF.into(),
            });
        }
    }
    Ok(out)
}

fn valid_file_name(name: &str) -> bool {
    (5..=100).contains(&name.len())
        && name.ends_with(".pdf")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Attaches a PDF to an application: its owner or a case worker, while no final decision is
/// made. Replaces an attachment of the same name.
fn attach(req: Request) -> Result<(u16, Json<Attachment>), Error> {
    let caller = req.caller()?;
    let application = visible(&caller, req.param("id")?)?;
    let name = req.param("name")?;
    if !valid_file_name(name) {
        return Err(Error::bad_request(format!(
            "{name:?} is not an attachment name: letters, digits, '.', '-' and '_', ending in \
             .pdf, at most 100 characters"
        )));
    }
    if application.status.is_final() {
        return Err(Error::conflict(format!(
            "application {} is {:?}, a final decision; nothing more can be attached",
            application.id, application.status
        )));
    }
    let content_type = req.header("content-type").unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some(PDF) {
        return Err(Error::new(
            415,
            "Unsupported Media Type",
            format!("attachments are {PDF}; this one is {content_type:?}"),
        ));
    }
    let body = req.body();
    if body.len() > MAX_ATTACHMENT {
        return Err(Error::new(
            413,
            "Content Too Large",
            format!(
                "an attachment is at most {MAX_ATTACHMENT} bytes; this one is {}",
                body.len()
            ),
        ));
    }
    // The content must be what the type says: a PDF starts with its signature.
    if !body.starts_with(b"%PDF-") {
        return Err(Error::new(
            415,
            "Unsupported Media Type",
            "the body is not a PDF document (it does not start with %PDF-)",
        ));
    }
    attachments()?.put(&format!("{}/{name}", application.id), body)?;
    println!(
        "application {}: {name} attached ({} bytes)",
        application.id,
        body.len()
    );
    Ok((
        201,
        Json(Attachment {
            name: name.to_string(),
            size: body.len() as u64,
            content_type: PDF.into(),
        }),
    ))
}

/// An attached document, as it was attached.
fn attachment(req: Request) -> Result<Response, Error> {
    let caller = req.caller()?;
    let application = visible(&caller, req.param("id")?)?;
    let name = req.param("name")?;
    let bytes = attachments()?
        .get(&format!("{}/{name}", application.id))?
        .ok_or_else(|| {
            Error::not_found(format!(
                "application {} has no attachment {name:?}",
                application.id
            ))
        })?;
    Ok(Response::new(200)
        .with_header("content-type", PDF)
        .with_body(bytes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<Status>,
    parcel: Option<String>,
    after: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

fn list(req: Request) -> Result<Json<Page<Application>>, Error> {
    let caller = req.caller()?;
    let q: ListQuery = req.query()?;
    if q.limit == 0 || q.limit > 500 {
        return Err(Error::bad_request("limit must be between 1 and 500"));
    }
    let applications = bucket()?;
    let everyone = caller.has_role(CASE_WORKER);
    let filtered = q.status.is_some() || q.parcel.is_some() || !everyone;
    if !filtered {
        let mut page: Page<Application> = applications.page(
            "application/",
            q.after.as_deref().map(key).as_deref(),
            q.limit,
        )?;
        // Page cursors are application ids, not storage keys.
        page.next = page
            .next
            .map(|k| k.trim_start_matches("application/").to_string());
        return Ok(Json(page));
    }
    // Filters read page by page until a page of matches is full.
    let mut items = Vec::new();
    let mut after = q.after.as_deref().map(key);
    loop {
        let page: Page<Application> = applications.page("application/", after.as_deref(), 200)?;
        for a in page.items {
            let keep = q.status.is_none_or(|s| a.status == s)
                && q.parcel.as_deref().is_none_or(|p| a.parcel == p)
                && may_see(&caller, &a);
            after = Some(key(&a.id));
            if keep {
                items.push(a);
                if items.len() == q.limit {
                    let next = items.last().map(|a: &Application| a.id.clone());
                    return Ok(Json(Page { items, next }));
                }
            }
        }
        if page.next.is_none() {
            return Ok(Json(Page { items, next: None }));
        }
    }
}

fn transition(req: Request) -> Result<Json<Application>, Error> {
    let id = req.param("id")?.to_string();
    if !valid_id(&id) {
        return Err(Error::bad_request(format!(
            "{id:?} is not an application id (like P-000001)"
        )));
    }
    let change: Transition = req.json()?;
    let reason = change
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    if change.to == Status::Rejected && reason.is_none() {
        return Err(Error::invalid(vec![doppel_sdk::FieldError {
            field: "reason".into(),
            message: "is required when rejecting".into(),
        }]));
    }
    // A compare-and-swap update: two case workers acting at once cannot both move the case.
    let updated = bucket()?.update(&key(&id), |current: Option<Application>| {
        let mut application =
            current.ok_or_else(|| Error::not_found(format!("no application {id}")))?;
        if application.status.is_final() {
            return Err(Error::conflict(format!(
                "application {id} is {:?}, a final decision; it cannot change",
                application.status
            )));
        }
        if !application.status.may_become(change.to) {
            return Err(Error::conflict(format!(
                "application {id} is {:?}; it cannot become {:?}",
                application.status, change.to
            )));
        }
        application.status = change.to;
        application.history.push(Event {
            status: change.to,
            at: time::now(),
            reason: reason.clone(),
        });
        Ok((application.clone(), application))
    })?;
    println!("application {id} is now {:?}", updated.status);
    Ok(Json(updated))
}

/// The routes of this service.
pub fn routes() -> Router {
    Router::new()
        .post("/applications", submit)
        .require_caller()
        .get("/applications", list)
        .require_caller()
        .get("/applications/{id}", fetch)
        .require_caller()
        .post("/applications/{id}/transitions", transition)
        .require_role(CASE_WORKER)
        .put("/applications/{id}/attachments/{name}", attach)
        .require_caller()
        .get("/applications/{id}/attachments/{name}", attachment)
        .require_caller()
}

doppel_sdk::service!(routes);

#[cfg(test)]
mod tests {
    use super::Status::*;

    #[test]
    fn attachment_names_are_plain_pdf_file_names() {
        assert!(super::valid_file_name("site-plan_v2.pdf"));
        assert!(!super::valid_file_name("../other/plan.pdf"));
        assert!(!super::valid_file_name("plan.exe"));
        assert!(!super::valid_file_name(".pdf"));
        assert!(!super::valid_file_name(&format!("{}.pdf", "a".repeat(100))));
    }

    #[test]
    fn only_forward_transitions_and_final_is_final() {
        assert!(Submitted.may_become(InReview));
        assert!(InReview.may_become(Approved));
        assert!(InReview.may_become(Rejected));
        assert!(!Submitted.may_become(Approved));
        assert!(!Approved.may_become(Rejected));
        assert!(!Rejected.may_become(InReview));
    }
}
