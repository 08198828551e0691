//! The shipped government services and the SDK examples, deployed on a real host and driven
//! through their whole API over HTTP, including error cases, concurrency and durability.

use std::sync::Arc;

use doppel_guests as guests;
use serde_json::{Value, json};

use crate::issuer::{ALL_ROLES, Issuer};
use crate::support::{Host, http};

/// Deploys one of the shipped services trusting the test issuer.
pub fn deploy_service(host: &Host, guest: &str, name: &str) {
    let args = Issuer::shared().deploy_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.deploy(guest, name, &args);
}

/// Calls as a caller holding every role (these tests are about what the services do; who may
/// do it is `callers.rs`).
fn call(host: &Host, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(host, Some(tester()), method, path, body)
}

/// A token holding every role.
fn tester() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| Issuer::shared().token("tester", ALL_ROLES))
}

/// Calls with `token` as the bearer token (none when `None`).
pub fn call_as(
    host: &Host,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = http();
    let url = host.url(path);
    let request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        other => panic!("unsupported method {other}"),
    };
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let request = match body {
        Some(b) => request
            .header("content-type", "application/json")
            .body(b.to_string()),
        None => request,
    };
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

#[test]
fn hello_and_counter_examples() {
    let host = Host::start();
    host.deploy(guests::HELLO, "hello", &["--config", "greeting=Moin"]);
    host.deploy(guests::COUNTER, "counter", &[]);
    assert_eq!(host.get("/hello/"), (200, "Moin, world!\n".into()));
    assert_eq!(host.get("/hello/Kiel"), (200, "Moin, Kiel!\n".into()));
    let (status, body) = host.post("/hello/Kiel", "");
    assert_eq!(status, 405);
    assert!(body.contains("GET"), "{body}");
    assert_eq!(call(&host, "GET", "/counter/visits", None).1["value"], 0);
    for expected in 1..=3 {
        assert_eq!(
            call(&host, "POST", "/counter/visits", None).1["value"],
            expected
        );
    }
    assert_eq!(call(&host, "GET", "/counter/visits", None).1["value"], 3);
    // 16 clients at once: no increment is lost.
    let url = host.url("/counter/visits");
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    assert_eq!(http().post(&url).send().unwrap().status().as_u16(), 200);
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    assert_eq!(call(&host, "GET", "/counter/visits", None).1["value"], 163);
}

fn application(name: &str, parcel: &str) -> Value {
    json!({
        "applicant": {"name": name, "email": format!("{}@example.org", name.to_lowercase().replace(' ', "."))},
        "parcel": parcel,
        "work_type": "extension",
        "description": "Winter garden on the south side",
    })
}

