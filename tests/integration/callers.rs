//! Who may do what in the services we ship, tried as each kind of caller would: a matrix of
//! roles × every endpoint of permits, registry and appointments against the documented status;
//! forged, expired and misdirected tokens refused with 401 and the standard challenge; a citizen
//! never sees another's application or booking, also through list pages and their cursors; and
//! the registry's access log names who read or changed a record.

use doppel_guests as guests;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::issuer::Issuer;
use crate::services::{call_as, deploy_service};
use crate::support::{Host, http};

/// Who calls (a name for the report, the token), the method, the path, the body, and the
/// documented status.
type Row<'a> = (
    &'a str,
    Option<&'a str>,
    &'a str,
    &'a str,
    Option<Value>,
    u16,
);

/// Every kind of caller the matrix plays.
struct Callers {
    ada: String,
    bo: String,
    worker: String,
    officer: String,
    staff: String,
    dpo: String,
}

impl Callers {
    fn new() -> Callers {
        let issuer = Issuer::shared();
        let citizen = |sub: &str, person: &str| {
            let mut claims = Issuer::claims(sub, &[]);
            claims["person_id"] = json!(person);
            issuer.sign(Algorithm::ES256, Some("ec"), &claims)
        };
        Callers {
            ada: citizen("ada", "R-000001"),
            bo: citizen("bo", "R-000002"),
            worker: issuer.token("wanda", &["case-worker"]),
            officer: issuer.token("otto", &["registry-officer"]),
            staff: issuer.token("sam", &["office-staff"]),
            dpo: issuer.token("dora", &["data-protection-officer"]),
        }
    }
}

fn person(name: &str, street: &str) -> Value {
    json!({"name": name, "birth_date": "1990-05-01",
           "address": {"street": street, "postal_code": "24103", "city": "Kiel"}})
}

fn application(name: &str) -> Value {
    json!({"applicant": {"name": name, "email": "x@example.org"}, "parcel": "Mitte 1/2",
           "work_type": "extension", "description": "A porch"})
}

fn booking(time: &str) -> Value {
    json!({"office": "mitte", "date": "2026-12-01", "time": time, "name": "N", "email": "n@example.org"})
}

fn host_with_services() -> Host {
    let host = Host::start();
    deploy_service(&host, guests::PERMITS, "permits");
    deploy_service(&host, guests::REGISTRY, "registry");
    deploy_service(&host, guests::APPOINTMENTS, "appointments");
    host
}

