//! Residents' registration: register a person at an address, record moves, look people up, and
//! issue registration certificates numbered without gaps or duplicates.
//!
//! Who may do what (callers are verified bearer tokens, `doppel_sdk::auth`): only a
//! `registry-officer` registers, lists and records moves. A resident — a caller whose token's
//! `person_id` claim (`AUTH_PERSON_CLAIM` names another) is the record's id — reads their own
//! record, requests their own certificate and reads who accessed their data. Anybody may
//! *verify* a certificate by its number and the verification code printed on it, and learns
//! only whether it is genuine and for whom it was issued. Every read and change of a person's
//! record is written to the access log (bucket `access-log`), which a `data-protection-officer`
//! reads for any person.

use doppel_sdk::{
    Bucket, Caller, Error, Json, Page, Request, Response, Router, Validator, config, random, time,
};
use serde::{Deserialize, Serialize};

/// A postal address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Street and house number.
    pub street: String,
    /// Postal code.
    pub postal_code: String,
    /// Town.
    pub city: String,
}

/// A move from one address to another.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Move {
    /// The old address.
    pub from: Address,
    /// The new address.
    pub to: Address,
    /// When it was recorded.
    pub at: String,
}

/// A registered resident.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Person {
    /// `R-000001`…
    pub id: String,
    /// Full name.
    pub name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// Where the person lives now.
    pub address: Address,
    /// When first registered.
    pub registered_at: String,
    /// Every move, oldest first.
    pub moves: Vec<Move>,
}

/// What a registration request carries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    /// Full name.
    pub name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// Where the person lives.
    pub address: Address,
}

/// A registration certificate (Meldebescheinigung).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Certificate {
    /// Issue number: 1, 2, 3… with no gaps and no repeats.
    pub number: u64,
    /// Whom it certifies.
    pub person_id: String,
    /// The person's name at issue time.
    pub name: String,
    /// Birth date.
    pub birth_date: String,
    /// The address certified.
    pub address: Address,
    /// When it was issued.
    pub issued_at: String,
    /// Printed on the certificate: with the number, anybody can check it is genuine.
    #[serde(default)]
    pub verification_code: String,
}

impl Certificate {
    fn text(&self) -> String {
        format!(
            "REGISTRATION CERTIFICATE No. {:06}\n\n{} (born {})\nis registered at\n  {}\n  {} {}\n\nIssued {} (person {})\nVerification code {}\n",
            self.number,
            self.name,
            self.birth_date,
            self.address.street,
            self.address.postal_code,
            self.address.city,
            self.issued_at,
            self.person_id,
            self.verification_code
        )
    }
}

/// The role that registers, lists and records moves.
pub const OFFICER: &str = "registry-officer";
/// The role that reads the access log of anybody's record.
pub const DATA_PROTECTION: &str = "data-protection-officer";

/// One access to a person's record, as the access log keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Access {
    /// When.
    pub at: String,
    /// Who: the token's subject (`anonymous` for a certificate verification).
    pub who: String,
    /// Their roles then.
    pub roles: Vec<String>,
    /// `register`, `read`, `list`, `move`, `certificate`, `certificate-read`, `verify`.
    pub action: String,
    /// Whose record.
    pub person_id: String,
}

/// Records that `who` did `action` to the records of `people` (one entry each).
fn log_access(who: Option<&Caller>, action: &str, people: &[&str]) -> Result<(), Error> {
    if people.is_empty() {
        return Ok(());
    }
    let log = Bucket::open("access-log")?;
    let last = log.increment("next", people.len() as u64)?;
    let first = last + 1 - people.len() as u64;
    let at = time::now();
    for (seq, person_id) in (first..).zip(people) {
        let access = Access {
            at: at.clone(),
            who: who.map_or("anonymous".into(), |c| c.subject.clone()),
            roles: who.map(|c| c.roles.clone()).unwrap_or_default(),
            action: action.to_string(),
            person_id: person_id.to_string(),
        };
        log.put(&format!("person/{person_id}/{seq:012}"), &access)?;
    }
    Ok(())
}

/// Whether `caller` is the resident `person_id` (their token's person claim says so).
fn is_resident(caller: &Caller, person_id: &str) -> Result<bool, Error> {
    let claim = config::get_or("AUTH_PERSON_CLAIM", "person_id")?;
    Ok(caller.claim_str(&claim) == Some(person_id))
}