#[test]
fn permits_whole_api() {
    let host = Host::start();
    deploy_service(&host, guests::PERMITS, "permits");
    let (status, a) = call(
        &host,
        "POST",
        "/permits/applications",
        Some(application("Ada Lovelace", "Mitte 12/345")),
    );
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["id"], "P-000001");
    assert_eq!(a["status"], "submitted");
    assert_eq!(a["history"].as_array().unwrap().len(), 1);

    // Validation: every problem at once, as problem+json.
    let (status, e) = call(
        &host,
        "POST",
        "/permits/applications",
        Some(
            json!({"applicant": {"name": " ", "email": "nope"}, "parcel": "", "work_type": "extension", "description": "x"}),
        ),
    );
    assert_eq!(status, 422);
    let fields: Vec<&str> = e["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["applicant.name", "applicant.email", "parcel"]);
    let (status, e) = call(
        &host,
        "POST",
        "/permits/applications",
        Some(json!({"parcel": 1})),
    );
    assert_eq!(status, 400);
    assert!(
        e["detail"].as_str().unwrap().contains("invalid JSON body"),
        "{e}"
    );
    let (status, _) = call(
        &host,
        "POST",
        "/permits/applications",
        Some(
            json!({"applicant": {"name": "A", "email": "a@b"}, "parcel": "p", "work_type": "castle", "description": "d"}),
        ),
    );
    assert_eq!(status, 400);

    // Transitions: forward only, rejection needs a reason, final is final, history kept.
    let t = |to: &str, reason: Option<&str>| {
        call(
            &host,
            "POST",
            "/permits/applications/P-000001/transitions",
            Some(json!({"to": to, "reason": reason})),
        )
    };
    assert_eq!(t("approved", None).0, 409, "cannot skip review");
    assert_eq!(t("in_review", None).0, 200);
    let (status, e) = t("rejected", None);
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["errors"][0]["field"], "reason");
    let (status, done) = t("rejected", Some("Exceeds the permitted floor area"));
    assert_eq!(status, 200);
    assert_eq!(done["status"], "rejected");
    let history: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["submitted", "in_review", "rejected"]);
    assert_eq!(
        done["history"][2]["reason"],
        "Exceeds the permitted floor area"
    );
    let (status, e) = t("approved", None);
    assert_eq!(status, 409);
    assert!(e["detail"].as_str().unwrap().contains("final"), "{e}");
    assert_eq!(
        call(&host, "GET", "/permits/applications/P-000001", None).1["status"],
        "rejected"
    );
    assert_eq!(
        call(&host, "GET", "/permits/applications/P-000099", None).0,
        404
    );
    assert_eq!(
        call(&host, "GET", "/permits/applications/banana", None).0,
        400
    );
    assert_eq!(
        call(
            &host,
            "POST",
            "/permits/applications/P-000099/transitions",
            Some(json!({"to": "in_review"}))
        )
        .0,
        404
    );

    // Listing with filters and pagination.
    for i in 2..=7 {
        let parcel = if i % 2 == 0 { "Nord 1/1" } else { "Süd 2/2" };
        assert_eq!(
            call(
                &host,
                "POST",
                "/permits/applications",
                Some(application(&format!("Person {i}"), parcel))
            )
            .0,
            201
        );
    }
    let (_, page) = call(&host, "GET", "/permits/applications?limit=3", None);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["P-000001", "P-000002", "P-000003"]);
    assert_eq!(page["next"], "P-000003");
    let (_, page) = call(
        &host,
        "GET",
        "/permits/applications?limit=3&after=P-000003",
        None,
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let (_, page) = call(
        &host,
        "GET",
        "/permits/applications?limit=3&after=P-000006",
        None,
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], Value::Null);
    let (_, page) = call(
        &host,
        "GET",
        "/permits/applications?parcel=Nord%201%2F1&limit=2",
        None,
    );
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["P-000002", "P-000004"]);
    let (_, page) = call(
        &host,
        "GET",
        &format!(
            "/permits/applications?parcel=Nord%201%2F1&limit=2&after={}",
            page["next"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(page["items"][0]["id"], "P-000006");
    let (_, page) = call(&host, "GET", "/permits/applications?status=rejected", None);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        call(&host, "GET", "/permits/applications?status=lost", None).0,
        400
    );
    assert_eq!(
        call(&host, "GET", "/permits/applications?limit=0", None).0,
        400
    );
}

fn person(name: &str) -> Value {
    json!({"name": name, "birth_date": "1990-05-17", "address": {"street": "Hauptstraße 1", "postal_code": "24103", "city": "Kiel"}})
}

#[test]
fn registry_whole_api() {
    let host = Host::start();
    deploy_service(&host, guests::REGISTRY, "registry");
    let (status, p) = call(
        &host,
        "POST",
        "/registry/persons",
        Some(person("Grace Hopper")),
    );
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["id"], "R-000001");
    let (status, e) = call(
        &host,
        "POST",
        "/registry/persons",
        Some(
            json!({"name": "X", "birth_date": "2999-01-01", "address": {"street": "", "postal_code": "12", "city": "Kiel"}}),
        ),
    );
    assert_eq!(status, 422);
    let fields: Vec<&str> = e["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["birth_date", "address.street", "address.postal_code"]
    );

    let new_address =
        json!({"address": {"street": "Holstenstraße 9", "postal_code": "24103", "city": "Kiel"}});
    let (status, moved) = call(
        &host,
        "POST",
        "/registry/persons/R-000001/moves",
        Some(new_address.clone()),
    );
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["address"]["street"], "Holstenstraße 9");
    assert_eq!(moved["moves"][0]["from"]["street"], "Hauptstraße 1");
    assert_eq!(
        call(
            &host,
            "POST",
            "/registry/persons/R-000001/moves",
            Some(new_address.clone())
        )
        .0,
        409
    );
    assert_eq!(
        call(
            &host,
            "POST",
            "/registry/persons/R-000404/moves",
            Some(new_address)
        )
        .0,
        404
    );
    assert_eq!(
        call(&host, "GET", "/registry/persons/R-000001", None).1["moves"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        call(&host, "GET", "/registry/persons/R-000404", None).0,
        404
    );

    let (status, c) = call(
        &host,
        "POST",
        "/registry/certificates",
        Some(json!({"person_id": "R-000001"})),
    );
    assert_eq!(status, 201);
    assert_eq!(c["number"], 1);
    assert_eq!(c["address"]["street"], "Holstenstraße 9");
    let text = http()
        .get(host.url("/registry/certificates/1"))
        .bearer_auth(tester())
        .header("accept", "text/plain")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.starts_with("REGISTRATION CERTIFICATE No. 000001"),
        "{text}"
    );
    assert!(text.contains("Grace Hopper"));
    assert_eq!(
        call(
            &host,
            "POST",
            "/registry/certificates",
            Some(json!({"person_id": "R-000404"}))
        )
        .0,
        404
    );
    assert_eq!(call(&host, "GET", "/registry/certificates/77", None).0, 404);
    assert_eq!(
        call(&host, "GET", "/registry/certificates/abc", None).0,
        400
    );

    for i in 2..=4 {
        call(
            &host,
            "POST",
            "/registry/persons",
            Some(person(&format!("Person {i}"))),
        );
    }
    let (_, page) = call(&host, "GET", "/registry/persons?limit=3", None);
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["next"], "R-000003");
    let (_, page) = call(&host, "GET", "/registry/persons?after=R-000003", None);
    assert_eq!(page["items"][0]["id"], "R-000004");
    assert_eq!(page["next"], Value::Null);
}

