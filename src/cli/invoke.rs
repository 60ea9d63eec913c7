//! `corefn invoke NAME`: one call of a function on its own URL
//! (`/fn/NAME`), the body it answered on stdout; with `--async`, a queued
//! invocation through the API (`POST …/functions/NAME/invocations`), and
//! `invocation ID` / `invocations` to read them back.
//!
//! Owns: the request a call sends (method, headers, data from an argument,
//! a file or stdin) and how an answer is shown. May call:
//! [`super::client`]. Must never send the admin key file's key to a
//! function: a function's code sees its request headers, so only a key
//! given on purpose (`--key`, `COREFN_KEY`) goes with a call.

use std::io::{Read, Write};
use std::path::Path;

use clap::Args;
use serde_json::Value;

use super::client::{self, segment, Body, ClientError, Request};
use super::table::Table;
use super::{cell, Exit, Target};

/// The largest body read from a file or stdin for `--data`: the server's
/// own default `--max-body`, so what it would refuse is refused here.
const DATA_BYTES_MAX: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Args)]
pub struct InvokeArgs {
    /// The function's name.
    pub name: String,
    /// The request body: JSON (or any text), `@FILE`, or `-` for stdin.
    #[arg(long, short = 'd', value_name = "JSON|@FILE|-")]
    pub data: Option<String>,
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H', value_name = "K:V", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The method (default: POST with --data, else GET).
    #[arg(long, short = 'X')]
    pub method: Option<String>,
    /// A path below the function's own (`/users/7?full=1`).
    #[arg(long, default_value = "")]
    pub path: String,
    /// Queue the call instead of waiting for it; prints the invocation's id.
    #[arg(long = "async")]
    pub run_async: bool,
    /// Call this version instead of what `live` serves.
    #[arg(long)]
    pub version: Option<u32>,
    /// Also print the status line and headers, on stderr.
    #[arg(long, short = 'i')]
    pub include: bool,
    #[command(flatten)]
    pub target: Target,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("{text:?} is not `Name: value`")),
    }
}

/// `--data` as bytes: the text itself, a file's content, or stdin.
fn read_data(data: &str) -> Result<Vec<u8>, ClientError> {
    let bounded = |reader: &mut dyn Read, what: &str| -> Result<Vec<u8>, ClientError> {
        let mut bytes = Vec::new();
        reader
            .take(DATA_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::Usage(format!("cannot read {what}: {e}")))?;
        if bytes.len() as u64 > DATA_BYTES_MAX {
            return Err(ClientError::Usage(format!(
                "{what} is larger than {DATA_BYTES_MAX} bytes"
            )));
        }
        Ok(bytes)
    };
    if data == "-" {
        return bounded(&mut std::io::stdin().lock(), "stdin");
    }
    if let Some(file) = data.strip_prefix('@') {
        let mut opened = std::fs::File::open(Path::new(file))
            .map_err(|e| ClientError::Usage(format!("--data @{file}: {e}")))?;
        return bounded(&mut opened, file);
    }
    Ok(data.as_bytes().to_vec())
}

/// The headers of a call: the user's, plus a content type when data goes
/// without one (JSON when it parses as JSON).
fn call_headers(args: &InvokeArgs, data: Option<&[u8]>) -> Vec<(String, String)> {
    let mut headers = args.headers.clone();
    let has = |headers: &[(String, String)], name: &str| {
        headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if let Some(data) = data {
        if !has(&headers, "content-type") {
            let kind = if serde_json::from_slice::<Value>(data).is_ok() {
                "application/json"
            } else {
                "application/octet-stream"
            };
            headers.push(("content-type".into(), kind.into()));
        }
    }
    if let Some(version) = args.version {
        if !args.run_async {
            headers.push(("x-corefn-version".into(), version.to_string()));
        }
    }
    headers
}

pub fn run(args: &InvokeArgs) -> Result<Exit, ClientError> {
    let data = args.data.as_deref().map(read_data).transpose()?;
    let headers = call_headers(args, data.as_deref());
    if args.run_async {
        return run_async(args, headers, data);
    }
    // The function's call carries only a key given on purpose.
    let key = args.target.key.clone();
    let client = client::Client::new(&args.target.url, key)?;
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| if data.is_some() { "POST" } else { "GET" }.into())
        .to_ascii_uppercase();
    let suffix = match args.path.as_str() {
        "" => String::new(),
        path if path.starts_with('/') || path.starts_with('?') => path.to_string(),
        path => format!("/{path}"),
    };
    let mut request = Request::new(&method, format!("/fn/{}{suffix}", segment(&args.name)));
    request.headers = headers;
    request.body = data.map(Body::Bytes);
    // A function bounds itself (its timeout_ms); the CLI waits for it.
    request.timeout = None;
    let response = client.send(request)?;
    let status = response.status();
    if args.include {
        let mut head = format!("HTTP/1.1 {status}\n");
        for (name, value) in response.headers() {
            head.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        eprint!("{head}");
    }
    let mut body = response.into_body().into_reader();
    let mut stdout = std::io::stdout().lock();
    let copied = std::io::copy(&mut body, &mut stdout);
    let _ = stdout.flush();
    if let Err(error) = copied {
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(ClientError::Failed(format!(
                "{}: the answer broke off: {error}",
                args.name
            )));
        }
    }
    if status.is_success() {
        Ok(Exit::Ok)
    } else {
        eprintln!("corefn: {} answered {status}", args.name);
        Ok(Exit::Refused)
    }
}

