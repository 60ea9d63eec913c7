//! The web console in a real headless Chromium: a person's first visit,
//! done through the pages (the key once, deploy through the form, the
//! list, invoke, the live log, a second version, rollback and canary, a
//! compile error, the workers), with a screenshot of each page and no
//! error in the browser's console besides the ones a step causes on
//! purpose.

use std::path::Path;

use crate::common::browser::{screenshot_dir, Browser};
use crate::common::control::ControlServer;
use crate::common::*;

fn python_hello(version: &str) -> String {
    format!(
        "def handle(request):\n    print('console log line from {version}')\n    \
         return (200, {{'content-type': 'text/plain'}}, 'hello from {version}\\n')\n"
    )
}

/// Console entries at level SEVERE, less those `expected` names (a
/// failed request the step made on purpose shows up as one).
fn unexpected_errors(browser: &Browser, expected: &[&str]) -> Vec<String> {
    browser
        .console_log()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .map(|(_, message)| message)
        .filter(|message| {
            expected.is_empty() || !expected.iter().all(|part| message.contains(part))
        })
        .collect()
}

fn assert_clean_console(browser: &Browser, step: &str) {
    let errors = unexpected_errors(browser, &[]);
    assert!(
        errors.is_empty(),
        "console errors after {step}: {errors:#?}"
    );
}

/// Fills the deploy form at `page` and sends it.
fn deploy_through_form(browser: &Browser, page: &str, name: &str, code: Code<'_>) {
    browser.open(page);
    browser.wait_text("h1", "Deploy a function");
    browser.type_into("#deploy-name", name);
    browser.select("#deploy-runtime", "python");
    match code {
        Code::File(path) => browser.type_into("#deploy-file", &path.display().to_string()),
        Code::Pasted(text) => browser.type_into("#deploy-code", text),
    }
    browser.click("#deploy-submit");
}