#[test]
fn certificate_numbers_have_no_gaps_or_duplicates_under_concurrency() {
    let host = Arc::new(Host::start());
    deploy_service(&host, guests::REGISTRY, "registry");
    call(
        &host,
        "POST",
        "/registry/persons",
        Some(person("Many Copies")),
    );
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let url = host.url("/registry/certificates");
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| {
                        let r = http()
                            .post(&url)
                            .bearer_auth(tester())
                            .body(json!({"person_id": "R-000001"}).to_string())
                            .send()
                            .unwrap();
                        assert_eq!(r.status().as_u16(), 201);
                        r.json::<Value>().unwrap()["number"].as_u64().unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut numbers: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, (1..=80).collect::<Vec<u64>>());
}

fn slot(office: &str, time: &str, capacity: u32) -> Value {
    json!({"office": office, "date": "2026-12-01", "time": time, "capacity": capacity})
}

fn booking(time: &str, name: &str) -> Value {
    json!({"office": "mitte", "date": "2026-12-01", "time": time, "name": name, "email": "c@example.org"})
}

#[test]
fn appointments_whole_api() {
    let host = Host::start();
    deploy_service(&host, guests::APPOINTMENTS, "appointments");
    assert_eq!(
        call(
            &host,
            "POST",
            "/appointments/slots",
            Some(slot("mitte", "09:00", 2))
        )
        .0,
        201
    );
    assert_eq!(
        call(
            &host,
            "POST",
            "/appointments/slots",
            Some(slot("mitte", "09:30", 1))
        )
        .0,
        201
    );
    assert_eq!(
        call(
            &host,
            "POST",
            "/appointments/slots",
            Some(slot("mitte", "09:00", 5))
        )
        .0,
        409,
        "published twice"
    );
    let (status, e) = call(
        &host,
        "POST",
        "/appointments/slots",
        Some(json!({"office": "Mitte!", "date": "2026-02-30", "time": "25:00", "capacity": 0})),
    );
    assert_eq!(status, 422);
    assert_eq!(e["errors"].as_array().unwrap().len(), 4, "{e}");

    let (status, b1) = call(
        &host,
        "POST",
        "/appointments/bookings",
        Some(booking("09:30", "Ada")),
    );
    assert_eq!(status, 201, "{b1}");
    let (status, e) = call(
        &host,
        "POST",
        "/appointments/bookings",
        Some(booking("09:30", "Bob")),
    );
    assert_eq!(status, 409);
    assert!(e["detail"].as_str().unwrap().contains("fully booked"));
    assert_eq!(
        call(
            &host,
            "POST",
            "/appointments/bookings",
            Some(booking("11:00", "Cy"))
        )
        .0,
        404
    );

    let (_, free) = call(
        &host,
        "GET",
        "/appointments/slots?office=mitte&date=2026-12-01&free=true",
        None,
    );
    let times: Vec<&str> = free
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["time"].as_str().unwrap())
        .collect();
    assert_eq!(times, ["09:00"]);
    let (_, all) = call(
        &host,
        "GET",
        "/appointments/slots?office=mitte&date=2026-12-01",
        None,
    );
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(
        call(&host, "GET", "/appointments/slots?office=mitte", None).0,
        400
    );

    let id = b1["id"].as_str().unwrap();
    assert_eq!(
        call(&host, "GET", &format!("/appointments/bookings/{id}"), None).1["name"],
        "Ada"
    );
    assert_eq!(
        call(
            &host,
            "DELETE",
            &format!("/appointments/bookings/{id}"),
            None
        )
        .0,
        204
    );
    assert_eq!(
        call(&host, "GET", &format!("/appointments/bookings/{id}"), None).0,
        404
    );
    assert_eq!(
        call(
            &host,
            "DELETE",
            &format!("/appointments/bookings/{id}"),
            None
        )
        .0,
        404
    );
    // The place is free again.
    assert_eq!(
        call(
            &host,
            "POST",
            "/appointments/bookings",
            Some(booking("09:30", "Bob"))
        )
        .0,
        201
    );
}