/// An officer, or the resident themselves (a 403 for anybody else, whether or not the record
/// exists).
fn officer_or_resident(caller: &Caller, person_id: &str) -> Result<(), Error> {
    if caller.has_role(OFFICER) || is_resident(caller, person_id)? {
        Ok(())
    } else {
        Err(Error::new(
            403,
            "Forbidden",
            "only a registry officer or the resident may do this",
        ))
    }
}

fn people() -> Result<Bucket, Error> {
    Bucket::open("people")
}

fn certificates() -> Result<Bucket, Error> {
    Bucket::open("certificates")
}

fn person_key(id: &str) -> String {
    format!("person/{id}")
}

fn check_address(v: &mut Validator, a: &Address, field: &str) {
    v.text(&a.street, &format!("{field}.street"), 200)
        .check(
            a.postal_code.len() == 5 && a.postal_code.bytes().all(|b| b.is_ascii_digit()),
            &format!("{field}.postal_code"),
            "must be five digits",
        )
        .text(&a.city, &format!("{field}.city"), 100);
}

fn trimmed(a: Address) -> Address {
    Address {
        street: a.street.trim().to_string(),
        postal_code: a.postal_code,
        city: a.city.trim().to_string(),
    }
}

fn register(req: Request) -> Result<(u16, Json<Person>), Error> {
    let new: NewPerson = req.json()?;
    let mut v = Validator::new();
    v.text(&new.name, "name", 200).check(
        time::is_date(&new.birth_date) && new.birth_date.as_str() <= time::today().as_str(),
        "birth_date",
        "must be a past date written YYYY-MM-DD",
    );
    check_address(&mut v, &new.address, "address");
    v.finish()?;
    let people = people()?;
    let id = format!("R-{:06}", people.increment("next-number", 1)?);
    let person = Person {
        id: id.clone(),
        name: new.name.trim().to_string(),
        birth_date: new.birth_date,
        address: trimmed(new.address),
        registered_at: time::now(),
        moves: Vec::new(),
    };
    people.put(&person_key(&id), &person)?;
    log_access(Some(&req.caller()?), "register", &[&id])?;
    Ok((201, Json(person)))
}

fn load(id: &str) -> Result<Person, Error> {
    people()?
        .get(&person_key(id))?
        .ok_or_else(|| Error::not_found(format!("no person {id} is registered")))
}