enum Code<'a> {
    File(&'a Path),
    Pasted(&'a str),
}

#[test]
fn a_first_visit_deploys_invokes_reads_the_log_and_rolls_back_in_chromium() {
    let s = ControlServer::start();
    let base = format!("http://{}", s.server.addr());
    let deploy_page = format!("{base}/_/ui/#/deploy");
    let shots = screenshot_dir("console");
    let browser = Browser::start();

    // The console asks for a key once and keeps it for the tab.
    browser.open(&format!("{base}/_/ui/"));
    browser.wait_text("#key-dialog", "API key");
    browser.type_into("#key-input", &s.admin_key);
    browser.click("#key-save");
    browser.wait_text("#key-button", "API key: set");
    browser.wait_text("#functions-body", "Nothing deployed yet");
    assert_clean_console(&browser, "the first page");

    // GET /upload is the deploy page; a code file deploys through it.
    let dir = crate::common::tempdir().expect("code dir");
    let main_py = dir.path().join("main.py");
    std::fs::write(&main_py, python_hello("v1")).expect("write main.py");
    deploy_through_form(
        &browser,
        &format!("{base}/upload"),
        "greet",
        Code::File(&main_py),
    );
    let success = browser.wait_text("#deploy-success", "version 1");
    assert!(success.contains("/fn/greet"), "{success}");
    browser.screenshot(&shots.join("deploy.png"));
    s.served("/fn/greet", "hello from v1\n");
    assert_clean_console(&browser, "the deploy");

    // Listed, with its runtime, live version and route.
    browser.click("nav a[data-nav=functions]");
    let row = browser.wait_text("#functions-body tr[data-name=greet]", "python");
    assert!(row.contains("v1") && row.contains("/fn/greet"), "{row}");

    // Invoked from its page: the full response, and the call's log line
    // arriving on the live tail.
    browser.click("#functions-body tr[data-name=greet] a");
    browser.wait_text("h1", "greet");
    browser.wait_text("#live-version", "v1");
    browser.type_into("#invoke-headers", "X-From-Console: yes");
    browser.click("#invoke-send");
    browser.wait_text("#invoke-status", "200");
    assert_eq!(browser.text("#invoke-response-body"), "hello from v1");
    let headers = browser.text("#invoke-response-headers");
    assert!(headers.contains("content-type: text/plain"), "{headers}");
    assert!(headers.contains("x-request-id:"), "{headers}");
    browser.wait_text("#log-tail", "console log line from v1");

    // A second version, pasted; then back to the first from the versions
    // table, and the old code answers again.
    deploy_through_form(
        &browser,
        &deploy_page,
        "greet",
        Code::Pasted(&python_hello("v2")),
    );
    browser.wait_text("#deploy-success", "version 2");
    s.served("/fn/greet", "hello from v2\n");
    browser.open(&format!("{base}/_/ui/#/functions/greet"));
    browser.wait_text("#live-version", "v2");
    browser.click("#versions-body button.rollback[data-version=\"1\"]");
    browser.wait_text("#live-version", "v1");
    browser.wait_text("#notice", "v1 is live");
    s.served("/fn/greet", "hello from v1\n");
    browser.click("#invoke-send");
    browser.wait_text("#invoke-response-body", "hello from v1");

    // A canary share for version 2, set from the page.
    browser.type_into("#canary-version", "2");
    browser.type_into("#canary-weight", "0.25");
    browser.click("#canary-set");
    browser.wait_text("#function-summary", "canary v2 at 25.0%");
    let live = s.admin("GET", "functions/greet", None).json();
    assert_eq!(live["canary"]["version"], 2, "{live}");
    assert_eq!(live["canary"]["weight"], 0.25, "{live}");

    // The charts are drawn from the stats of the calls made.
    for _ in 0..5 {
        get(s.server.addr(), "/fn/greet");
    }
    let drawn = wait_until(WAIT_CHART, || {
        browser.count("#latency-chart svg polyline.p99") == 1
            && browser.count("#percentile-chart svg polyline") == 1
    });
    assert!(
        drawn.is_some(),
        "charts not drawn: {}",
        browser.text("#function-figures")
    );
    browser.wait_text("#function-figures", "Calls");
    browser.screenshot(&shots.join("function.png"));
    assert_clean_console(&browser, "the function page");

    // The workers, as the scheduler sees them.
    browser.click("nav a[data-nav=workers]");
    browser.wait_text("#workers-caption", "As core");
    assert!(browser.count("#workers-body tr[data-worker]") >= 1);
    browser.wait_text("#workers-body", "running");
    browser.screenshot(&shots.join("workers.png"));

    browser.click("nav a[data-nav=functions]");
    browser.wait_text("#functions-body tr[data-name=greet]", "canary v2");
    browser.screenshot(&shots.join("functions.png"));
    assert_clean_console(&browser, "the workers and functions pages");

    // Code that does not compile: the compiler's diagnostics, nothing
    // deployed. The 422 is the one console entry this step may cause.
    deploy_through_form(
        &browser,
        &deploy_page,
        "broken",
        Code::Pasted("def handle(request)\n    return (200, {}, 'never')\n"),
    );
    browser.wait_text("#deploy-error", "422");
    // Python's own words, with the file, line and column.
    let diagnostics = browser.wait_text("#deploy-diagnostics", "expected ':'");
    assert!(diagnostics.contains(":1:"), "{diagnostics}");
    browser.screenshot(&shots.join("deploy-error.png"));
    let errors = unexpected_errors(&browser, &["/_/api/v1/functions", "422"]);
    assert!(
        errors.is_empty(),
        "console errors besides the 422: {errors:#?}"
    );
    assert_eq!(s.admin("GET", "functions/broken", None).status, 404);
}

const WAIT_CHART: std::time::Duration = std::time::Duration::from_secs(15);

#[test]
fn without_a_key_the_console_reads_over_loopback_and_asks_for_a_key_to_write() {
    let s = ControlServer::start();
    let base = format!("http://{}", s.server.addr());
    let deploy_page = format!("{base}/_/ui/#/deploy");
    let browser = Browser::start();
    browser.open(&format!("{base}/_/ui/"));
    browser.wait_text("#key-dialog", "API key");
    browser.click("#key-skip");
    browser.wait_text("#key-button", "API key: none");
    // Reads are open to loopback: the list and the workers load.
    browser.wait_text("#functions-body", "Nothing deployed yet");
    browser.click("nav a[data-nav=workers]");
    browser.wait_text("#workers-caption", "As core");
    assert_clean_console(&browser, "reading without a key");

    // A write is refused, and the console asks for a key with the reason.
    deploy_through_form(
        &browser,
        &deploy_page,
        "nokey",
        Code::Pasted(&python_hello("v1")),
    );
    browser.wait_text("#deploy-error", "401");
    browser.wait_text("#key-reason", "key");
    let open = browser.script(
        "return document.getElementById('key-dialog').open",
        serde_json::json!([]),
    );
    assert_eq!(open, serde_json::json!(true), "the key dialog opened again");
    let errors = unexpected_errors(&browser, &["/_/api/v1/functions", "401"]);
    assert!(
        errors.is_empty(),
        "console errors besides the 401: {errors:#?}"
    );
    assert_eq!(s.admin("GET", "functions/nokey", None).status, 404);
}
