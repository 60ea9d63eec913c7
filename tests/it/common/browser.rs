//! A real headless Chromium, driven over WebDriver by a real chromedriver
//! on a loopback port: the console's tests click, type and read what a
//! person would, and read the browser's console log.
//!
//! WebDriver is JSON over HTTP, so the harness's own HTTP client speaks it;
//! every wait is bounded and every failure names what was awaited.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// A command may start the browser or load a page: more than the
/// harness's quick-request timeout on a busy machine.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// What a page is given to show something.
pub const WAIT: Duration = Duration::from_secs(15);
const WINDOW_WIDTH: u64 = 1280;
const WINDOW_HEIGHT: u64 = 1000;
const SCREENSHOT_HEIGHT_MAX: u64 = 4000;
/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// chromedriver on a free port, and one session of headless Chromium
    /// that keeps its console log.
    pub fn start() -> Browser {
        for tool in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: the console's tests need Debian's chromium and chromium-driver"
            );
        }
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
        let profile = tempfile::tempdir().expect("browser profile dir");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let ready = wait_until(WAIT, || {
            Conn::try_connect(addr).is_ok()
                && browser.raw("GET", "/status", None).1["value"]["ready"] == json!(true)
        });
        assert!(ready.is_some(), "chromedriver on {addr} never became ready");
        let profile_arg = format!("--user-data-dir={}", browser._profile.path().display());
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    // Root in a container: no setuid sandbox.
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000",
                             "--no-first-run", "--no-default-browser-check",
                             "--disable-background-networking", profile_arg],
                },
                "goog:loggingPrefs": {"browser": "ALL"},
            }}
        });
        let (status, answer) = browser.raw("POST", "/session", Some(&capabilities));
        assert_eq!(status, 200, "new WebDriver session: {answer}");
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {answer}"))
            .to_string();
        browser
    }

    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(Value::to_string).unwrap_or_default();
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut c = Conn::connect(self.addr);
        c.stream()
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .expect("set the WebDriver read timeout");
        c.write(raw.as_bytes());
        let r = c.read_response();
        let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, value)
    }

    /// One command of this session; a WebDriver error fails the test.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.try_command(method, path, body);
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer
    }

    fn try_command(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let path = format!("/session/{}{path}", self.session);
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        let (status, answer) = self.raw(method, &path, body.as_ref());
        (status, answer["value"].clone())
    }

    pub fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` in the page (its `arguments` are `args`).
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    fn try_find(&self, css: &str) -> Option<String> {
        let (status, value) = self.try_command(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        (status == 200)
            .then(|| value[ELEMENT_KEY].as_str().map(str::to_string))
            .flatten()
    }

    /// The element `css` selects, once it is there.
    fn find(&self, css: &str) -> String {
        let mut found = None;
        wait_until(WAIT, || {
            found = self.try_find(css);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no element {css:?} within {WAIT:?}; page:\n{}",
                self.text("body")
            )
        })
    }

    /// Clicks `css`. The pages redraw what they poll, so an element found
    /// may be replaced before the click lands: then it is found again.
    pub fn click(&self, css: &str) {
        let mut last = Value::Null;
        let clicked = wait_until(WAIT, || {
            let element = self.find(css);
            let (status, answer) =
                self.try_command("POST", &format!("/element/{element}/click"), None);
            last = answer;
            status == 200 || !is_stale(&last)
        });
        assert!(
            clicked.is_some() && !is_stale(&last) && last.get("error").is_none(),
            "click {css:?}: {last}"
        );
    }

    /// Types `text` into the field `css` after clearing it (a file input
    /// takes a path).
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        let is_file = self.script(
            "return arguments[0].type === 'file'",
            json!([{ ELEMENT_KEY: element }]),
        ) == json!(true);
        if !is_file {
            self.command("POST", &format!("/element/{element}/clear"), None);
        }
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Picks the option `value` of the select `css`.
    pub fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    /// The rendered text of `css` (empty when it is not there), read in
    /// one step in the page, so a redraw cannot come in between.
    pub fn text(&self, css: &str) -> String {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : ''",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Waits until the text of `css` contains `want`; returns that text.
    pub fn wait_text(&self, css: &str, want: &str) -> String {
        let mut last = String::new();
        let found = wait_until(WAIT, || {
            last = self.text(css);
            last.contains(want)
        });
        assert!(
            found.is_some(),
            "{css:?} never showed {want:?} within {WAIT:?}; it showed {last:?}; page:\n{}",
            self.text("body")
        );
        last
    }

    /// How many elements `css` selects now.
    pub fn count(&self, css: &str) -> usize {
        self.script(
            "return document.querySelectorAll(arguments[0]).length",
            json!([css]),
        )
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// A PNG of the whole page (the window grown to its height for the
    /// shot), written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let height = self
            .script(
                "window.scrollTo(0, 0); return document.documentElement.scrollHeight",
                json!([]),
            )
            .as_u64()
            .unwrap_or(WINDOW_HEIGHT)
            .clamp(WINDOW_HEIGHT, SCREENSHOT_HEIGHT_MAX);
        self.command(
            "POST",
            "/window/rect",
            Some(json!({ "width": WINDOW_WIDTH, "height": height })),
        );
        let encoded = self.command("GET", "/screenshot", None);
        self.command(
            "POST",
            "/window/rect",
            Some(json!({ "width": WINDOW_WIDTH, "height": WINDOW_HEIGHT })),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("the screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// The browser console's entries since the last read: `(level,
    /// message)`.
    pub fn console_log(&self) -> Vec<(String, String)> {
        let entries = self.command("POST", "/se/log", Some(json!({ "type": "browser" })));
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or_default().to_string(),
                            e["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn is_stale(answer: &Value) -> bool {
    answer["error"] == "stale element reference"
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; killing only chromedriver
        // would leave it running. Nothing here may panic (this may run
        // while a failed test unwinds).
        if !self.session.is_empty() {
            let raw = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                self.session
            );
            if let Ok(mut c) = Conn::try_connect(self.addr) {
                let _ = c.stream().set_read_timeout(Some(COMMAND_TIMEOUT));
                if c.try_write(raw.as_bytes()).is_ok() {
                    let _ = c.try_read_response(false);
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where a test's screenshots go: under the build's own scratch
/// directory, kept after the run.
pub fn screenshot_dir(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test)
}
