//! Cron schedules over `/_/api/v1/schedules`: `schedule`, `schedules`,
//! `unschedule`.
//!
//! Owns: their flags and human views. May call: [`super::client`]. Must
//! never parse a cron expression itself: the server's answer (400 with the
//! reason) is the one judgement.

use clap::Args;
use serde_json::{json, Value};

use super::client::{self, segment, ClientError};
use super::table::Table;
use super::{cell, Exit, Target};

#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// The function to call.
    pub name: String,
    /// When: `0 * * * *`, `@hourly`, `@every 30s`, … (UTC).
    #[arg(long)]
    pub cron: String,
    /// A tick while the previous run still goes: `skip` it, or `allow` it.
    #[arg(long, value_parser = ["skip", "allow"])]
    pub overlap: Option<String>,
    /// The method of each call (default POST).
    #[arg(long)]
    pub method: Option<String>,
    /// The path below the function's (default `/`).
    #[arg(long)]
    pub path: Option<String>,
    /// The body of each call.
    #[arg(long)]
    pub data: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn create(args: &ScheduleArgs) -> Result<Exit, ClientError> {
    let mut body = json!({ "function": args.name, "cron": args.cron });
    for (field, value) in [
        ("overlap", &args.overlap),
        ("method", &args.method),
        ("path", &args.path),
        ("body", &args.data),
    ] {
        if let Some(value) = value {
            body[field] = value.clone().into();
        }
    }
    let answer = args
        .target
        .client()?
        .api("POST", "schedules", Some(&body))?;
    if args.target.json {
        super::out_json(&answer);
        return Ok(Exit::Ok);
    }
    let s = &answer["schedule"];
    super::out(&format!(
        "schedule {}: {} {} (overlap {}), next run {}\n",
        cell(&s["id"]),
        cell(&s["function"]),
        cell(&s["cron"]),
        cell(&s["overlap"]),
        short_time(&s["next_run"])
    ));
    Ok(Exit::Ok)
}

#[derive(Debug, Clone, Args)]
pub struct SchedulesArgs {
    /// Only this function's.
    #[arg(long)]
    pub function: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn list(args: &SchedulesArgs) -> Result<Exit, ClientError> {
    let query = client::query(&[("function", args.function.clone())]);
    let answer = args
        .target
        .client()?
        .api("GET", &format!("schedules{query}"), None)?;
    if args.target.json {
        super::out_json(&answer);
        return Ok(Exit::Ok);
    }
    let empty = Vec::new();
    let list = answer["schedules"].as_array().unwrap_or(&empty);
    if list.is_empty() {
        super::out("no schedules\n");
        return Ok(Exit::Ok);
    }
    let mut table = Table::new(&[
        "ID", "FUNCTION", "CRON", "OVERLAP", "NEXT RUN", "LAST RUN", "STATUS", "RUNS", "SKIPPED",
    ]);
    for s in list {
        table.row(vec![
            cell(&s["id"]),
            cell(&s["function"]),
            cell(&s["cron"]),
            cell(&s["overlap"]),
            short_time(&s["next_run"]),
            short_time(&s["last_run"]),
            cell(&s["last_status"]),
            cell(&s["runs"]),
            cell(&s["skipped"]),
        ]);
    }
    super::out(&table.render());
    Ok(Exit::Ok)
}

/// An RFC 3339 time to the second: a table has no room for microseconds.
fn short_time(value: &Value) -> String {
    match value.as_str() {
        Some(text) => match text.split_once('.') {
            Some((seconds, _)) if text.ends_with('Z') => format!("{seconds}Z"),
            _ => text.to_string(),
        },
        None => cell(value),
    }
}

#[derive(Debug, Clone, Args)]
pub struct UnscheduleArgs {
    /// The schedule's id, as `schedules` lists it.
    pub id: String,
    #[command(flatten)]
    pub target: Target,
}

pub fn delete(args: &UnscheduleArgs) -> Result<Exit, ClientError> {
    let answer =
        args.target
            .client()?
            .api("DELETE", &format!("schedules/{}", segment(&args.id)), None)?;
    if args.target.json {
        super::out_json(&answer);
    } else {
        super::out(&format!("schedule {} stopped\n", args.id));
    }
    Ok(Exit::Ok)
}
