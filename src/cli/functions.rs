//! The function subcommands over `/_/api/v1/functions…`: `list`, `get`,
//! `delete`, `versions`, `rollback`, `canary` and `stats`.
//!
//! Owns: their flags and human views. May call: [`super::client`]. Must
//! never compute what the server knows (which version is live, what a
//! rollback goes back to): it asks, and shows the answer.

use clap::Args;
use serde_json::{json, Value};

use super::client::{self, segment, ClientError};
use super::table::Table;
use super::{cell, time_cell, Exit, NameArgs, Target};

pub fn list(target: &Target) -> Result<Exit, ClientError> {
    let answer = target.client()?.api("GET", "functions", None)?;
    if target.json {
        super::out_json(&answer);
        return Ok(Exit::Ok);
    }
    let empty = Vec::new();
    let functions = answer["functions"].as_array().unwrap_or(&empty);
    if functions.is_empty() {
        super::out("no functions yet; deploy one with `corefn deploy PATH`\n");
        return Ok(Exit::Ok);
    }
    let mut table = Table::new(&[
        "NAME", "RUNTIME", "LIVE", "LATEST", "CANARY", "CALLS/5m", "ERRORS", "P99", "ROUTES",
    ]);
    for f in functions {
        let recent = &f["last_5m"];
        table.row(vec![
            cell(&f["name"]),
            cell(&f["runtime"]),
            cell(&f["live_version"]),
            cell(&f["latest_version"]),
            canary_text(&f["canary"]),
            recent["count"].as_u64().unwrap_or(0).to_string(),
            recent["error_rate"]
                .as_f64()
                .map(percent)
                .unwrap_or_else(|| "-".into()),
            recent["p99_us"]
                .as_u64()
                .map(micros)
                .unwrap_or_else(|| "-".into()),
            own_routes(f).join(" "),
        ]);
    }
    super::out(&table.render());
    Ok(Exit::Ok)
}

