//! Shared harness for the corefn integration tests.
//!
//! Starts the real `corefn` binary on a loopback port with a real SQLite file in
//! a temporary directory, and talks HTTP/1.x to it over plain `TcpStream`s.
//! Every socket read has a timeout so no test can hang.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default timeout for any single socket read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server gets to print its readiness line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

const READY_PREFIX: &str = "corefn listening on";

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

pub struct Server {
    child: Child,
    addr: SocketAddr,
    db: PathBuf,
    dir: tempfile::TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
    startup: Duration,
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A temporary directory others may enter (mode 0755, whatever the
/// umask): the workers of a server started by root run as another user
/// (`nobody`) and must reach the functions below it. Files keep their own
/// modes; corefn makes the database 0600 itself.
pub fn tempdir() -> io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Creates a database at `db` through corefn's own schema migrations and
/// inserts the given route rows.
pub fn create_db(db: &Path, routes: &[(&str, &str)]) {
    let mut conn = rusqlite::Connection::open(db)
        .unwrap_or_else(|e| panic!("open sqlite db {}: {e}", db.display()));
    corefn::schema::migrate(&mut conn).expect("create the schema");
    let now = now_secs();
    for (k, v) in routes {
        conn.execute(
            "INSERT INTO functions(k, v, updated) VALUES (?1, ?2, ?3)",
            rusqlite::params![k, v, now],
        )
        .unwrap_or_else(|e| panic!("insert route {k:?}: {e}"));
    }
}

/// Sets the open-files limit (soft and hard) of the process `command`
/// starts, in the child only.
pub fn limit_open_files(command: &mut Command, limit: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// A port no listener holds, and never one this test process handed out
/// before. All tests share this process and run at the same time: corefn
/// listens with SO_REUSEPORT, so two servers that probed the same free port
/// would both bind it and share its connections; and a port whose server
/// exited stays unused (shutdown tests check that nothing accepts on it).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
        let port = l.local_addr().expect("local_addr of probe listener").port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!(
        "no port that was not handed out before in 1000 probes ({} handed out)",
        handed_out.len()
    );
}

/// Held for their whole run by the tests that load the CPUs on purpose:
/// the two scheduling tests with a spinning function (whose CPU share the
/// scheduler must see), the kill of a worker and the kill storm under a
/// 4-client load, the endless loop that others must be served beside, and
/// the corefn-bench run (which must keep to its request schedule). In one test
/// binary any two of them could run at the same time, and on a small
/// machine they starve each other: a spinning worker stays under the
/// scheduler's "busy" CPU mark, the load generator falls behind. So at most
/// one of them runs at a time; every other test runs beside them as before.
pub fn cpu_heavy_test() -> MutexGuard<'static, ()> {
    static CPU: Mutex<()> = Mutex::new(());
    CPU.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_line_reader<R: Read + Send + 'static>(
    src: R,
    store: Arc<Mutex<Vec<String>>>,
    notify: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    // Store first, then notify: whoever is notified can
                    // already see the line in the store.
                    if let Ok(mut v) = store.lock() {
                        v.push(s.clone());
                    }
                    if let Some(tx) = &notify {
                        let _ = tx.send(s);
                    }
                }
            }
        }
    });
}

/// A started child process that printed its readiness line.
struct Ready {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    startup: Duration,
}

enum Launch {
    Ready(Ready),
    /// Process exited before it became ready (port probably taken): retry.
    ExitedEarly(String),
}

impl Server {
    /// Starts `corefn serve` on a fresh SQLite file holding `routes`.
    pub fn start(routes: &[(&str, &str)], extra_args: &[&str]) -> Server {
        let dir = crate::common::tempdir().expect("create tempdir for server");
        let db = dir.path().join("corefn.db");
        create_db(&db, routes);
        Self::launch(dir, db, extra_args, None)
    }

    /// Starts `corefn serve` with a db path that does not exist yet, so the
    /// server applies its embedded init.sql (schema + demo routes).
    pub fn start_with_demo(extra_args: &[&str]) -> Server {
        let dir = crate::common::tempdir().expect("create tempdir for server");
        let db = dir.path().join("fresh-demo.db");
        assert!(!db.exists(), "demo db path must not exist yet");
        Self::launch(dir, db, extra_args, None)
    }