fn run_async(
    args: &InvokeArgs,
    headers: Vec<(String, String)>,
    data: Option<Vec<u8>>,
) -> Result<Exit, ClientError> {
    let client = args.target.client()?;
    let query = client::query(&[("version", args.version.map(|v| v.to_string()))]);
    let mut request = Request::new(
        "POST",
        format!(
            "{}functions/{}/invocations{query}",
            client::API_PREFIX,
            segment(&args.name)
        ),
    );
    request.headers = headers;
    request.body = Some(Body::Bytes(data.unwrap_or_default()));
    let answer = client::json_answer(client.send(request)?)?;
    if args.target.json {
        super::out_json(&answer);
    } else {
        super::out(&format!("{}\n", cell(&answer["id"])));
    }
    Ok(Exit::Ok)
}

#[derive(Debug, Clone, Args)]
pub struct InvocationArgs {
    /// The invocation's id, as `invoke --async` printed it.
    pub id: String,
    #[command(flatten)]
    pub target: Target,
}

pub fn invocation(args: &InvocationArgs) -> Result<Exit, ClientError> {
    let client = args.target.client()?;
    let answer = client.api("GET", &format!("invocations/{}", segment(&args.id)), None)?;
    if args.target.json {
        super::out_json(&answer);
        return Ok(Exit::Ok);
    }
    let mut text = String::new();
    for (label, field) in [
        ("id", "id"),
        ("function", "function"),
        ("state", "state"),
        ("created", "created"),
        ("updated", "updated"),
        ("status", "status"),
        ("error", "error"),
    ] {
        text.push_str(&format!(
            "{label:<10}{}\n",
            super::time_cell(&answer[field])
        ));
    }
    text.push_str(&format!(
        "{:<10}{} of {}\n",
        "attempts",
        cell(&answer["attempts"]),
        cell(&answer["max_attempts"])
    ));
    super::out(&text);
    match (&answer["body"], answer.get("body_base64")) {
        (Value::String(body), _) => super::out(&format!("\n{body}")),
        (_, Some(Value::String(encoded))) => super::out(&format!(
            "\n(a body of {} base64 characters that is not UTF-8; see --json)\n",
            encoded.len()
        )),
        _ => {}
    }
    Ok(Exit::Ok)
}

#[derive(Debug, Clone, Args)]
pub struct InvocationsArgs {
    /// Only this function's.
    #[arg(long)]
    pub function: Option<String>,
    /// Only those in this state.
    #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "dead"])]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub target: Target,
}

pub fn invocations(args: &InvocationsArgs) -> Result<Exit, ClientError> {
    let client = args.target.client()?;
    let query = client::query(&[
        ("function", args.function.clone()),
        ("state", args.state.clone()),
        ("limit", args.limit.map(|l| l.to_string())),
    ]);
    let answer = client.api("GET", &format!("invocations{query}"), None)?;
    if args.target.json {
        super::out_json(&answer);
        return Ok(Exit::Ok);
    }
    let empty = Vec::new();
    let list = answer["invocations"].as_array().unwrap_or(&empty);
    if list.is_empty() {
        super::out("no invocations\n");
        return Ok(Exit::Ok);
    }
    let mut table = Table::new(&[
        "ID", "FUNCTION", "STATE", "ATTEMPTS", "STATUS", "UPDATED", "ERROR",
    ]);
    for item in list {
        table.row(vec![
            cell(&item["id"]),
            cell(&item["function"]),
            cell(&item["state"]),
            format!(
                "{}/{}",
                cell(&item["attempts"]),
                cell(&item["max_attempts"])
            ),
            cell(&item["status"]),
            super::time_cell(&item["updated"]),
            cell(&item["error"]),
        ]);
    }
    super::out(&table.render());
    Ok(Exit::Ok)
}
