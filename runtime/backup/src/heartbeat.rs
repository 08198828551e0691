//! A twin's heartbeat in its primary's backup target: how the primary learns how far its twin
//! has got.
//!
//! The twin reads the target and never talks to the primary, so it reports where the primary
//! can read: every [`REPORT_EVERY`] while following, its leader creates a small object
//! `twins/NAME/HOUR/MS.json` ([`Report`]). Like everything else in a target it is created,
//! never overwritten, so a twin needs no more rights on the target than the generation it
//! writes at promotion. The hour folder keeps what the primary lists small: it looks into the
//! current and the previous hour of each twin every [`CHECK_EVERY`] ([`seen`]); a twin with no
//! report in either is shown as silent. `doppel backup prune` removes old reports with the
//! backups they describe.

use std::time::Duration;

use doppel_api::TwinSeen;
use serde::{Deserialize, Serialize};

use crate::BackupError;
use crate::location::Location;

/// How often a following twin reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How often a primary's shipper reads its twins' reports.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

const HOUR_MS: u64 = 3_600_000;

/// What a twin reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The twin's name (`doppel twin follow --name`).
    pub twin: String,
    /// The primary's raft index the twin's state stands at.
    pub primary_index: u64,
    /// How stale the twin's state was when it reported (its `doppel twin status` lag).
    pub lag_ms: u64,
    /// When it reported (ms since the epoch).
    pub reported_ms: u64,
}

fn folder(twin: &str, hour: u64) -> String {
    format!("twins/{twin}/{hour:010}")
}

/// Checks a twin's name: it names a folder in every target it follows.
pub fn check_name(name: &str) -> Result<(), BackupError> {
    let fine = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if fine {
        Ok(())
    } else {
        Err(BackupError::BadLocation(format!(
            "{name:?} cannot name a twin: use 1 to 63 lower-case letters, digits and dashes, \
             not starting with a dash"
        )))
    }
}

/// Writes `report` into `location`.
pub async fn report(location: &Location, report: &Report) -> Result<(), BackupError> {
    let name = format!(
        "{}/{:020}.json",
        folder(&report.twin, report.reported_ms / HOUR_MS),
        report.reported_ms
    );
    match location
        .create(
            &name,
            serde_json::to_vec(report).expect("a report always encodes"),
        )
        .await
    {
        // Two leaders of the twin in the same millisecond: one report is enough.
        Ok(()) | Err(BackupError::Exists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The twins that report into `location`, each with its newest report of the last hour or so,
/// seen from a primary whose log stands at `applied_index`.
pub async fn seen(
    location: &Location,
    applied_index: u64,
    now_ms: u64,
) -> Result<Vec<TwinSeen>, BackupError> {
    let mut all = Vec::new();
    for twin in location.list_folders("twins").await? {
        let hour = now_ms / HOUR_MS;
        let mut newest = None;
        for hour in [hour, hour.saturating_sub(1)] {
            newest = location
                .list(&folder(&twin, hour))
                .await?
                .into_iter()
                .map(|(name, _)| name)
                .max();
            if newest.is_some() {
                break;
            }
        }
        let report = match newest {
            Some(name) => {
                let bytes = location.get(&name).await?;
                Some(serde_json::from_slice::<Report>(&bytes).map_err(|e| {
                    BackupError::Broken(format!("the twin report {name} does not decode: {e}"))
                })?)
            }
            None => None,
        };
        all.push(TwinSeen {
            target: String::new(),
            behind: report
                .as_ref()
                .map(|r| applied_index.saturating_sub(r.primary_index)),
            primary_index: report.as_ref().map(|r| r.primary_index),
            lag_ms: report.as_ref().map(|r| r.lag_ms),
            reported_ms: report.as_ref().map(|r| r.reported_ms),
            twin,
        });
    }
    Ok(all)
}

/// Removes every twin's reports from before `keep_after_ms` but its newest. Answers how many
/// it removed (or, in a dry run, would remove).
pub async fn prune(
    location: &Location,
    keep_after_ms: u64,
    dry_run: bool,
) -> Result<u64, BackupError> {
    let mut removed = 0;
    for twin in location.list_folders("twins").await? {
        let reports = location.list(&format!("twins/{twin}")).await?;
        let Some((newest, _)) = reports.last().cloned() else {
            continue;
        };
        for (name, _) in reports {
            let at = name
                .rsplit('/')
                .next()
                .and_then(|file| file.strip_suffix(".json"))
                .and_then(|ms| ms.parse::<u64>().ok());
            if name == newest || at.is_none_or(|at| at >= keep_after_ms) {
                continue;
            }
            if !dry_run {
                location.delete(&name).await?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_primary_sees_each_twins_newest_report_and_prune_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::open(&format!("file://{}", dir.path().display())).unwrap();
        let now = 1_000 * HOUR_MS + 5_000;
        for (twin, index, at) in [
            ("east", 10, now - HOUR_MS), // the previous hour
            ("east", 40, now - 1_000),
            ("west", 7, now - 3 * HOUR_MS), // silent for hours
        ] {
            let r = Report {
                twin: twin.into(),
                primary_index: index,
                lag_ms: 300,
                reported_ms: at,
            };
            report(&location, &r).await.unwrap();
        }
        let seen = seen(&location, 50, now).await.unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].twin, "east");
        assert_eq!(seen[0].primary_index, Some(40));
        assert_eq!(seen[0].behind, Some(10));
        assert_eq!(seen[0].reported_ms, Some(now - 1_000));
        assert_eq!(seen[1].twin, "west");
        assert_eq!(seen[1].reported_ms, None, "no report in the last two hours");

        assert_eq!(prune(&location, now, true).await.unwrap(), 1);
        assert_eq!(prune(&location, now, false).await.unwrap(), 1);
        let left = location.list("twins").await.unwrap();
        assert_eq!(left.len(), 2, "each twin's newest report stays: {left:?}");
    }

    #[test]
    fn names_that_would_escape_the_folder_are_refused() {
        assert!(check_name("twin-frankfurt-2").is_ok());
        for bad in ["", "../x", "a/b", "Upper", "-x", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
