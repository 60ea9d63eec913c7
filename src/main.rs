//! The `corefn` binary: parses the command line and hands over to the gateway,
//! to a client command of a running server (`corefn::cli`), or, started by the
//! supervisor, to a worker process.
#![deny(unsafe_op_in_unsafe_fn)]

use clap::Parser;
use corefn::config::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // With transparent huge pages set to "always", every 2 MiB of mimalloc's
    // eagerly committed arena that a thread touches becomes resident: the
    // idle gateway held 26 MB instead of 11 MB, with no throughput gained
    // (PERFORMANCE.md, Memory). The flag covers later page faults of the
    // whole process. Worker processes inherit it and turn it back off: wasm
    // instances measured slightly faster with huge pages.
    // SAFETY: prctl with PR_SET_THP_DISABLE has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let cli = Cli::parse();
    // `corefn` alone behaves as `corefn serve` with every default.
    let command = cli
        .command
        .or_else(|| Cli::parse_from(["corefn", "serve"]).command);
    let result = match command {
        Some(Command::Serve(options)) => corefn::gateway::serve(options).map_err(|e| e.to_string()),
        Some(Command::Migrate(args)) => migrate(&args.db),
        // Client commands have exit codes of their own (see cli::Exit).
        Some(Command::Client(command)) => return corefn::cli::run(command),
        Some(Command::CheckWasm(args)) => {
            corefn::runtimes::wasm::check_module_file(&args.path, args.cache_dir)
        }
        Some(Command::Worker(args)) => {
            corefn::workers::worker::run(args).map_err(|e| e.to_string())
        }
        None => unreachable!("`corefn serve` always parses to a command"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corefn: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `corefn migrate`: the schema of `db`, created or brought up to date.
fn migrate(db: &std::path::Path) -> Result<(), String> {
    let mut connection =
        rusqlite::Connection::open(db).map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let migrated =
        corefn::schema::migrate(&mut connection).map_err(|e| format!("{}: {e}", db.display()))?;
    println!(
        "{}: schema version {} (was {})",
        db.display(),
        migrated.to,
        migrated.from
    );
    Ok(())
}