fn fetch(req: Request) -> Result<Json<Person>, Error> {
    let caller = req.caller()?;
    let id = req.param("id")?;
    officer_or_resident(&caller, id)?;
    let person = load(id)?;
    log_access(Some(&caller), "read", &[id])?;
    Ok(Json(person))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

fn list(req: Request) -> Result<Json<Page<Person>>, Error> {
    let q: ListQuery = req.query()?;
    if q.limit == 0 || q.limit > 500 {
        return Err(Error::bad_request("limit must be between 1 and 500"));
    }
    let after = q.after.as_deref().map(person_key);
    let mut page: Page<Person> = people()?.page("person/", after.as_deref(), q.limit)?;
    page.next = page
        .next
        .map(|k| k.trim_start_matches("person/").to_string());
    let listed: Vec<&str> = page.items.iter().map(|p| p.id.as_str()).collect();
    log_access(Some(&req.caller()?), "list", &listed)?;
    Ok(Json(page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAddress {
    address: Address,
}

fn record_move(req: Request) -> Result<Json<Person>, Error> {
    let id = req.param("id")?.to_string();
    let body: NewAddress = req.json()?;
    let mut v = Validator::new();
    check_address(&mut v, &body.address, "address");
    v.finish()?;
    let to = trimmed(body.address);
    let person = people()?.update(&person_key(&id), |current: Option<Person>| {
        let mut person =
            current.ok_or_else(|| Error::not_found(format!("no person {id} is registered")))?;
        if person.address == to {
            return Err(Error::conflict(format!(
                "{id} already lives at that address"
            )));
        }
        person.moves.push(Move {
            from: person.address.clone(),
            to: to.clone(),
            at: time::now(),
        });
        person.address = to.clone();
        Ok((person.clone(), person))
    })?;
    log_access(Some(&req.caller()?), "move", &[&id])?;
    println!("{id} moved to {}", person.address.city);
    Ok(Json(person))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateRequest {
    person_id: String,
}

fn wants_text(req: &Request) -> bool {
    req.header("accept")
        .is_some_and(|a| a.contains("text/plain"))
}

fn answer(req: &Request, status: u16, certificate: &Certificate) -> Response {
    if wants_text(req) {
        Response::text(certificate.text()).with_status(status)
    } else {
        Response::json(certificate).with_status(status)
    }
}

fn issue(req: Request) -> Result<Response, Error> {
    let caller = req.caller()?;
    let body: CertificateRequest = req.json()?;
    officer_or_resident(&caller, &body.person_id)?;
    let person = load(&body.person_id)?;
    let certificates = certificates()?;
    // The atomic counter hands out 1, 2, 3…: concurrent issues never share or skip a number.
    let number = certificates.increment("last-number", 1)?;
    let certificate = Certificate {
        number,
        person_id: person.id,
        name: person.name,
        birth_date: person.birth_date,
        address: person.address,
        issued_at: time::now(),
        verification_code: random::code(10),
    };
    certificates.put(&format!("certificate/{number:010}"), &certificate)?;
    log_access(Some(&caller), "certificate", &[&certificate.person_id])?;
    println!("certificate {number} issued for {}", certificate.person_id);
    Ok(answer(&req, 201, &certificate))
}

fn fetch_certificate(req: Request) -> Result<Response, Error> {
    let caller = req.caller()?;
    let number: u64 = req.param_as("number")?;
    let not_found = || Error::not_found(format!("no certificate number {number}"));
    let certificate: Certificate = certificates()?
        .get(&format!("certificate/{number:010}"))?
        .ok_or_else(not_found)?;
    // Someone else's certificate answers like one that does not exist.
    if officer_or_resident(&caller, &certificate.person_id).is_err() {
        return Err(not_found());
    }
    log_access(Some(&caller), "certificate-read", &[&certificate.person_id])?;
    Ok(answer(&req, 200, &certificate))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    code: String,
}

/// What anybody learns by verifying a certificate.
#[derive(Debug, Serialize, Deserialize)]
pub struct Verification {
    /// Whether a certificate with this number and code was issued.
    pub genuine: bool,
    /// For whom (only when genuine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn verify_certificate(req: Request) -> Result<Json<Verification>, Error> {
    let number: u64 = req.param_as("number")?;
    let q: VerifyQuery = req.query()?;
    let found: Option<Certificate> = certificates()?.get(&format!("certificate/{number:010}"))?;
    // An unknown number and a wrong code answer alike.
    let Some(certificate) = found.filter(|c| {
        !c.verification_code.is_empty() && c.verification_code == q.code.trim().to_ascii_uppercase()
    }) else {
        return Ok(Json(Verification {
            genuine: false,
            name: None,
        }));
    };
    log_access(None, "verify", &[&certificate.person_id])?;
    Ok(Json(Verification {
        genuine: true,
        name: Some(certificate.name),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    after: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

/// Who accessed a person's record: a data protection officer's, or the resident's own.
fn access_log(req: Request) -> Result<Json<Page<Access>>, Error> {
    let caller = req.caller()?;
    let id = req.param("id")?;
    if !caller.has_role(DATA_PROTECTION) && !is_resident(&caller, id)? {
        return Err(Error::new(
            403,
            "Forbidden",
            "only a data protection officer or the resident reads the access log",
        ));
    }
    let q: LogQuery = req.query()?;
    if q.limit == 0 || q.limit > 500 {
        return Err(Error::bad_request("limit must be between 1 and 500"));
    }
    let prefix = format!("person/{id}/");
    let after = q.after.map(|seq| format!("{prefix}{seq}"));
    let mut page: Page<Access> =
        Bucket::open("access-log")?.page(&prefix, after.as_deref(), q.limit)?;
    // Cursors are the entries' sequence numbers, not storage keys.
    page.next = page
        .next
        .map(|k| k.rsplit('/').next().unwrap_or_default().to_string());
    Ok(Json(page))
}

/// The routes of this service.
pub fn routes() -> Router {
    Router::new()
        .post("/persons", register)
        .require_role(OFFICER)
        .get("/persons", list)
        .require_role(OFFICER)
        .get("/persons/{id}", fetch)
        .require_caller()
        .post("/persons/{id}/moves", record_move)
        .require_role(OFFICER)
        .get("/persons/{id}/access-log", access_log)
        .require_caller()
        .post("/certificates", issue)
        .require_caller()
        .get("/certificates/{number}", fetch_certificate)
        .require_caller()
        .get("/certificates/{number}/verification", verify_certificate)
}

doppel_sdk::service!(routes);
