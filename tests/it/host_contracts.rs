//! The language hosts' own contract tests (`runtimes/python/test_host.py`,
//! `runtimes/node/test_host.js`): each starts the host as a real process on
//! real pipes and speaks the frame protocol of `runtimes/PROTOCOL.md` to it.
//! Run here so that `cargo test` covers them.
use std::path::Path;
use std::process::Command;

fn run(program: &str, args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(program)
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{text}");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        output.status
    );
}

#[test]
fn python_host_keeps_its_contract() {
    run(
        "python3",
        &[
            "-m",
            "unittest",
            "discover",
            "-s",
            "runtimes/python",
            "-p",
            "test_*.py",
        ],
    );
}

#[test]
fn node_host_keeps_its_contract() {
    run("node", &["--test", "runtimes/node/test_host.js"]);
}