#[test]
fn concurrent_bookings_never_overbook() {
    let host = Host::start();
    deploy_service(&host, guests::APPOINTMENTS, "appointments");
    let places = 5;
    call(
        &host,
        "POST",
        "/appointments/slots",
        Some(slot("mitte", "10:00", places)),
    );
    let workers: Vec<_> = (0..24)
        .map(|i| {
            let url = host.url("/appointments/bookings");
            std::thread::spawn(move || {
                let r = http()
                    .post(&url)
                    .bearer_auth(tester())
                    .body(booking("10:00", &format!("Citizen {i}")).to_string())
                    .send()
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    let statuses: Vec<u16> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let booked = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!(
        (booked, refused),
        (places as usize, 24 - places as usize),
        "{statuses:?}"
    );
    let (_, all) = call(
        &host,
        "GET",
        "/appointments/slots?office=mitte&date=2026-12-01",
        None,
    );
    assert_eq!(all[0]["free"], 0);
}

#[test]
fn service_data_survives_sigkill() {
    let mut host = Host::start();
    deploy_service(&host, guests::PERMITS, "permits");
    deploy_service(&host, guests::REGISTRY, "registry");
    deploy_service(&host, guests::APPOINTMENTS, "appointments");
    call(
        &host,
        "POST",
        "/permits/applications",
        Some(application("Kept Person", "Ost 3/3")),
    );
    call(
        &host,
        "POST",
        "/registry/persons",
        Some(person("Kept Resident")),
    );
    call(
        &host,
        "POST",
        "/registry/certificates",
        Some(json!({"person_id": "R-000001"})),
    );
    call(
        &host,
        "POST",
        "/appointments/slots",
        Some(slot("mitte", "08:00", 3)),
    );
    let (_, b) = call(
        &host,
        "POST",
        "/appointments/bookings",
        Some(booking("08:00", "Kept Citizen")),
    );
    host.kill();
    host.restart();
    assert_eq!(
        call(&host, "GET", "/permits/applications/P-000001", None).1["parcel"],
        "Ost 3/3"
    );
    assert_eq!(
        call(&host, "GET", "/registry/persons/R-000001", None).1["name"],
        "Kept Resident"
    );
    assert_eq!(
        call(&host, "GET", "/registry/certificates/1", None).1["number"],
        1
    );
    let id = b["id"].as_str().unwrap();
    assert_eq!(
        call(&host, "GET", &format!("/appointments/bookings/{id}"), None).1["name"],
        "Kept Citizen"
    );
    // Counters continue where they were: no number is handed out twice.
    assert_eq!(
        call(
            &host,
            "POST",
            "/registry/certificates",
            Some(json!({"person_id": "R-000001"}))
        )
        .1["number"],
        2
    );
    assert_eq!(
        call(
            &host,
            "POST",
            "/permits/applications",
            Some(application("Next", "Ost 3/3"))
        )
        .1["id"],
        "P-000002"
    );
}

/// The shipped services, with their token verification about 1.5 MB each, reach every host of a
/// cluster: a module travels through the replicated log like any write.
#[test]
#[ignore = "passes alone (14 s) but under the full suite on 2 cores a deploy's linearizable read times out; run with --ignored; see ARCHITECTURE, entry size"]
fn the_shipped_services_deploy_across_a_cluster() {
    let hosts = crate::support::cluster(3, &[]);
    for (guest, name) in [
        (guests::PERMITS, "permits"),
        (guests::REGISTRY, "registry"),
        (guests::APPOINTMENTS, "appointments"),
    ] {
        deploy_service(&hosts[0], guest, name);
    }
    // Every host compiles three components of 1.5 MB: on two loaded cores that takes a while.
    for host in &hosts {
        let limit = std::time::Duration::from_secs(120);
        crate::support::eventually_within(limit, "every host serves every service", || {
            call(host, "GET", "/permits/applications", None).0 == 200
                && call(host, "GET", "/registry/persons", None).0 == 200
                && call(host, "GET", "/appointments/bookings", None).0 == 200
        });
    }
}

/// PUTs `body` as `content_type` with `token`; the status and the answer's text.
fn put_as(
    host: &Host,
    token: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let response = http()
        .put(host.url(path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// Building plans attached to an application as PDFs: stored through `wasi:blobstore`, listed
/// with the application, read back byte for byte by its owner and case workers only; other
/// types, non-PDF bodies, oversized files, odd names and attachments to a decided case are
/// refused with the reason.
#[test]
fn permits_take_pdf_attachments_listed_with_the_application() {
    let host = Host::start();
    deploy_service(&host, guests::PERMITS, "permits");
    let issuer = Issuer::shared();
    let ada = issuer.token("ada", &[]);
    let eve = issuer.token("eve", &[]);
    let (status, a) = call_as(
        &host,
        Some(&ada),
        "POST",
        "/permits/applications",
        Some(application("Ada Lovelace", "Mitte 12/345")),
    );
    assert_eq!(status, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_string();
    let path = |name: &str| format!("/permits/applications/{id}/attachments/{name}");
    // A plan of a few hundred KiB: several of the host's chunks.
    let mut plan = b"%PDF-1.7\n".to_vec();
    plan.extend((0..400_000u32).map(|i| (i % 251) as u8));
    let (status, text) = put_as(
        &host,
        &ada,
        &path("site-plan.pdf"),
        "application/pdf",
        plan.clone(),
    );
    assert_eq!(status, 201, "{text}");
    let (status, text) = put_as(
        &host,
        &ada,
        &path("floor-plan.pdf"),
        "application/pdf",
        b"%PDF-1.4 tiny".to_vec(),
    );
    assert_eq!(status, 201, "{text}");

    let (status, fetched) = call_as(
        &host,
        Some(&ada),
        "GET",
        &format!("/permits/applications/{id}"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        fetched["attachments"],
        json!([
            {"name": "floor-plan.pdf", "size": 13, "content_type": "application/pdf"},
            {"name": "site-plan.pdf", "size": plan.len(), "content_type": "application/pdf"},
        ])
    );
    let response = http()
        .get(host.url(&path("site-plan.pdf")))
        .bearer_auth(tester())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    assert_eq!(response.bytes().unwrap().to_vec(), plan);

    // Someone else sees neither the application nor its documents, nor can add one.
    assert_eq!(
        call_as(&host, Some(&eve), "GET", &path("site-plan.pdf"), None).0,
        404
    );
    assert_eq!(
        put_as(
            &host,
            &eve,
            &path("x.pdf"),
            "application/pdf",
            b"%PDF-1.7".to_vec()
        )
        .0,
        404
    );
    // Refusals, each with its reason.
    let (status, text) = put_as(
        &host,
        &ada,
        &path("photo.pdf"),
        "image/jpeg",
        b"\xff\xd8".to_vec(),
    );
    assert_eq!(status, 415, "{text}");
    let (status, text) = put_as(
        &host,
        &ada,
        &path("fake.pdf"),
        "application/pdf",
        b"MZ\x90\x00".to_vec(),
    );
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("not a PDF"), "{text}");
    let (status, text) = put_as(
        &host,
        &ada,
        &path("..%2Fescape.pdf"),
        "application/pdf",
        b"%PDF-1.7".to_vec(),
    );
    assert_eq!(status, 400, "{text}");
    let mut huge = b"%PDF-1.7\n".to_vec();
    huge.resize(9 << 20, b' ');
    let (status, text) = put_as(&host, &ada, &path("huge.pdf"), "application/pdf", huge);
    assert_eq!(status, 413, "{text}");
    // Once decided, nothing more is attached; what was attached stays readable.
    let to = |state: &str, reason: Option<&str>| {
        call(
            &host,
            "POST",
            &format!("/permits/applications/{id}/transitions"),
            Some(json!({"to": state, "reason": reason})),
        )
    };
    assert_eq!(to("in_review", None).0, 200);
    assert_eq!(to("approved", None).0, 200);
    let (status, text) = put_as(
        &host,
        &ada,
        &path("late.pdf"),
        "application/pdf",
        b"%PDF-1.7".to_vec(),
    );
    assert_eq!(status, 409, "{text}");
    let (_, fetched) = call_as(
        &host,
        Some(&ada),
        "GET",
        &format!("/permits/applications/{id}"),
        None,
    );
    assert_eq!(fetched["attachments"].as_array().unwrap().len(), 2);
}
