//! `corefn logs NAME`: a function's log lines from
//! `/_/api/v1/functions/NAME/logs`, as `ts stream text`, or as the
//! server's NDJSON with `--json`; `-f` follows the live tail until
//! interrupted.
//!
//! Owns: the query (`tail`, `since`, `request_id`, `follow`) and the line
//! format. May call: [`super::client`]. Must never hold a followed stream
//! in memory: each line is printed as it arrives.

use std::io::{BufRead, BufReader, Read, Write};

use clap::Args;
use serde_json::Value;

use super::client::{self, segment, ClientError, Request};
use super::{Exit, Target};

/// The longest line a live tail may send; a function's one line of
/// output is bounded on the server well below this.
const LINE_BYTES_MAX: u64 = 1024 * 1024;

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// The function's name.
    pub name: String,
    /// Follow: print new lines as they come, until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines after this: an RFC 3339 time or an age (`30s`, `10m`, `1h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only the last N lines (of the backlog, with -f).
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only the lines of one request.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(args: &LogsArgs) -> Result<Exit, ClientError> {
    let client = args.target.client()?;
    let query = client::query(&[
        ("tail", args.tail.map(|n| n.to_string())),
        ("since", args.since.clone()),
        ("request_id", args.request_id.clone()),
        ("follow", args.follow.then(|| "1".to_string())),
    ]);
    let path = format!("functions/{}/logs{query}", segment(&args.name));
    if !args.follow {
        let bytes = client.api_bytes(&path)?;
        let mut stdout = std::io::stdout().lock();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if write_line(&mut stdout, line, args.target.json).is_err() {
                break;
            }
        }
        return Ok(Exit::Ok);
    }
    let mut request = Request::new("GET", format!("{}{path}", client::API_PREFIX));
    request.timeout = None;
    let response = client.send(request)?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(client::refusal(status, &client::read_all(response)?));
    }
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut stdout = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(LINE_BYTES_MAX)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => break,
            Ok(_) => {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                if write_line(&mut stdout, text, args.target.json).is_err() {
                    // Whoever read our stdout has gone: so do we.
                    break;
                }
            }
            Err(error) => {
                return Err(ClientError::Failed(format!(
                    "the log stream of {} broke off: {error}",
                    args.name
                )))
            }
        }
    }
    Ok(Exit::Ok)
}

/// One log line: raw with `--json`, else `ts stream text`.
fn write_line(out: &mut impl Write, line: &[u8], raw: bool) -> std::io::Result<()> {
    if raw {
        out.write_all(line)?;
        out.write_all(b"\n")?;
        return out.flush();
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(value) => writeln!(
            out,
            "{} {:<6} {}",
            value["ts"].as_str().unwrap_or("-"),
            value["stream"].as_str().unwrap_or("-"),
            value["text"].as_str().unwrap_or("")
        )?,
        // Not a log object: shown as it came rather than dropped.
        Err(_) => writeln!(out, "{}", String::from_utf8_lossy(line))?,
    }
    out.flush()
}
