//! Citizen-office appointments: offices publish slots (a time with a number of places), citizens
//! book and cancel. Bookings go through compare-and-swap, so two concurrent bookings of the last
//! place can never both succeed.

use doppel_sdk::{Bucket, Error, Json, Request, Router, Validator, time};
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

fn load_booking(id: &str) -> Result<Booking, Error> {
    bookings()?
        .get(&format!("booking/{id}"))?
        .ok_or_else(|| Error::not_found(format!("no booking {id}")))
}

fn fetch(req: Request) -> Result<Json<Booking>, Error> {
    load_booking(req.param("id")?).map(Json)
}

fn cancel(req: Request) -> Result<(), Error> {
    let id = req.param("id")?.to_string();
    let booking = load_booking(&id)?;
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
        .get("/slots", list)
        .post("/bookings", book)
        .get("/bookings/{id}", fetch)
        .delete("/bookings/{id}", cancel)
}

doppel_sdk::service!(routes);