    /// Starts `corefn serve --db DB` for a db file the caller prepared
    /// (usually inside `dir`, which the Server keeps alive).
    pub fn start_with_db(dir: tempfile::TempDir, db: PathBuf, extra_args: &[&str]) -> Server {
        Self::launch(dir, db, extra_args, None)
    }

    /// As [`Server::start`], with the server's open-files limit (soft and
    /// hard) set to `nofile` before it runs.
    pub fn start_with_nofile(routes: &[(&str, &str)], extra_args: &[&str], nofile: u64) -> Server {
        let dir = crate::common::tempdir().expect("create tempdir");
        let db = dir.path().join("routes.db");
        create_db(&db, routes);
        Self::launch(dir, db, extra_args, Some(nofile))
    }

    fn launch(
        dir: tempfile::TempDir,
        db: PathBuf,
        extra_args: &[&str],
        nofile: Option<u64>,
    ) -> Server {
        let mut failures = Vec::new();
        for _attempt in 0..5 {
            match Self::try_launch(dir.path(), &db, extra_args, nofile) {
                Ok(Launch::Ready(r)) => {
                    return Server {
                        child: r.child,
                        addr: r.addr,
                        db,
                        dir,
                        stdout: r.stdout,
                        stderr: r.stderr,
                        exit: None,
                        startup: r.startup,
                    }
                }
                Ok(Launch::ExitedEarly(msg)) => failures.push(msg),
                Err(msg) => panic!("corefn did not become ready: {msg}"),
            }
        }
        panic!(
            "corefn exited before becoming ready on every attempt:\n{}",
            failures.join("\n---\n")
        );
    }

    fn try_launch(
        dir: &Path,
        db: &Path,
        extra_args: &[&str],
        nofile: Option<u64>,
    ) -> Result<Launch, String> {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let bin = env!("CARGO_BIN_EXE_corefn");
        let t0 = Instant::now();
        let mut command = Command::new(bin);
        if let Some(limit) = nofile {
            limit_open_files(&mut command, limit);
        }
        let mut child = command
            .arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--db")
            .arg(db)
            .args(extra_args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {bin}: {e}"))?;
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        spawn_line_reader(
            child.stdout.take().expect("child stdout is piped"),
            stdout_lines.clone(),
            Some(tx),
        );
        spawn_line_reader(
            child.stderr.take().expect("child stderr is piped"),
            stderr_lines.clone(),
            None,
        );
        let collected = |status: &str| {
            // Give the reader threads a moment to collect the last lines.
            thread::sleep(Duration::from_millis(50));
            let err = stderr_lines
                .lock()
                .map(|v| v.join("\n"))
                .unwrap_or_default();
            let out = stdout_lines
                .lock()
                .map(|v| v.join("\n"))
                .unwrap_or_default();
            format!("corefn on {listen}: {status}\nstdout:\n{out}\nstderr:\n{err}")
        };

        let deadline = t0 + READY_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) if line.starts_with(READY_PREFIX) => {
                    return Ok(Launch::Ready(Ready {
                        child,
                        addr: listen.parse().expect("parse listen addr"),
                        stdout: stdout_lines.clone(),
                        stderr: stderr_lines.clone(),
                        startup: t0.elapsed(),
                    }));
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting; see try_wait below.
                    thread::sleep(Duration::from_millis(20));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(Launch::ExitedEarly(collected(&format!(
                    "exited early with {status}"
                ))));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(collected(&format!(
                    "no `{READY_PREFIX}` line within {READY_TIMEOUT:?}"
                )));
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// The server's temporary directory (deleted when the Server is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            io::Error::last_os_error()
        );
    }

    /// Polls until the process exits or `timeout` passes.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exit {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.exit = Some(s);
                    return Some(s);
                }
                Ok(None) => {}
                Err(e) => panic!("try_wait on corefn: {e}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Prints stdout/stderr of the server (used on failure).
    pub fn dump_output(&self) {
        eprintln!("==== corefn stdout ({}) ====", self.addr);
        for l in self.stdout_lines() {
            eprintln!("{l}");
        }
        eprintln!("==== corefn stderr ({}) ====", self.addr);
        for l in self.stderr_lines() {
            eprintln!("{l}");
        }
        eprintln!("==== end corefn output ====");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        if thread::panicking() {
            thread::sleep(Duration::from_millis(20));
            self.dump_output();
        }
    }
}