#[test]
fn every_endpoint_answers_each_role_as_documented() {
    let host = host_with_services();
    let c = Callers::new();
    let (ada, bo, worker, officer, staff, dpo) = (
        Some(c.ada.as_str()),
        Some(c.bo.as_str()),
        Some(c.worker.as_str()),
        Some(c.officer.as_str()),
        Some(c.staff.as_str()),
        Some(c.dpo.as_str()),
    );
    let none = None;
    // What the rows below refer to: two residents, an application and a booking each, a slot,
    // a certificate for Ada.
    let setup = [
        (
            officer,
            "POST",
            "/registry/persons",
            Some(person("Ada", "Dänische Str. 1")),
        ),
        (
            officer,
            "POST",
            "/registry/persons",
            Some(person("Bo", "Holtenauer Str. 2")),
        ),
        (
            ada,
            "POST",
            "/permits/applications",
            Some(application("Ada")),
        ),
        (bo, "POST", "/permits/applications", Some(application("Bo"))),
        (
            staff,
            "POST",
            "/appointments/slots",
            Some(json!({"office": "mitte", "date": "2026-12-01", "time": "09:00", "capacity": 50})),
        ),
        (
            ada,
            "POST",
            "/appointments/bookings",
            Some(booking("09:00")),
        ),
        (bo, "POST", "/appointments/bookings", Some(booking("09:00"))),
    ];
    for (who, method, path, body) in setup {
        let (status, answer) = call_as(&host, who, method, path, body);
        assert_eq!(status, 201, "{method} {path}: {answer}");
    }
    let (_, certificate) = call_as(
        &host,
        officer,
        "POST",
        "/registry/certificates",
        Some(json!({"person_id": "R-000001"})),
    );
    let code = certificate["verification_code"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(code.len(), 10, "{certificate}");

    let verify = format!("/registry/certificates/1/verification?code={code}");
    let to = |to: &str| Some(json!({"to": to}));
    let moved = |street: &str| {
        Some(json!({"address": {"street": street, "postal_code": "24105", "city": "Kiel"}}))
    };
    #[rustfmt::skip]
    let matrix: Vec<Row> = vec![
        // permits: citizens submit and see their own; case workers see and decide all.
        ("nobody",  none,    "POST", "/permits/applications", Some(application("X")), 401),
        ("ada",     ada,     "POST", "/permits/applications", Some(application("Ada")), 201),
        ("worker",  worker,  "POST", "/permits/applications", Some(application("W")), 201),
        ("nobody",  none,    "GET",  "/permits/applications", None, 401),
        ("ada",     ada,     "GET",  "/permits/applications", None, 200),
        ("worker",  worker,  "GET",  "/permits/applications", None, 200),
        ("nobody",  none,    "GET",  "/permits/applications/P-000001", None, 401),
        ("ada",     ada,     "GET",  "/permits/applications/P-000001", None, 200),
        ("bo",      bo,      "GET",  "/permits/applications/P-000001", None, 404),
        ("officer", officer, "GET",  "/permits/applications/P-000001", None, 404),
        ("worker",  worker,  "GET",  "/permits/applications/P-000001", None, 200),
        ("nobody",  none,    "POST", "/permits/applications/P-000002/transitions", to("in_review"), 401),
        ("bo",      bo,      "POST", "/permits/applications/P-000002/transitions", to("in_review"), 403),
        ("ada",     ada,     "POST", "/permits/applications/P-000002/transitions", to("in_review"), 403),
        ("officer", officer, "POST", "/permits/applications/P-000002/transitions", to("in_review"), 403),
        ("worker",  worker,  "POST", "/permits/applications/P-000002/transitions", to("in_review"), 200),
        // registry: officers register, list and record moves; a resident reads their own.
        ("nobody",  none,    "POST", "/registry/persons", Some(person("X", "A 1")), 401),
        ("ada",     ada,     "POST", "/registry/persons", Some(person("X", "A 1")), 403),
        ("worker",  worker,  "POST", "/registry/persons", Some(person("X", "A 1")), 403),
        ("officer", officer, "POST", "/registry/persons", Some(person("Cy", "A 1")), 201),
        ("nobody",  none,    "GET",  "/registry/persons", None, 401),
        ("ada",     ada,     "GET",  "/registry/persons", None, 403),
        ("dpo",     dpo,     "GET",  "/registry/persons", None, 403),
        ("officer", officer, "GET",  "/registry/persons", None, 200),
        ("nobody",  none,    "GET",  "/registry/persons/R-000001", None, 401),
        ("ada",     ada,     "GET",  "/registry/persons/R-000001", None, 200),
        ("bo",      bo,      "GET",  "/registry/persons/R-000001", None, 403),
        ("worker",  worker,  "GET",  "/registry/persons/R-000001", None, 403),
        ("officer", officer, "GET",  "/registry/persons/R-000001", None, 200),
        ("nobody",  none,    "POST", "/registry/persons/R-000001/moves", moved("B 2"), 401),
        ("ada",     ada,     "POST", "/registry/persons/R-000001/moves", moved("B 2"), 403),
        ("officer", officer, "POST", "/registry/persons/R-000001/moves", moved("B 2"), 200),
        ("nobody",  none,    "POST", "/registry/certificates", Some(json!({"person_id": "R-000001"})), 401),
        ("bo",      bo,      "POST", "/registry/certificates", Some(json!({"person_id": "R-000001"})), 403),
        ("ada",     ada,     "POST", "/registry/certificates", Some(json!({"person_id": "R-000001"})), 201),
        ("nobody",  none,    "GET",  "/registry/certificates/1", None, 401),
        ("bo",      bo,      "GET",  "/registry/certificates/1", None, 404),
        ("ada",     ada,     "GET",  "/registry/certificates/1", None, 200),
        ("officer", officer, "GET",  "/registry/certificates/1", None, 200),
        ("nobody",  none,    "GET",  &verify, None, 200),
        ("nobody",  none,    "GET",  "/registry/persons/R-000001/access-log", None, 401),
        ("bo",      bo,      "GET",  "/registry/persons/R-000001/access-log", None, 403),
        ("officer", officer, "GET",  "/registry/persons/R-000001/access-log", None, 403),
        ("ada",     ada,     "GET",  "/registry/persons/R-000001/access-log", None, 200),
        ("dpo",     dpo,     "GET",  "/registry/persons/R-000001/access-log", None, 200),
        // appointments: slots are public; citizens book and manage their own; staff all.
        ("nobody",  none,    "GET",  "/appointments/slots?office=mitte&date=2026-12-01", None, 200),
        ("nobody",  none,    "POST", "/appointments/slots", Some(json!({"office": "mitte", "date": "2026-12-01", "time": "10:00", "capacity": 1})), 401),
        ("ada",     ada,     "POST", "/appointments/slots", Some(json!({"office": "mitte", "date": "2026-12-01", "time": "10:00", "capacity": 1})), 403),
        ("staff",   staff,   "POST", "/appointments/slots", Some(json!({"office": "mitte", "date": "2026-12-01", "time": "10:00", "capacity": 1})), 201),
        ("nobody",  none,    "POST", "/appointments/bookings", Some(booking("09:00")), 401),
        ("nobody",  none,    "GET",  "/appointments/bookings", None, 401),
        ("ada",     ada,     "GET",  "/appointments/bookings", None, 200),
        ("staff",   staff,   "GET",  "/appointments/bookings", None, 200),
        ("nobody",  none,    "GET",  "/appointments/bookings/B-000001", None, 401),
        ("bo",      bo,      "GET",  "/appointments/bookings/B-000001", None, 404),
        ("ada",     ada,     "GET",  "/appointments/bookings/B-000001", None, 200),
        ("staff",   staff,   "GET",  "/appointments/bookings/B-000001", None, 200),
        ("nobody",  none,    "DELETE", "/appointments/bookings/B-000001", None, 401),
        ("bo",      bo,      "DELETE", "/appointments/bookings/B-000001", None, 404),
        ("ada",     ada,     "DELETE", "/appointments/bookings/B-000001", None, 204),
        ("staff",   staff,   "DELETE", "/appointments/bookings/B-000002", None, 204),
    ];
    let mut wrong = Vec::new();
    for (name, token, method, path, body, expected) in matrix {
        let (status, answer) = call_as(&host, token, method, path, body);
        if status != expected {
            wrong.push(format!(
                "{name} {method} {path}: {status}, expected {expected}: {answer}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // What a verification tells anybody: genuine and for whom, nothing more.
    let (_, genuine) = call_as(&host, None, "GET", &verify, None);
    assert_eq!(genuine, json!({"genuine": true, "name": "Ada"}));
    let (_, forged) = call_as(
        &host,
        None,
        "GET",
        "/registry/certificates/1/verification?code=AAAAAAAAAA",
        None,
    );
    assert_eq!(forged, json!({"genuine": false}));
    let (_, unknown) = call_as(
        &host,
        None,
        "GET",
        &format!("/registry/certificates/99/verification?code={code}"),
        None,
    );
    assert_eq!(
        unknown, forged,
        "an unknown number answers like a wrong code"
    );

    // The access log: who read or changed Ada's record, in order.
    let (status, log) = call_as(
        &host,
        dpo,
        "GET",
        "/registry/persons/R-000001/access-log?limit=500",
        None,
    );
    assert_eq!(status, 200, "{log}");
    let seen: Vec<(String, String)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("otto", "register"),
        ("otto", "certificate"),
        ("otto", "list"),
        ("ada", "read"),
        ("otto", "read"),
        ("otto", "move"),
        ("ada", "certificate"),
        ("ada", "certificate-read"),
        ("otto", "certificate-read"),
        ("anonymous", "verify"),
        ("anonymous", "verify"),
    ]
    .iter()
    .map(|(w, a)| (w.to_string(), a.to_string()))
    .collect();
    assert_eq!(seen, expected);
    // Refused attempts left no trace of data read: Bo's read was refused before the record was.
    assert!(!seen.iter().any(|(who, _)| who == "bo"));
}

#[test]
fn a_citizen_never_sees_another_citizens_applications_or_bookings() {
    let host = host_with_services();
    let c = Callers::new();
    call_as(
        &host,
        Some(&c.staff),
        "POST",
        "/appointments/slots",
        Some(json!({"office": "mitte", "date": "2026-12-01", "time": "09:00", "capacity": 50})),
    );
    // Interleaved, so that every page of everyone's items mixes owners.
    for i in 0..5 {
        for (token, n) in [(&c.ada, 3), (&c.bo, 2)] {
            if i < n {
                assert_eq!(
                    call_as(
                        &host,
                        Some(token),
                        "POST",
                        "/permits/applications",
                        Some(application("A"))
                    )
                    .0,
                    201
                );
                assert_eq!(
                    call_as(
                        &host,
                        Some(token),
                        "POST",
                        "/appointments/bookings",
                        Some(booking("09:00"))
                    )
                    .0,
                    201
                );
            }
        }
    }
    for (token, subject, count) in [(&c.ada, "ada", 3), (&c.bo, "bo", 2)] {
        for list in ["/permits/applications", "/appointments/bookings"] {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let path = match &after {
                    Some(cursor) => format!("{list}?limit=1&after={cursor}"),
                    None => format!("{list}?limit=1"),
                };
                let (status, page) = call_as(&host, Some(token), "GET", &path, None);
                assert_eq!(status, 200, "{page}");
                for item in page["items"].as_array().unwrap() {
                    assert_eq!(item["owner"], subject, "{subject} saw {item}");
                    seen.push(item["id"].as_str().unwrap().to_string());
                }
                match page["next"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => break,
                }
            }
            assert_eq!(seen.len(), count, "{subject} on {list}: {seen:?}");
        }
    }
    // A case worker and office staff see everybody's.
    let (_, all) = call_as(&host, Some(&c.worker), "GET", "/permits/applications", None);
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    let (_, all) = call_as(&host, Some(&c.staff), "GET", "/appointments/bookings", None);
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
}

#[test]
fn forged_expired_and_misdirected_tokens_are_refused_with_the_standard_challenge() {
    let host = Host::start();
    deploy_service(&host, guests::PERMITS, "permits");
    let issuer = Issuer::shared();
    let good = Issuer::claims("ada", &[]);
    let with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        claims
    };
    let now = jsonwebtoken::get_current_timestamp();
    // Each genuine algorithm passes.
    for (alg, kid) in [
        (Algorithm::RS256, "rsa"),
        (Algorithm::ES256, "ec"),
        (Algorithm::EdDSA, "ed"),
    ] {
        let token = issuer.sign(alg, Some(kid), &good);
        let (status, answer) = call_as(&host, Some(&token), "GET", "/permits/applications", None);
        assert_eq!(status, 200, "{alg:?}: {answer}");
    }
    let genuine = issuer.token("ada", &[]);
    let forged = [
        (
            "expired",
            issuer.sign(Algorithm::ES256, Some("ec"), &with("exp", json!(now - 300))),
        ),
        (
            "not yet valid",
            issuer.sign(Algorithm::ES256, Some("ec"), &with("nbf", json!(now + 600))),
        ),
        (
            "wrong issuer",
            issuer.sign(
                Algorithm::ES256,
                Some("ec"),
                &with("iss", json!("https://evil.example")),
            ),
        ),
        (
            "wrong audience",
            issuer.sign(
                Algorithm::ES256,
                Some("ec"),
                &with("aud", json!("another-app")),
            ),
        ),
        ("alg none", Issuer::unsigned(&good)),
        (
            "HMAC with the public key",
            issuer.hmac_with_public_key(&good),
        ),
        (
            "tampered payload",
            issuer.tampered(&genuine, &with("roles", json!(["case-worker"]))),
        ),
        (
            "unknown key id",
            issuer.sign(Algorithm::ES256, Some("nobody-knows"), &good),
        ),
        (
            "no key id with several keys",
            issuer.sign(Algorithm::ES256, None, &good),
        ),
        (
            "signed by another key than named",
            issuer.sign(Algorithm::ES256, Some("rsa"), &good),
        ),
        (
            "no subject",
            issuer.sign(Algorithm::ES256, Some("ec"), &{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("sub");
                c
            }),
        ),
        ("not a JWT", "hello".to_string()),
    ];
    let mut details = std::collections::BTreeSet::new();
    for (name, token) in &forged {
        let answer = http()
            .get(host.url("/permits/applications"))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(answer.status().as_u16(), 401, "{name}");
        let challenge = answer.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        let body: Value = answer.json().unwrap();
        details.insert(body["detail"].as_str().unwrap().to_string());
    }
    assert_eq!(
        details.len(),
        1,
        "a refusal must not tell which check failed: {details:?}"
    );
    // No token: the challenge without an error code (RFC 6750 §3.1).
    let answer = http()
        .get(host.url("/permits/applications"))
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    let challenge = answer.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer ") && !challenge.contains("error="),
        "{challenge}"
    );
    // A citizen's token lacks the case worker's role: 403 with insufficient_scope.
    let answer = http()
        .post(host.url("/permits/applications/P-000001/transitions"))
        .bearer_auth(&genuine)
        .body(r#"{"to":"in_review"}"#)
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    assert!(
        answer.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
}

/// The SDK's guards on the smallest service (the one `benches/callers.rs` measures): the same
/// handler open and guarded.
#[test]
fn a_guarded_route_wants_a_token_and_an_open_one_does_not() {
    let host = Host::start();
    deploy_service(&host, guests::CALLERS, "callers");
    let token = Issuer::shared().token("ada", &[]);
    assert_eq!(
        call_as(&host, None, "GET", "/callers/open/read", None).0,
        200
    );
    assert_eq!(
        call_as(&host, None, "GET", "/callers/guarded/read", None).0,
        401
    );
    assert_eq!(
        call_as(&host, Some(&token), "GET", "/callers/guarded/read", None).0,
        200
    );
    let (status, _) = call_as(
        &host,
        Some(&token),
        "POST",
        "/callers/guarded/write",
        Some(json!("x")),
    );
    assert_eq!(status, 204);
    assert_eq!(
        call_as(
            &host,
            None,
            "POST",
            "/callers/guarded/write",
            Some(json!("x"))
        )
        .0,
        401
    );
}

/// A token the host remembers as verified (decision 0010) is still held to its expiry, and a
/// new key set refuses it: remembering saves the arithmetic, never a check.
#[test]
fn a_remembered_token_still_expires_and_a_new_key_set_refuses_it() {
    let host = Host::start();
    deploy_service(&host, guests::CALLERS, "callers");
    let issuer = Issuer::shared();
    let read = |token: &str| call_as(&host, Some(token), "GET", "/callers/guarded/read", None).0;

    // Expired 50 s ago: within the 60 s allowed for clock skew, for another 10 s.
    let mut claims = Issuer::claims("ada", &[]);
    claims["exp"] = json!(jsonwebtoken::get_current_timestamp() - 50);
    let ending = issuer.sign(Algorithm::EdDSA, Some("ed"), &claims);
    assert_eq!(read(&ending), 200, "verified, and remembered");
    assert_eq!(read(&ending), 200, "remembered");
    crate::support::eventually_within(
        std::time::Duration::from_secs(40),
        "the remembered token to expire",
        || read(&ending) == 401,
    );

    let lasting = issuer.token("bo", &[]);
    assert_eq!(read(&lasting), 200);
    // Redeployed trusting only the EdDSA key: the ES256 token it remembered no longer passes.
    let jwks: Value =
        serde_json::from_str(&issuer.deploy_args().last().unwrap()["AUTH_JWKS=".len()..]).unwrap();
    let only_ed: Vec<Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kid"] == "ed")
        .cloned()
        .collect();
    let mut args = issuer.deploy_args();
    *args.last_mut().unwrap() = format!("AUTH_JWKS={}", json!({ "keys": only_ed }));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.deploy(guests::CALLERS, "callers", &args);
    assert_eq!(read(&lasting), 401);
}
