//! Residents' registration: register a person at an address, record moves, look people up, and
//! issue registration certificates numbered without gaps or duplicates.

use doppel_sdk::{Bucket, Error, Json, Page, Request, Response, Router, Validator, time};
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
    /// When issued.
    pub issued_at: String,
}

impl Certificate {
    fn text(&self) -> String {
        format!(
            "REGISTRATION CERTIFICATE No. {:06}\n\n{} (born {})\nis registered at\n  {}\n  {} {}\n\nIssued {} (person {})\n",
            self.number,
            self.name,
            self.birth_date,
            self.address.street,
            self.address.postal_code,
            self.address.city,
            self.issued_at,
            self.person_id
        )
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
    Ok((201, Json(person)))
}

fn load(id: &str) -> Result<Person, Error> {
    people()?
        .get(&person_key(id))?
        .ok_or_else(|| Error::not_found(format!("no person {id} is registered")))
}

fn fetch(req: Request) -> Result<Json<Person>, Error> {
    load(req.param("id")?).map(Json)
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
    let body: CertificateRequest = req.json()?;
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
    };
    certificates.put(&format!("certificate/{number:010}"), &certificate)?;
    println!("certificate {number} issued for {}", certificate.person_id);
    Ok(answer(&req, 201, &certificate))
}

fn fetch_certificate(req: Request) -> Result<Response, Error> {
    let number: u64 = req.param_as("number")?;
    let certificate: Certificate = certificates()?
        .get(&format!("certificate/{number:010}"))?
        .ok_or_else(|| Error::not_found(format!("no certificate number {number}")))?;
    Ok(answer(&req, 200, &certificate))
}

/// The routes of this service.
pub fn routes() -> Router {
    Router::new()
        .post("/persons", register)
        .get("/persons", list)
        .get("/persons/{id}", fetch)
        .post("/persons/{id}/moves", record_move)
        .post("/certificates", issue)
        .get("/certificates/{number}", fetch_certificate)
}

doppel_sdk::service!(routes);
