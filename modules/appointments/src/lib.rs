//! Citizen-office appointments: offices publish slots (a time with a number of places), citizens
//! book and cancel. Bookings go through compare-and-swap, so two concurrent bookings of the last
//! place can never both succeed.
//!
//! Who may do what (callers are verified bearer tokens, `doppel_sdk::auth`): slots are public;
//! only `office-staff` publish them. A citizen with a token books, and sees, lists and cancels
//! only their own bookings (the owner is the token's subject); office staff see and manage
//! every booking. Someone else's booking answers 404, as one that does not exist.

use doppel_sdk::{Bucket, Caller, Error, Json, Page, Request, Router, Validator, time};
use serde::{Deserialize, Serialize};

/// A bookable time at an office.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Slot {
    /// Office code, e.g. `mitte`.
    pub office: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `HH:MM`.
    pub time: String,
    /// How many citizens can come.
    pub capacity: u32,
    /// Ids of the bookings holding places.
    pub bookings: Vec<String>,
}

impl Slot {
    fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.bookings.len() as u32)
    }
}

/// What the list of slots shows.
#[derive(Debug, Serialize)]
pub struct SlotView {
    /// Office.
    pub office: String,
    /// Date.
    pub date: String,
    /// Time.
    pub time: String,
    /// Places in all.
    pub capacity: u32,
    /// Places left.
    pub free: u32,
}

/// A citizen's booking.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Booking {
    /// Who booked: the subject of their token.
    #[serde(default)]
    pub owner: String,
    /// `B-000001`…
    pub id: String,
    /// Office.
    pub office: String,
    /// Date.
    pub date: String,
    /// Time.
    pub time: String,
    /// Who comes.
    pub name: String,
    /// Where to send the confirmation.
    pub email: String,
    /// When booked.
    pub booked_at: String,
}

fn slots() -> Result<Bucket, Error> {
    Bucket::open("slots")
}

fn bookings() -> Result<Bucket, Error> {
    Bucket::open("bookings")
}

fn slot_key(office: &str, date: &str, time: &str) -> String {
    format!("slot/{office}/{date}/{time}")
}

