//! A corefn server with workers and the control API: deploys, reads and
//! the admin key, over loopback.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::*;

/// How long a deploy may take to answer. A deploy compiles (wasmtime for
/// wat, python3 for a syntax check), which a machine busy with a release
/// build can slow past the harness's 5 s read timeout (meant for requests
/// that should be quick); the gateway's own bound is
/// `--compile-timeout-ms` plus a little.
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

/// A server with workers, an empty route table and its admin key.
pub struct ControlServer {
    pub server: WorkerServer,
    pub admin_key: String,
    functions: tempfile::TempDir,
}

impl ControlServer {
    pub fn start() -> ControlServer {
        ControlServer::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> ControlServer {
        let functions = crate::common::tempdir().expect("functions dir");
        let mut args = vec!["--store-dir", "store"];
        args.extend_from_slice(extra_args);
        let server = WorkerServer::start(&[], functions.path(), &args);
        let key_file = server.db_path().with_extension("admin-key");
        let admin_key = std::fs::read_to_string(&key_file)
            .unwrap_or_else(|e| panic!("admin key at {}: {e}", key_file.display()))
            .trim()
            .to_string();
        ControlServer {
            server,
            admin_key,
            functions,
        }
    }

    /// The server's --functions-dir, where hand-written rows' modules go.
    pub fn functions_dir(&self) -> &std::path::Path {
        self.functions.path()
    }

    pub fn store_dir(&self) -> PathBuf {
        self.server.dir().join("store")
    }

    /// One API request with `key` (None: no Authorization header).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let body = body.map(Value::to_string).unwrap_or_default();
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let raw = format!(
            "{method} /_/api/v1/{path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        send(self.server.addr(), raw.as_bytes())
    }

    /// `POST /_/api/v1/functions` with the admin key and a body of any type.
    pub fn deploy_raw(&self, content_type: &str, body: &[u8]) -> Response {
        let mut raw = format!(
            "POST /_/api/v1/functions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.admin_key,
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        send(self.server.addr(), &raw)
    }

    /// `POST /_/api/v1/functions` with the admin key and a JSON body,
    /// waiting up to [`DEPLOY_TIMEOUT`] for the answer.
    pub fn deploy_json(&self, body: &Value) -> Response {
        let body = body.to_string();
        let raw = format!(
            "POST /_/api/v1/functions HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.admin_key,
            body.len()
        );
        let mut c = Conn::connect(self.server.addr());
        c.stream()
            .set_read_timeout(Some(DEPLOY_TIMEOUT))
            .expect("set the deploy's read timeout");
        c.write(raw.as_bytes());
        c.read_response()
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.call(method, path, Some(&self.admin_key), body)
    }

    /// GET `path` until it answers `want` (the watcher publishes within ms).
    pub fn served(&self, path: &str, want: &str) -> Response {
        let mut last = None;
        let found = wait_until(Duration::from_secs(5), || {
            let r = get(self.server.addr(), path);
            let ok = r.status == 200 && r.text() == want;
            last = Some(r);
            ok
        });
        let last = last.expect("at least one try");
        assert!(
            found.is_some(),
            "{path} never answered {want:?}; last {} {:?}",
            last.status,
            last.text()
        );
        last
    }
}
