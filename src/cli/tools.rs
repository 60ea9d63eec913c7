//! `corefn bench` (the corefn-bench load generator of the workspace's
//! `bench/` package, aimed at a route of the server) and `corefn
//! completions` (shell completion scripts).
//!
//! Owns: finding corefn-bench and handing it its arguments. May call:
//! clap_complete and [`crate::config::Cli`] for the command tree. Must
//! never interpret corefn-bench's flags: they pass through as given, so
//! its own `--help` stays the reference.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory};

use super::client::ClientError;
use super::{Exit, DEFAULT_URL};

/// The load generator's executable name.
const BENCH_BINARY: &str = "corefn-bench";

#[derive(Debug, Clone, Args)]
#[command(trailing_var_arg = true)]
pub struct BenchArgs {
    /// The corefn server (a TARGET that is a path goes to it).
    #[arg(long, env = "COREFN_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// A path on the server (`/hello`), a function's name (→ /fn/NAME) or
    /// a whole URL.
    pub target: String,
    /// corefn-bench's own arguments (`-c 4 -d 10 --rate 2000 …`).
    #[arg(allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

pub fn bench(args: &BenchArgs) -> Result<Exit, ClientError> {
    let binary = find_bench()?;
    let base = args.url.trim_end_matches('/');
    let url = if args.target.starts_with("http://") || args.target.starts_with("https://") {
        args.target.clone()
    } else if args.target.starts_with('/') {
        format!("{base}{}", args.target)
    } else {
        format!("{base}/fn/{}", args.target)
    };
    let status = std::process::Command::new(&binary)
        .arg(&url)
        .args(&args.args)
        .status()
        .map_err(|e| ClientError::Usage(format!("cannot run {}: {e}", binary.display())))?;
    // corefn-bench's own status: 0, or its reason for failing.
    Ok(match status.code() {
        Some(0) => Exit::Ok,
        Some(2) => Exit::Usage,
        _ => Exit::Refused,
    })
}

/// corefn-bench next to this executable (as cargo builds both into
/// `target/<profile>/`), else on PATH.
fn find_bench() -> Result<PathBuf, ClientError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(BENCH_BINARY)));
    if let Some(path) = beside.as_ref().filter(|p| is_executable(p)) {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(BENCH_BINARY))
            .find(|p| is_executable(p))
    }) {
        return Ok(path);
    }
    Err(ClientError::Usage(format!(
        "{BENCH_BINARY} is not installed: it is neither next to this corefn{} nor on PATH; \
         build it with `cargo build --release -p corefn-bench` (it lands next to corefn)",
        beside
            .as_ref()
            .and_then(|p| p.parent())
            .map(|dir| format!(" (in {})", dir.display()))
            .unwrap_or_default()
    )))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

pub fn completions(args: &CompletionsArgs) -> Result<Exit, ClientError> {
    let mut command = crate::config::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "corefn", &mut script);
    super::out(&String::from_utf8_lossy(&script));
    Ok(Exit::Ok)
}