/// Parsed readiness line: `corefn listening on http://ADDR (cores: N, routes: M)`.
/// Extra `name: value` fields inside the parentheses are tolerated.
#[derive(Debug)]
pub struct Readiness {
    pub url: String,
    pub fields: Vec<(String, String)>,
}

impl Readiness {
    pub fn parse(line: &str) -> Result<Readiness, String> {
        let rest = line
            .strip_prefix("corefn listening on ")
            .ok_or_else(|| format!("not a readiness line: {line:?}"))?;
        let (url, fields) = rest
            .split_once(" (")
            .ok_or_else(|| format!("no ` (` in readiness line {line:?}"))?;
        let fields = fields
            .strip_suffix(')')
            .ok_or_else(|| format!("readiness line does not end with `)`: {line:?}"))?;
        let fields = fields
            .split(", ")
            .map(|f| {
                f.split_once(": ")
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("field {f:?} is not `name: value` in {line:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Readiness {
            url: url.to_string(),
            fields,
        })
    }

    pub fn field(&self, name: &str) -> Option<u64> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
    }
}

impl Server {
    /// The parsed readiness line this server printed.
    pub fn readiness(&self) -> Readiness {
        let lines = self.stdout_lines();
        let ready: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with(READY_PREFIX))
            .collect();
        assert_eq!(ready.len(), 1, "exactly one readiness line: {lines:?}");
        Readiness::parse(ready[0]).unwrap_or_else(|e| panic!("{e}"))
    }
}

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header names lowercased, in order of appearance.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(n, _)| *n == name).count()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// True if the `connection` header contains the token `close`.
    pub fn is_connection_close(&self) -> bool {
        self.connection_has("close")
    }

    pub fn connection_has(&self, token: &str) -> bool {
        self.header("connection")
            .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// One client connection with a read buffer that keeps leftover bytes
/// (for pipelined responses).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    peer_closed: bool,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connect to corefn at {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        assert!(addr.ip().is_loopback(), "tests only talk to 127.0.0.1");
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            peer_closed: false,
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn write(&mut self, raw: &[u8]) {
        self.try_write(raw)
            .unwrap_or_else(|e| panic!("write {} bytes to corefn: {e}", raw.len()));
    }

    pub fn try_write(&mut self, raw: &[u8]) -> io::Result<()> {
        self.stream.write_all(raw)?;
        self.stream.flush()
    }

    /// Bytes received but not yet consumed by a parsed response.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more bytes into the buffer. Ok(0) means EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.peer_closed {
            return Ok(0);
        }
        let mut tmp = [0u8; 65536];
        let n = self.stream.read(&mut tmp)?;
        if n == 0 {
            self.peer_closed = true;
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn fill_or_err(&mut self, what: &str) -> Result<(), String> {
        match self.fill() {
            Ok(0) => Err(format!(
                "connection closed by server while reading {what}; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            )),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(format!(
                "timed out ({IO_TIMEOUT:?}) reading {what}; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            )),
            Err(e) => Err(format!(
                "read error while reading {what}: {e}; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            )),
        }
    }

    /// Reads one response. Panics with a clear message if none arrives.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false)
            .unwrap_or_else(|e| panic!("reading HTTP response: {e}"))
    }

    /// Reads one response to a HEAD request (no body expected).
    pub fn read_response_to_head_request(&mut self) -> Response {
        self.try_read_response(true)
            .unwrap_or_else(|e| panic!("reading HTTP response to HEAD: {e}"))
    }

    pub fn try_read_response(&mut self, head_request: bool) -> Result<Response, String> {
        // Parse the head.
        let (head_len, mut resp) = loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; 128];
                let mut r = httparse::Response::new(&mut headers);
                match r.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let resp = Response {
                            status: r.code.unwrap_or(0),
                            reason: r.reason.unwrap_or("").to_string(),
                            version: r.version.unwrap_or(1),
                            headers: r
                                .headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.name.to_ascii_lowercase(),
                                        String::from_utf8_lossy(h.value).into_owned(),
                                    )
                                })
                                .collect(),
                            body: Vec::new(),
                        };
                        break (n, resp);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        return Err(format!(
                            "malformed response head ({e}): {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ))
                    }
                }
            }
            self.fill_or_err("response head")?;
        };
        self.buf.drain(..head_len);

        let no_body = head_request
            || (100..200).contains(&resp.status)
            || resp.status == 204
            || resp.status == 304;
        if no_body {
            return Ok(resp);
        }
        if let Some(cl) = resp.header("content-length") {
            let len: usize = cl
                .trim()
                .parse()
                .map_err(|e| format!("bad content-length {cl:?} in response: {e}"))?;
            while self.buf.len() < len {
                self.fill_or_err("response body")?;
            }
            resp.body = self.buf.drain(..len).collect();
            return Ok(resp);
        }
        // No content-length (the spec says every response has one): read to EOF.
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_reset(&e) => break,
                Err(e) => {
                    return Err(format!(
                        "response without content-length and read failed: {e}"
                    ))
                }
            }
        }
        resp.body = std::mem::take(&mut self.buf);
        Ok(resp)
    }

    /// True if the server closes the connection (EOF or reset) within
    /// `timeout`. Any bytes arriving meanwhile are kept in the buffer
    /// (see [`Conn::buffered`]).
    pub fn is_closed_by_peer(&mut self, timeout: Duration) -> bool {
        if self.peer_closed {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let result = loop {
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            let remaining = (deadline - now).max(Duration::from_millis(1));
            if self.stream.set_read_timeout(Some(remaining)).is_err() {
                break true;
            }
            match self.fill() {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if is_timeout(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.peer_closed = true;
                    break true;
                }
            }
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        result
    }
}

/// New connection, write `raw`, read one response.
pub fn send(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Conn::connect(addr);
    c.write(raw);
    c.read_response()
}

/// A minimal `GET path HTTP/1.1` request (keep-alive).
pub fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// GET on a new connection that asks the server to close afterwards.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Like [`get`] but returns an error string instead of panicking (for polling).
pub fn try_get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let mut c = Conn::try_connect(addr).map_err(|e| format!("connect: {e}"))?;
    c.try_write(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    c.try_read_response(false)
}

/// GET /_/routes as JSON.
pub fn routes_json(addr: SocketAddr) -> serde_json::Value {
    let r = get(addr, "/_/routes");
    assert_eq!(r.status, 200, "/_/routes status; body {:?}", r.text());
    r.json()
}

// ---------------------------------------------------------------------------
// Route descriptors and SQLite writers
// ---------------------------------------------------------------------------

/// `{"runtime":"static","body":BODY}`
pub fn static_route(body: &str) -> String {
    serde_json::json!({"runtime": "static", "body": body}).to_string()
}

/// Static descriptor with explicit status and headers.
pub fn static_route_full(status: u16, headers: &[(&str, &str)], body: &str) -> String {
    let h: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({"runtime": "static", "status": status, "headers": h, "body": body})
        .to_string()
}

fn writer(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db)
        .unwrap_or_else(|e| panic!("open second sqlite connection to {}: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(5))
        .expect("set sqlite busy_timeout");
    conn
}

pub fn insert_route(db: &Path, k: &str, v: &str) {
    writer(db)
        .execute(
            "INSERT INTO functions(k, v, updated) VALUES (?1, ?2, ?3)",
            rusqlite::params![k, v, now_secs()],
        )
        .unwrap_or_else(|e| panic!("insert route {k:?}: {e}"));
}

/// Inserts several rows in one transaction.
pub fn insert_routes(db: &Path, rows: &[(&str, &str)]) {
    let mut conn = writer(db);
    let tx = conn.transaction().expect("begin sqlite transaction");
    for (k, v) in rows {
        tx.execute(
            "INSERT INTO functions(k, v, updated) VALUES (?1, ?2, ?3)",
            rusqlite::params![k, v, now_secs()],
        )
        .unwrap_or_else(|e| panic!("insert route {k:?}: {e}"));
    }
    tx.commit().expect("commit sqlite transaction");
}

pub fn update_route(db: &Path, k: &str, v: &str) {
    let n = writer(db)
        .execute(
            "UPDATE functions SET v = ?2, updated = ?3 WHERE k = ?1",
            rusqlite::params![k, v, now_secs()],
        )
        .unwrap_or_else(|e| panic!("update route {k:?}: {e}"));
    assert_eq!(n, 1, "update_route {k:?} changed {n} rows");
}

pub fn delete_route(db: &Path, k: &str) {
    let n = writer(db)
        .execute("DELETE FROM functions WHERE k = ?1", rusqlite::params![k])
        .unwrap_or_else(|e| panic!("delete route {k:?}: {e}"));
    assert_eq!(n, 1, "delete_route {k:?} changed {n} rows");
}

/// Polls `f` every 2 ms until it returns true; returns the elapsed time,
/// or None if `timeout` passed first.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------
// Worker pool and wasm functions
// ---------------------------------------------------------------------------

/// The example WebAssembly modules (`examples/wasm`).
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wasm")
}

/// `{"runtime":"wasm","module":MODULE}` plus the keys of `extra` (a JSON
/// object, e.g. `json!({"timeout_ms": 300})`; `Value::Null` for none).
pub fn wasm_route(module: &str, extra: serde_json::Value) -> String {
    let mut descriptor = serde_json::json!({"runtime": "wasm", "module": module});
    if let serde_json::Value::Object(keys) = extra {
        for (k, v) in keys {
            descriptor[k] = v;
        }
    }
    descriptor.to_string()
}

/// A corefn server with a worker pool: `--workers 2`, `--functions-dir`
/// and a `--cache-dir` of its own (a tempdir removed after the server).
/// Derefs to [`Server`].
pub struct WorkerServer {
    // Declared first: dropped (killed) before the directories go.
    pub server: Server,
    /// Kept for its drop, which removes the directory.
    _cache_dir: tempfile::TempDir,
}

impl WorkerServer {
    /// Starts `corefn serve --workers 2 --functions-dir DIR --cache-dir TMP
    /// EXTRA...` on a fresh SQLite file holding `routes`.
    pub fn start(routes: &[(&str, &str)], functions_dir: &Path, extra_args: &[&str]) -> Self {
        let cache_dir = crate::common::tempdir().expect("create tempdir for --cache-dir");
        let functions = functions_dir
            .to_str()
            .expect("functions dir path is UTF-8")
            .to_string();
        let cache = cache_dir
            .path()
            .to_str()
            .expect("cache dir path is UTF-8")
            .to_string();
        let mut args: Vec<&str> = vec![
            "--workers",
            "2",
            "--functions-dir",
            &functions,
            "--cache-dir",
            &cache,
        ];
        args.extend_from_slice(extra_args);
        let server = Server::start(routes, &args);
        WorkerServer {
            server,
            _cache_dir: cache_dir,
        }
    }
}

impl WorkerServer {
    /// The server's `--cache-dir` (compiled modules, host programs).
    pub fn cache_dir(&self) -> &Path {
        self._cache_dir.path()
    }
}

impl std::ops::Deref for WorkerServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for WorkerServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

/// State and parent of a process from `/proc/PID/stat`, None if it is gone.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The pids of every process on the machine, from `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// Every process whose parent is `parent_pid`, with its state letter
/// (zombies included, as `'Z'`).
pub fn child_processes(parent_pid: u32) -> Vec<(u32, char)> {
    let mut children: Vec<(u32, char)> = all_pids()
        .into_iter()
        .filter_map(|pid| {
            let (state, ppid) = proc_state(pid)?;
            (ppid == parent_pid).then_some((pid, state))
        })
        .collect();
    children.sort_unstable();
    children
}

/// The live worker processes of a gateway: its children that are not
/// zombies, sorted.
pub fn worker_pids(gateway_pid: u32) -> Vec<u32> {
    child_processes(gateway_pid)
        .into_iter()
        .filter(|&(_, state)| state != 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Polls until the gateway has `count` live workers (max `timeout`).
pub fn wait_for_workers(gateway_pid: u32, count: usize, timeout: Duration) -> Vec<u32> {
    let mut pids = Vec::new();
    let found = wait_until(timeout, || {
        pids = worker_pids(gateway_pid);
        pids.len() == count
    });
    assert!(
        found.is_some(),
        "gateway {gateway_pid} should have {count} worker processes within {timeout:?}; has {pids:?}"
    );
    pids
}

/// A request with a body (`Content-Length`), keep-alive.
pub fn post_req(path: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// `len` pseudo-random bytes (xorshift64*, seeded from the clock).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
        | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
pub mod browser;
pub mod control;
pub mod functions;
