//! Cron schedules: what calls a function on a timetable, stored in the
//! `schedules` table. A schedule is a standard 5-field cron expression
//! (UTC; `@hourly`, `@daily` and the other nicknames too) or `@every 30s`;
//! its overlap policy says whether a tick may start while the previous run
//! still goes.
//!
//! This module parses, validates and stores; the thread that fires the
//! ticks is `control::cron`. Blocking SQLite calls: control plane only.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::RegistryError;
use crate::clock;

/// `@every` intervals: at least a second (the firing thread's resolution),
/// at most a day (longer is a cron expression's job).
pub const EVERY_MIN: Duration = Duration::from_secs(1);
pub const EVERY_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Schedules one database holds; a bound on the firing thread's work.
pub const SCHEDULES_MAX: usize = 10_000;
/// Largest body a scheduled call sends.
pub const SCHEDULE_BODY_BYTES_MAX: usize = 64 * 1024;

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Timetable {
    Cron(Box<croner::Cron>),
    Every(Duration),
}

impl Timetable {
    pub fn parse(text: &str) -> Result<Timetable, String> {
        let text = text.trim();
        if let Some(interval) = text.strip_prefix("@every") {
            let interval = interval.trim();
            let bad = || {
                format!(
                    "@every {interval:?} must be a duration such as 30s, 5m or 1h, \
                     from {}s to {}h",
                    EVERY_MIN.as_secs(),
                    EVERY_MAX.as_secs() / 3600
                )
            };
            let every = clock::parse_duration(interval)
                .filter(|every| (EVERY_MIN..=EVERY_MAX).contains(every))
                .ok_or_else(bad)?;
            return Ok(Timetable::Every(every));
        }
        // Five fields, as crontab(5) has them: croner would also take a
        // sixth (seconds), which a reader of a crontab line would misread.
        if !text.starts_with('@') && text.split_whitespace().count() != 5 {
            return Err(format!(
                "cron expression {text:?} must have 5 fields (minute hour day-of-month month \
                 day-of-week), or be @hourly, @daily, @weekly, @monthly, @yearly or @every 30s"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .build()
            .parse(text)
            .map_err(|e| format!("cron expression {text:?} is not valid: {e}"))?;
        Ok(Timetable::Cron(Box::new(cron)))
    }

    /// The first tick strictly after `after_unix_us`; `None` when there is
    /// none (a date that never comes, such as 30 February).
    pub fn next_after_us(&self, after_unix_us: u64) -> Option<u64> {
        match self {
            Timetable::Every(every) => {
                let every_us = every.as_micros() as u64;
                // Aligned to the interval, as `@every 1m` fires on minutes.
                Some((after_unix_us / every_us + 1) * every_us)
            }
            Timetable::Cron(cron) => {
                let after = chrono::DateTime::from_timestamp_micros(after_unix_us as i64)?;
                let next = cron.find_next_occurrence(&after, false).ok()?;
                u64::try_from(next.timestamp_micros()).ok()
            }
        }
    }
}

/// A tick while the previous run still goes: skipped and counted, or run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    Skip,
    Allow,
}

impl Overlap {
    pub fn parse(text: &str) -> Result<Overlap, String> {
        match text {
            "skip" => Ok(Overlap::Skip),
            "allow" => Ok(Overlap::Allow),
            _ => Err(format!("overlap {text:?} must be skip or allow")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
        }
    }
}

/// What a new schedule asks for, checked by [`create`].
pub struct NewSchedule<'a> {
    pub function: &'a str,
    pub cron: &'a str,
    pub overlap: Overlap,
    pub method: &'a str,
    /// Below the function's `/fn/NAME`.
    pub path: &'a str,
    pub body: &'a str,
}

/// A stored schedule and what its runs did.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub id: i64,
    pub function: String,
    pub cron: String,
    pub overlap: Overlap,
    pub method: String,
    pub path: String,
    #[serde(skip)]
    pub body: String,
    pub created_unix: i64,
    pub last_run_unix_us: Option<u64>,
    pub last_status: Option<u16>,
    pub last_duration_us: Option<u64>,
    pub runs: u64,
    pub skipped: u64,
}

const COLUMNS: &str = "id, function, cron, overlap, method, path, body, created, last_run_us, \
                       last_status, last_duration_us, runs, skipped";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    let overlap: String = row.get(3)?;
    Ok(Schedule {
        id: row.get(0)?,
        function: row.get(1)?,
        cron: row.get(2)?,
        overlap: Overlap::parse(&overlap).unwrap_or(Overlap::Skip),
        method: row.get(4)?,
        path: row.get(5)?,
        body: row.get(6)?,
        created_unix: row.get(7)?,
        last_run_unix_us: row.get::<_, Option<i64>>(8)?.map(|v| v.max(0) as u64),
        last_status: row
            .get::<_, Option<i64>>(9)?
            .map(|v| v.clamp(0, 999) as u16),
        last_duration_us: row.get::<_, Option<i64>>(10)?.map(|v| v.max(0) as u64),
        runs: row.get::<_, i64>(11)?.max(0) as u64,
        skipped: row.get::<_, i64>(12)?.max(0) as u64,
    })
}