fn valid_office(office: &str) -> bool {
    (1..=40).contains(&office.len())
        && office
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_slot_ref(v: &mut Validator, office: &str, date: &str, time_of_day: &str) {
    v.check(
        valid_office(office),
        "office",
        "must be 1 to 40 characters a-z, 0-9 or '-'",
    )
    .check(
        time::is_date(date),
        "date",
        "must be a date written YYYY-MM-DD",
    )
    .check(
        time::is_time_of_day(time_of_day),
        "time",
        "must be a time written HH:MM",
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSlot {
    office: String,
    date: String,
    time: String,
    capacity: u32,
}

/// The role that publishes slots and sees and manages every booking.
pub const STAFF: &str = "office-staff";

/// Whether `caller` may see and cancel `booking`.
fn may_manage(caller: &Caller, booking: &Booking) -> bool {
    caller.has_role(STAFF) || booking.owner == caller.subject
}

fn publish(req: Request) -> Result<(u16, Json<Slot>), Error> {
    let new: NewSlot = req.json()?;
    let mut v = Validator::new();
    check_slot_ref(&mut v, &new.office, &new.date, &new.time);
    v.check(
        (1..=100).contains(&new.capacity),
        "capacity",
        "must be between 1 and 100",
    );
    v.finish()?;
    let key = slot_key(&new.office, &new.date, &new.time);
    let slot = slots()?.update(&key, |current: Option<Slot>| {
        if current.is_some() {
            return Err(Error::conflict(format!(
                "{} {} {} is already published",
                new.office, new.date, new.time
            )));
        }
        let slot = Slot {
            office: new.office.clone(),
            date: new.date.clone(),
            time: new.time.clone(),
            capacity: new.capacity,
            bookings: Vec::new(),
        };
        Ok((slot.clone(), slot))
    })?;
    Ok((201, Json(slot)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotQuery {
    office: String,
    date: String,
    #[serde(default)]
    free: bool,
}

fn list(req: Request) -> Result<Json<Vec<SlotView>>, Error> {
    let q: SlotQuery = req.query()?;
    let mut v = Validator::new();
    v.check(valid_office(&q.office), "office", "must be an office code")
        .check(
            time::is_date(&q.date),
            "date",
            "must be a date written YYYY-MM-DD",
        )
        .finish()?;
    // One office-day has at most a few dozen slots: one page holds them all.
    let page = slots()?.page::<Slot>(&format!("slot/{}/{}/", q.office, q.date), None, 500)?;
    let views = page
        .items
        .into_iter()
        .filter(|s| !q.free || s.free() > 0)
        .map(|s| SlotView {
            free: s.free(),
            office: s.office,
            date: s.date,
            time: s.time,
            capacity: s.capacity,
        })
        .collect();
    Ok(Json(views))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBooking {
    office: String,
    date: String,
    time: String,
    name: String,
    email: String,
}

fn book(req: Request) -> Result<(u16, Json<Booking>), Error> {
    let caller = req.caller()?;
    let new: NewBooking = req.json()?;
    let mut v = Validator::new();
    check_slot_ref(&mut v, &new.office, &new.date, &new.time);
    v.text(&new.name, "name", 200)
        .check(
            new.email.contains('@') && !new.email.contains(' '),
            "email",
            "must be an e-mail address",
        )
        .finish()?;
    let bookings = bookings()?;
    let id = format!("B-{:06}", bookings.increment("next-number", 1)?);
    let key = slot_key(&new.office, &new.date, &new.time);
    // Take a place with compare-and-swap: if another booking lands first, this runs again on the
    // fresh slot and sees the place gone.
    slots()?.update(&key, |current: Option<Slot>| {
        let mut slot = current.ok_or_else(|| {
            Error::not_found(format!(
                "no slot {} {} {} is published",
                new.office, new.date, new.time
            ))
        })?;
        if slot.free() == 0 {
            return Err(Error::conflict(format!(
                "{} {} {} is fully booked",
                new.office, new.date, new.time
            )));
        }
        slot.bookings.push(id.clone());
        Ok((slot, ()))
    })?;
    let booking = Booking {
        owner: caller.subject,
        id: id.clone(),
        office: new.office,
        date: new.date,
        time: new.time,
        name: new.name.trim().to_string(),
        email: new.email.trim().to_string(),
        booked_at: time::now(),
    };
    bookings.put(&format!("booking/{id}"), &booking)?;
    println!(
        "booking {id} for {} {} {}",
        booking.office, booking.date, booking.time
    );
    Ok((201, Json(booking)))
}

/// The booking `id` if `caller` may see it; someone else's answers like a missing one.
fn load_booking(caller: &Caller, id: &str) -> Result<Booking, Error> {
    bookings()?
        .get(&format!("booking/{id}"))?
        .filter(|b| may_manage(caller, b))
        .ok_or_else(|| Error::not_found(format!("no booking {id}")))
}

fn fetch(req: Request) -> Result<Json<Booking>, Error> {
    load_booking(&req.caller()?, req.param("id")?).map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookingQuery {
    after: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

/// Bookings, oldest first: every one for office staff, a citizen's own otherwise. The cursor
/// is a booking id.
fn list_bookings(req: Request) -> Result<Json<Page<Booking>>, Error> {
    let caller = req.caller()?;
    let q: BookingQuery = req.query()?;
    if q.limit == 0 || q.limit > 500 {
        return Err(Error::bad_request("limit must be between 1 and 500"));
    }
    let bookings = bookings()?;
    let mut items = Vec::new();
    let mut after = q.after.map(|id| format!("booking/{id}"));
    loop {
        let page: Page<Booking> = bookings.page("booking/", after.as_deref(), 200)?;
        for booking in page.items {
            after = Some(format!("booking/{}", booking.id));
            if may_manage(&caller, &booking) {
                items.push(booking);
                if items.len() == q.limit {
                    let next = items.last().map(|b: &Booking| b.id.clone());
                    return Ok(Json(Page { items, next }));
                }
            }
        }
        if page.next.is_none() {
            return Ok(Json(Page { items, next: None }));
        }
    }
}

fn cancel(req: Request) -> Result<(), Error> {
    let id = req.param("id")?.to_string();
    let booking = load_booking(&req.caller()?, &id)?;
    let key = slot_key(&booking.office, &booking.date, &booking.time);
    slots()?.update(&key, |current: Option<Slot>| {
        let mut slot =
            current.ok_or_else(|| Error::internal(format!("the slot of booking {id} is gone")))?;
        slot.bookings.retain(|b| *b != id);
        Ok((slot, ()))
    })?;
    bookings()?.delete(&format!("booking/{id}"))?;
    println!("booking {id} cancelled");
    Ok(())
}

/// The routes of this service.
pub fn routes() -> Router {
    Router::new()
        .post("/slots", publish)
        .require_role(STAFF)
        .get("/slots", list)
        .post("/bookings", book)
        .require_caller()
        .get("/bookings", list_bookings)
        .require_caller()
        .get("/bookings/{id}", fetch)
        .require_caller()
        .delete("/bookings/{id}", cancel)
        .require_caller()
}

doppel_sdk::service!(routes);