/// The routes a user gave, without the `/fn/NAME` ones every function has.
fn own_routes(function: &Value) -> Vec<String> {
    let name = function["name"].as_str().unwrap_or("");
    let prefix = format!("/fn/{name}");
    function["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .filter_map(Value::as_str)
                .filter(|r| {
                    r.split_once(':')
                        .is_none_or(|(_, path)| !path.starts_with(&prefix))
                })
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn canary_text(canary: &Value) -> String {
    match (canary["version"].as_u64(), canary["weight"].as_f64()) {
        (Some(version), Some(weight)) => format!("v{version} {}", percent(weight)),
        _ => "-".into(),
    }
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p == p.trunc() {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

pub fn get(args: &NameArgs) -> Result<Exit, ClientError> {
    let client = args.target.client()?;
    let f = client.api("GET", &format!("functions/{}", segment(&args.name)), None)?;
    if args.target.json {
        super::out_json(&f);
        return Ok(Exit::Ok);
    }
    let routes = f["routes"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let name = cell(&f["name"]);
    let mut text = String::new();
    let mut line = |label: &str, value: String| text.push_str(&format!("{label:<9}{value}\n"));
    line("name", name.clone());
    line("runtime", cell(&f["runtime"]));
    line("live", format!("version {}", cell(&f["live_version"])));
    line("canary", canary_text(&f["canary"]));
    line("latest", format!("version {}", cell(&f["latest_version"])));
    line("url", format!("{}{}", client.base(), cell(&f["url_path"])));
    line("routes", routes);
    line("created", time_cell(&f["created"]));
    line("updated", time_cell(&f["updated"]));
    super::out(&text);
    Ok(Exit::Ok)
}

pub fn delete(args: &NameArgs) -> Result<Exit, ClientError> {
    let answer = args.target.client()?.api(
        "DELETE",
        &format!("functions/{}", segment(&args.name)),
        None,
    )?;
    if args.target.json {
        super::out_json(&answer);
    } else {
        super::out(&format!("deleted {}\n", args.name));
    }
    Ok(Exit::Ok)
}

pub fn versions(args: &NameArgs) -> Result<Exit, ClientError> {
    let client = args.target.client()?;
    let name = segment(&args.name);
    let answer = client.api("GET", &format!("functions/{name}/versions"), None)?;
    if args.target.json {
        super::out_json(&answer);
        return Ok(Exit::Ok);
    }
    // Which one is live is the function's, not the versions' answer.
    let function = client.api("GET", &format!("functions/{name}"), None)?;
    let live = function["live_version"].as_u64();
    let canary = function["canary"]["version"].as_u64();
    let mut table = Table::new(&[
        "VERSION", "ALIAS", "RUNTIME", "ARTIFACT", "CREATED", "ROUTES",
    ]);
    let empty = Vec::new();
    for v in answer["versions"].as_array().unwrap_or(&empty) {
        let number = v["version"].as_u64();
        let mark = if number.is_some() && number == live {
            "live"
        } else if number.is_some() && number == canary {
            "canary"
        } else {
            ""
        };
        table.row(vec![
            cell(&v["version"]),
            mark.into(),
            cell(&v["runtime"]),
            v["artifact_sha256"]
                .as_str()
                .map(|s| s.chars().take(12).collect())
                .unwrap_or_else(|| "-".into()),
            time_cell(&v["created"]),
            v["routes"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
        ]);
    }
    super::out(&table.render());
    Ok(Exit::Ok)
}

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// The function's name.
    pub name: String,
    /// The version to serve (default: the one before the live one).
    #[arg(long)]
    pub to: Option<u32>,
    #[command(flatten)]
    pub target: Target,
}

pub fn rollback(args: &RollbackArgs) -> Result<Exit, ClientError> {
    let body = match args.to {
        Some(version) => json!({ "version": version }),
        None => json!({}),
    };
    let answer = args.target.client()?.api(
        "POST",
        &format!("functions/{}/rollback", segment(&args.name)),
        Some(&body),
    )?;
    if args.target.json {
        super::out_json(&answer);
    } else {
        super::out(&format!(
            "{}: live is version {}\n",
            args.name,
            cell(&answer["live_version"])
        ));
    }
    Ok(Exit::Ok)
}

#[derive(Debug, Clone, Args)]
pub struct CanaryArgs {
    /// The function's name.
    pub name: String,
    /// The version that gets the share.
    #[arg(long, required_unless_present = "off", conflicts_with = "off")]
    pub version: Option<u32>,
    /// The share of the requests it gets, 0..=1.
    #[arg(long, default_value_t = 0.1, conflicts_with = "off")]
    pub weight: f64,
    /// Stop the canary: every request to the live version.
    #[arg(long)]
    pub off: bool,
    #[command(flatten)]
    pub target: Target,
}

pub fn canary(args: &CanaryArgs) -> Result<Exit, ClientError> {
    if !(0.0..=1.0).contains(&args.weight) {
        return Err(ClientError::Usage(format!(
            "--weight {} is outside 0..=1",
            args.weight
        )));
    }
    let client = args.target.client()?;
    let name = segment(&args.name);
    // The alias is set whole: the live version stays what it is.
    let function = client.api("GET", &format!("functions/{name}"), None)?;
    let live = function["live_version"].as_u64().ok_or_else(|| {
        ClientError::Failed(format!("{}: the server named no live version", args.name))
    })?;
    let canary = match args.version {
        Some(version) if !args.off => json!({ "version": version, "weight": args.weight }),
        _ => Value::Null,
    };
    let answer = client.api(
        "PUT",
        &format!("functions/{name}/aliases/live"),
        Some(&json!({ "version": live, "canary": canary })),
    )?;
    if args.target.json {
        super::out_json(&answer);
    } else if canary.is_null() {
        super::out(&format!(
            "{}: no canary; every request to version {live}\n",
            args.name
        ));
    } else {
        super::out(&format!(
            "{}: {} of the requests to version {}, the rest to version {live}\n",
            args.name,
            percent(args.weight),
            cell(&canary["version"])
        ));
    }
    Ok(Exit::Ok)
}

#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// The function's name.
    pub name: String,
    /// The window: `30s`, `5m`, `1h` (at most 1h).
    #[arg(long, default_value = "5m")]
    pub window: String,
    #[command(flatten)]
    pub target: Target,
}

pub fn stats(args: &StatsArgs) -> Result<Exit, ClientError> {
    let query = client::query(&[("window", Some(args.window.clone()))]);
    let s = args.target.client()?.api(
        "GET",
        &format!("functions/{}/stats{query}", segment(&args.name)),
        None,
    )?;
    if args.target.json {
        super::out_json(&s);
        return Ok(Exit::Ok);
    }
    let count = s["count"].as_u64().unwrap_or(0);
    let mut text = format!("{} over {}: ", args.name, cell(&s["window"]));
    if count == 0 {
        text.push_str("no calls\n");
        super::out(&text);
        return Ok(Exit::Ok);
    }
    text.push_str(&format!(
        "{count} calls, {:.1} req/s, {} errors\n",
        s["rps"].as_f64().unwrap_or(0.0),
        percent(s["error_rate"].as_f64().unwrap_or(0.0))
    ));
    let latency = &s["latency_us"];
    let points: Vec<String> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .filter_map(|p| latency[*p].as_u64().map(|us| format!("{p} {}", micros(us))))
        .collect();
    if !points.is_empty() {
        text.push_str(&format!("latency   {}\n", points.join(", ")));
    }
    for (label, field) in [
        ("status", "status"),
        ("failures", "failures"),
        ("throttled", "throttled"),
    ] {
        if let Some(counts) = nonzero_counts(&s[field]) {
            text.push_str(&format!("{label:<10}{counts}\n"));
        }
    }
    text.push_str(&format!(
        "{:<10}{} cold starts, {} in flight\n",
        "hosts",
        s["cold_starts"].as_u64().unwrap_or(0),
        s["in_flight"].as_u64().unwrap_or(0)
    ));
    super::out(&text);
    Ok(Exit::Ok)
}

/// `2xx 1188, 5xx 12` of an object of counts, None when all are zero.
fn nonzero_counts(value: &Value) -> Option<String> {
    let parts: Vec<String> = value
        .as_object()?
        .iter()
        .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| format!("{k} {n}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}