/// Checks and stores a schedule of an existing function.
pub fn create(connection: &Connection, new: &NewSchedule<'_>) -> Result<Schedule, RegistryError> {
    Timetable::parse(new.cron).map_err(RegistryError::Invalid)?;
    if !crate::http::rules::is_token(new.method.as_bytes()) {
        return Err(RegistryError::Invalid(format!(
            "method {:?} is not an HTTP method",
            new.method
        )));
    }
    if !new.path.starts_with('/')
        || new.path.contains("..")
        || new.path.bytes().any(|b| !b.is_ascii_graphic())
    {
        return Err(RegistryError::Invalid(format!(
            "path {:?} must start with / and hold printable ASCII only (no ..)",
            new.path
        )));
    }
    if new.body.len() > SCHEDULE_BODY_BYTES_MAX {
        return Err(RegistryError::Invalid(format!(
            "a scheduled call's body is at most {SCHEDULE_BODY_BYTES_MAX} bytes"
        )));
    }
    let known: Option<i64> = connection
        .query_row(
            "SELECT 1 FROM registry_functions WHERE name = ?1",
            [new.function],
            |row| row.get(0),
        )
        .optional()?;
    if known.is_none() {
        return Err(RegistryError::NotFound(new.function.to_string()));
    }
    let count: i64 =
        connection.query_row("SELECT count(*) FROM schedules", [], |row| row.get(0))?;
    if count as usize >= SCHEDULES_MAX {
        return Err(RegistryError::Conflict(format!(
            "there are already {SCHEDULES_MAX} schedules; delete one first"
        )));
    }
    connection.execute(
        "INSERT INTO schedules (function, cron, overlap, method, path, body, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            new.function,
            new.cron.trim(),
            new.overlap.name(),
            new.method,
            new.path,
            new.body,
            clock::unix_now_secs() as i64
        ],
    )?;
    let id = connection.last_insert_rowid();
    get(connection, id)
}

pub fn get(connection: &Connection, id: i64) -> Result<Schedule, RegistryError> {
    connection
        .query_row(
            &format!("SELECT {COLUMNS} FROM schedules WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?
        .ok_or(RegistryError::ScheduleNotFound(id))
}

/// Every schedule (of `function`, when named), oldest first.
pub fn list(
    connection: &Connection,
    function: Option<&str>,
) -> Result<Vec<Schedule>, RegistryError> {
    let mut statement = connection.prepare(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE ?1 IS NULL OR function = ?1 ORDER BY id LIMIT {SCHEDULES_MAX}"
    ))?;
    let rows = statement.query_map([function], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes a schedule; `NotFound` when there was none.
pub fn delete(connection: &Connection, id: i64) -> Result<(), RegistryError> {
    match connection.execute("DELETE FROM schedules WHERE id = ?1", [id])? {
        0 => Err(RegistryError::ScheduleNotFound(id)),
        _ => Ok(()),
    }
}

/// What one run did (a run that could not reach the gateway: status 0).
pub fn record_run(
    connection: &Connection,
    id: i64,
    started_unix_us: u64,
    status: u16,
    duration_us: u64,
) -> Result<(), RegistryError> {
    connection.execute(
        "UPDATE schedules SET last_run_us = ?2, last_status = ?3, last_duration_us = ?4,
                runs = runs + 1 WHERE id = ?1",
        params![id, started_unix_us as i64, status, duration_us as i64],
    )?;
    Ok(())
}

/// A tick skipped because the previous run still went.
pub fn record_skip(connection: &Connection, id: i64) -> Result<(), RegistryError> {
    connection.execute(
        "UPDATE schedules SET skipped = skipped + 1 WHERE id = ?1",
        [id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE_US: u64 = 60_000_000;

    #[test]
    fn cron_expressions_tick_in_utc() {
        // 2026-01-01T00:00:00Z.
        let new_year_us = 1_767_225_600_000_000;
        let hourly = Timetable::parse("0 * * * *").expect("valid");
        assert_eq!(
            hourly.next_after_us(new_year_us + 1),
            Some(new_year_us + 60 * MINUTE_US)
        );
        let nickname = Timetable::parse("@hourly").expect("valid");
        assert_eq!(
            nickname.next_after_us(new_year_us),
            Some(new_year_us + 60 * MINUTE_US)
        );
        let every = Timetable::parse("@every 30s").expect("valid");
        assert_eq!(
            every.next_after_us(new_year_us),
            Some(new_year_us + 30_000_000)
        );
        assert_eq!(
            every.next_after_us(new_year_us + 1),
            Some(new_year_us + 30_000_000)
        );
    }

    #[test]
    fn invalid_timetables_say_why() {
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "@every",
            "@every 0s",
            "@every 2d",
            "@every 25h",
            "@sometimes",
        ] {
            let error = Timetable::parse(bad).expect_err(bad);
            assert!(!error.is_empty(), "{bad}");
        }
        assert!(Overlap::parse("maybe").is_err());
    }
}
