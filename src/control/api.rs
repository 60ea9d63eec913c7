//! The control API, `/_/api/v1/…`: JSON in and out, errors as
//! `{"error": {"code", "message"}}` with their status from
//! [`crate::http::error::ApiError`].
//!
//! | method and path | scope | |
//! | --- | --- | --- |
//! | `GET /_/api/v1/functions` | read | list |
//! | `POST /_/api/v1/functions` | deploy | create, or a new version of, a function |
//! | `GET /_/api/v1/functions/NAME` | read | one function |
//! | `PUT /_/api/v1/functions/NAME` | deploy | new version: code and/or config |
//! | `DELETE /_/api/v1/functions/NAME` | deploy | routes at once, artifacts once unused |
//! | `GET /_/api/v1/functions/NAME/versions` | read | every version |
//! | `POST /_/api/v1/functions/NAME/rollback` | deploy | `live` to the previous version, or `{"version": N}` |
//! | `PUT /_/api/v1/functions/NAME/aliases/live` | deploy | `{"version": N, "canary": {"version": M, "weight": 0.1}}` |
//! | `PUT /_/api/v1/functions/NAME/settings` | deploy | `{"rate_limit": {"rps", "burst"} \| null, "async": {"max_attempts", "max_age_s"} \| null}`, live, no new version |
//! | `GET /_/api/v1/schedules` | read | cron schedules (`?function=NAME`), next and last run |
//! | `POST /_/api/v1/schedules` | deploy | `{"function", "cron", "overlap": "skip"\|"allow"}` |
//! | `GET /_/api/v1/schedules/ID` | read | one schedule |
//! | `DELETE /_/api/v1/schedules/ID` | deploy | stop it |
//! | `POST /_/api/v1/functions/NAME/invocations` | invoke | queue an async call: 202 `{"id"}` once on disk |
//! | `GET /_/api/v1/invocations` | read | async invocations (`?function&state&limit`) |
//! | `GET /_/api/v1/invocations/ID` | read | one: state, attempts, the result |
//! | `POST /_/api/v1/keys` | admin | new key, shown once |
//! | `GET /_/api/v1/keys` | admin | keys without their secrets |
//! | `DELETE /_/api/v1/keys/ID` | admin | revoke |
//!
//! Reads are open to loopback clients without a key; everything else
//! needs `Authorization: Bearer KEY` with the scope (`admin` holds every
//! scope). No key or an unknown one: 401; a key without the scope: 403.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};

use super::follow;
use super::invocations::{self as queue, CallbackUrl, IdMaker};
use super::observe::{self, Observed};
use super::settings::ControlSettings;
use crate::clock;
use crate::http::auth::{self, KeyGrant};
use crate::http::encode::{self, ConnectionHeader, HeadLines};
use crate::http::error::{ApiError, ApiErrorKind};
use crate::http::rules::{self, HEADER_COUNT_MAX};
use crate::registry::artifacts::ArtifactStore;
use crate::registry::code::{self, Toolchain, Upload};
use crate::registry::functions::{check_name, FunctionConfig, Registry, VersionSpec};
use crate::registry::invocations::{self, AsyncPolicy, Invocation, NewInvocation, QueuedRequest};
use crate::registry::keys::{self, Scope};
use crate::registry::schedules::{self, NewSchedule, Overlap, Schedule, Timetable};
use crate::registry::upload::{self, Archive, UploadLimits};
use crate::registry::RegistryError;
use crate::runtimes::descriptor::Runtime;
use crate::schema::file::{Connected, SharedStore, StoreHandle};
use crate::telemetry::logs::{Follower, LogLine, LogQuery};
use crate::telemetry::metrics;
use crate::workers::protocol::{self, Dispatch, DispatchHeader};

use crate::http::rules::API_PATH_PREFIX as API_PREFIX;
/// Largest code of one deploy, after base64 decoding.
pub const CODE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What the control thread keeps between requests.
pub struct ControlState {
    db: StoreHandle,
    store: ArtifactStore,
    tools: Toolchain,
    scratch_root: PathBuf,
    scratch_counter: u64,
    observed: Observed,
    invocation_ids: IdMaker,
    callback_hosts: Vec<String>,
}

/// What an endpoint answers.
pub enum Answer {
    Json(u16, Value),
    /// A body of its own type (`/metrics`, NDJSON logs).
    Body {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// A live log tail: `backlog` first, then what `follower` receives.
    Follow {
        backlog: Vec<LogLine>,
        follower: Follower,
    },
    /// An async invocation to queue: the intake thread stores it and
    /// answers.
    Enqueue(NewInvocation),
}

/// A whole response, or the head of a streamed one and its follower.
pub struct Response {
    pub status: u16,
    pub bytes: Vec<u8>,
    /// Set for a live tail: the caller streams it and keeps the socket.
    pub follower: Option<Follower>,
    /// Set for an async invocation: nothing is written here; the intake
    /// thread answers once it is stored.
    pub enqueue: Option<NewInvocation>,
}

/// A parsed API request.
struct ApiRequest<'r> {
    method: &'r str,
    path: &'r str,
    /// The query string, without `?`.
    query: &'r str,
    bearer: Option<String>,
    content_type: Option<String>,
    peer: Option<IpAddr>,
    headers: &'r [httparse::Header<'r>],
    body: &'r [u8],
}

/// Who is asking.
enum Caller {
    /// Loopback without a key: reads only.
    Local,
    Anonymous,
    Key {
        scopes: Vec<Scope>,
        /// The functions an invoke key is limited to.
        grant: KeyGrant,
    },
}

impl Caller {
    fn may(&self, scope: Option<Scope>) -> Result<(), ApiError> {
        match (self, scope) {
            (Caller::Local, None) => Ok(()),
            (Caller::Key { .. }, None) => Ok(()),
            (Caller::Key { scopes, .. }, Some(scope)) => {
                if scopes.contains(&Scope::Admin) || scopes.contains(&scope) {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        ApiErrorKind::Forbidden,
                        format_args!("this key lacks the {scope} scope"),
                    ))
                }
            }
            (Caller::Local | Caller::Anonymous, _) => Err(ApiError::new(
                ApiErrorKind::Unauthorized,
                "this needs an API key: Authorization: Bearer KEY",
            )),
        }
    }

    /// The invoke scope, for `function` (an invoke key may be limited to
    /// named functions; admin keys are not).
    fn may_invoke(&self, function: &str) -> Result<(), ApiError> {
        self.may(Some(Scope::Invoke))?;
        match self {
            Caller::Key { scopes, grant }
                if !scopes.contains(&Scope::Admin) && !grant.allows(Some(function)) =>
            {
                Err(ApiError::new(
                    ApiErrorKind::Forbidden,
                    format_args!("this key may not invoke {function}"),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl ControlState {
    pub fn open(
        db: &Arc<SharedStore>,
        store: ArtifactStore,
        settings: &ControlSettings,
        observed: Observed,
    ) -> std::io::Result<ControlState> {
        let db = db
            .handle(|connection| connection.busy_timeout(std::time::Duration::from_secs(5)))
            .map_err(std::io::Error::other)?;
        let scratch_root = store.dir().join(".scratch");
        std::fs::create_dir_all(&scratch_root)?;
        Ok(ControlState {
            db,
            store,
            tools: Toolchain {
                wasm_checker: std::env::current_exe()?,
                wasm_cache_dir: settings.wasm_cache_dir.clone(),
                clang: settings.clang.clone(),
                cc: settings.cc.clone(),
                python: "python3".into(),
                node: "node".into(),
                php: settings.php_lint.clone(),
                compile_timeout: settings.compile_timeout(),
            },
            scratch_root,
            scratch_counter: 0,
            observed,
            invocation_ids: IdMaker::new(),
            callback_hosts: settings.callback_allow_host.clone(),
        })
    }

    /// Answers one dispatch: the whole HTTP response and its status.
    pub fn respond(&mut self, dispatch: &Dispatch<'_>) -> Response {
        let header = dispatch.header;
        let connection = header.connection(false);
        let head_only = header.head_only();
        let head_lines = HeadLines::new(
            &clock::date_line(clock::unix_now_secs()),
            dispatch.request_id,
        );
        let (status, content_type, body) = match self.answer(dispatch) {
            Ok(Answer::Json(status, value)) => (status, JSON, json_line(&value)),
            Ok(Answer::Body {
                status,
                content_type,
                body,
            }) => (status, content_type, body),
            Ok(Answer::Follow { backlog, follower }) => {
                let mut out = Vec::with_capacity(4096);
                encode::push_status_line(&mut out, 200);
                encode::push_header(&mut out, "content-type", NDJSON);
                encode::push_header(&mut out, "transfer-encoding", "chunked");
                encode::push_head_end(&mut out, head_lines.as_bytes(), ConnectionHeader::Close);
                follow::push_chunk(&mut out, &backlog);
                return Response {
                    status: 200,
                    bytes: out,
                    follower: (!head_only).then_some(follower),
                    enqueue: None,
                };
            }
            Ok(Answer::Enqueue(invocation)) => {
                return Response {
                    status: 202,
                    bytes: Vec::new(),
                    follower: None,
                    enqueue: Some(invocation),
                };
            }
            Err(error) => (error.status(), JSON, json_line(&error.to_json())),
        };
        let mut out = Vec::with_capacity(body.len() + 256);
        encode::push_response(
            &mut out,
            status,
            &[("content-type", content_type)],
            &body,
            head_lines.as_bytes(),
            connection,
            head_only,
        );
        Response {
            status,
            bytes: out,
            follower: None,
            enqueue: None,
        }
    }

    fn answer(&mut self, dispatch: &Dispatch<'_>) -> Result<Answer, ApiError> {
        let body_from_memfd;
        let body: &[u8] = match &dispatch.body_memfd {
            Some(memfd) => {
                body_from_memfd = protocol::read_body_memfd(memfd, dispatch.header.body_len)
                    .map_err(|e| {
                        ApiError::new(
                            ApiErrorKind::Internal,
                            format_args!("cannot read the body: {e}"),
                        )
                    })?;
                &body_from_memfd
            }
            None => dispatch.inline_body,
        };
        let mut headers = [httparse::EMPTY_HEADER; HEADER_COUNT_MAX];
        let mut parsed = httparse::Request::new(&mut headers);
        if !matches!(
            parsed.parse(dispatch.head),
            Ok(httparse::Status::Complete(_))
        ) {
            return Err(ApiError::new(
                ApiErrorKind::BadRequest,
                "request head did not arrive intact",
            ));
        }
        let header_text = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_string)
        };
        let bearer = parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
            .and_then(|h| auth::bearer(h.value))
            .map(str::to_string);
        let target = parsed.path.unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let peer = socket2::SockRef::from(&dispatch.client)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.ip());
        let request = ApiRequest {
            method: parsed.method.unwrap_or("GET"),
            path,
            query,
            bearer,
            content_type: header_text("content-type"),
            peer,
            headers: parsed.headers,
            body,
        };
        if dispatch.header.flags & protocol::FLAG_ASYNC_INVOCATION != 0 {
            // A function route with `x-corefn-invocation-type: async`: the
            // core resolved the function and checked its key already.
            return self
                .queue_call(&request, dispatch.name, target.to_string())
                .map(Answer::Enqueue);
        }
        if let Some(answer) = self.route_invocations(&request)? {
            return Ok(answer);
        }
        if let Some(answer) = self.route_observe(&request)? {
            return Ok(answer);
        }
        self.route(&request)
            .map(|(status, value)| Answer::Json(status, value))
    }

    /// The async invocation endpoints: queueing a call, and reading the
    /// queue.
    fn route_invocations(&mut self, request: &ApiRequest<'_>) -> Result<Option<Answer>, ApiError> {
        let rest = request.path.strip_prefix(API_PREFIX).unwrap_or("");
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let method = request.method;
        let read = matches!(method, "GET" | "HEAD");
        let not_allowed = |allow: &str| {
            ApiError::new(
                ApiErrorKind::MethodNotAllowed,
                format_args!("{method} is not allowed here (allowed: {allow})"),
            )
        };
        match parts.as_slice() {
            ["functions", name, "invocations"] => {
                if method != "POST" {
                    return Err(not_allowed("POST"));
                }
                self.caller(request)?.may_invoke(name)?;
                check_name(name).map_err(registry_error)?;
                let function = self.with_registry(|registry| registry.get(name))?;
                let version = match query_value(request.query, "version") {
                    Some(text) => {
                        let version: u32 = text.parse().map_err(|_| {
                            ApiError::new(
                                ApiErrorKind::BadRequest,
                                format_args!("version {text:?} is not a number"),
                            )
                        })?;
                        if version == 0 || version > function.latest_version {
                            return Err(registry_error(RegistryError::VersionNotFound {
                                name: name.to_string(),
                                version,
                            }));
                        }
                        format!("@{version}")
                    }
                    None => String::new(),
                };
                let sub_path = query_value(request.query, "path").unwrap_or_default();
                if !sub_path.is_empty() && !sub_path.starts_with('/') {
                    return Err(ApiError::new(
                        ApiErrorKind::BadRequest,
                        "path must start with /",
                    ));
                }
                let target = format!("/fn/{name}{version}{sub_path}");
                let mut headers = queue::forwarded_headers(request.headers);
                // The call goes to the gateway by path, not by this host.
                headers.retain(|(name, _)| name != "host");
                let call_method = query_value(request.query, "method")
                    .unwrap_or_else(|| "POST".to_string())
                    .to_ascii_uppercase();
                if !rules::is_token(call_method.as_bytes()) {
                    return Err(ApiError::new(
                        ApiErrorKind::BadRequest,
                        format_args!("method {call_method:?} is not an HTTP method"),
                    ));
                }
                let queued = self.new_invocation(request, name, call_method, target, headers)?;
                Ok(Some(Answer::Enqueue(queued)))
            }
            ["invocations"] => {
                if !read {
                    return Err(not_allowed("GET"));
                }
                self.caller(request)?.may(None)?;
                let state = match query_value(request.query, "state") {
                    Some(text) => Some(invocations::State::parse(&text).ok_or_else(|| {
                        ApiError::new(
                            ApiErrorKind::BadRequest,
                            format_args!(
                                "state {text:?} is not one of queued, running, succeeded, failed, dead"
                            ),
                        )
                    })?),
                    None => None,
                };
                let limit = match query_value(request.query, "limit") {
                    Some(text) => text
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=INVOCATIONS_LISTED_MAX).contains(n))
                        .ok_or_else(|| {
                            ApiError::new(
                                ApiErrorKind::BadRequest,
                                format_args!("limit must be 1..={INVOCATIONS_LISTED_MAX}"),
                            )
                        })?,
                    None => 100,
                };
                let function = query_value(request.query, "function");
                let list =
                    invocations::list(&*self.connection()?, function.as_deref(), state, limit)
                        .map_err(registry_error)?;
                let list: Vec<Value> = list.iter().map(invocation_json).collect();
                Ok(Some(Answer::Json(200, json!({ "invocations": list }))))
            }
            ["invocations", id] => {
                if !read {
                    return Err(not_allowed("GET"));
                }
                self.caller(request)?.may(None)?;
                let found = invocations::get(&*self.connection()?, id)
                    .map_err(registry_error)?
                    .ok_or_else(|| {
                        ApiError::new(ApiErrorKind::NotFound, format_args!("no invocation {id:?}"))
                    })?;
                Ok(Some(Answer::Json(200, invocation_json(&found))))
            }
            _ => Ok(None),
        }
    }

    /// An invocation of a function route asked for with
    /// `x-corefn-invocation-type: async`: the same request, later.
    fn queue_call(
        &mut self,
        request: &ApiRequest<'_>,
        function: &str,
        target: String,
    ) -> Result<NewInvocation, ApiError> {
        let headers = queue::forwarded_headers(request.headers);
        self.new_invocation(
            request,
            function,
            request.method.to_string(),
            target,
            headers,
        )
    }

    fn new_invocation(
        &mut self,
        request: &ApiRequest<'_>,
        function: &str,
        method: String,
        target: String,
        headers: Vec<(String, String)>,
    ) -> Result<NewInvocation, ApiError> {
        let callback_url = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("x-callback-url"))
            .map(|h| String::from_utf8_lossy(h.value).into_owned());
        if let Some(url) = &callback_url {
            CallbackUrl::parse(url, &self.callback_hosts)
                .map_err(|message| ApiError::new(ApiErrorKind::BadRequest, message))?;
        }
        let policy =
            invocations::policy_of(&*self.connection()?, function).map_err(registry_error)?;
        Ok(NewInvocation {
            id: self.invocation_ids.next_id(),
            request: QueuedRequest {
                function: function.to_string(),
                method,
                path: target,
                headers_json: queue::headers_json(&headers),
                body: request.body.to_vec(),
                callback_url,
            },
            max_attempts: policy.max_attempts,
            max_age: policy.max_age(),
        })
    }

    /// The read-only telemetry endpoints: `/metrics`, stats (and logs).
    fn route_observe(&mut self, request: &ApiRequest<'_>) -> Result<Option<Answer>, ApiError> {
        let rest = request.path.strip_prefix(API_PREFIX);
        let parts: Vec<&str> = rest
            .unwrap_or("")
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        let is_metrics = request.path == rules::METRICS_PATH;
        let is_stats =
            rest.is_some() && matches!(parts.as_slice(), ["stats"] | ["functions", _, "stats"]);
        let is_logs =
            rest.is_some() && matches!(parts.as_slice(), ["logs"] | ["functions", _, "logs"]);
        if !is_metrics && !is_stats && !is_logs {
            return Ok(None);
        }
        if !matches!(request.method, "GET" | "HEAD") {
            return Err(ApiError::new(
                ApiErrorKind::MethodNotAllowed,
                format_args!("{} is not allowed here (allowed: GET)", request.method),
            ));
        }
        self.caller(request)?.may(None)?;
        if is_logs {
            return self.logs(request, &parts).map(Some);
        }
        if is_metrics {
            let text = metrics::render(&self.observed.metrics_view());
            return Ok(Some(Answer::Body {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body: text.into_bytes(),
            }));
        }
        let label = query_value(request.query, "window").unwrap_or("5m".into());
        let window = observe::parse_window(&label)
            .map_err(|e| ApiError::new(ApiErrorKind::BadRequest, e))?;
        let value = match parts.as_slice() {
            ["functions", name, "stats"] => {
                // `series=1`: what a chart draws, too.
                let chart = query_value(request.query, "series").as_deref() == Some("1");
                match self.observed.function_stats(name, window, &label, chart) {
                    Some(value) => value,
                    None => {
                        // Known but never called: zeros, not 404.
                        self.with_registry(|registry| registry.get(name))?;
                        json!({ "function": name, "window": label, "count": 0 })
                    }
                }
            }
            _ => self.observed.all_stats(window, &label),
        };
        Ok(Some(Answer::Json(200, value)))
    }

    /// `functions/NAME/logs` or `logs?route=KEY` (a hand-written route):
    /// `tail`, `since` (RFC 3339, or an age such as `10m`), `request_id`,
    /// `follow=1`.
    fn logs(&mut self, request: &ApiRequest<'_>, parts: &[&str]) -> Result<Answer, ApiError> {
        let query = |name: &str| query_value(request.query, name);
        let name = match parts {
            ["functions", name, "logs"] => {
                self.with_registry(|registry| registry.get(name))?;
                name.to_string()
            }
            _ => query("route").ok_or_else(|| {
                ApiError::new(
                    ApiErrorKind::BadRequest,
                    "logs of a hand-written route need ?route=METHOD:/path",
                )
            })?,
        };
        let bad = |message: String| ApiError::new(ApiErrorKind::BadRequest, message);
        let tail = match query("tail") {
            Some(text) => Some(
                text.parse::<usize>()
                    .map_err(|_| bad(format!("tail {text:?} must be a number of lines")))?,
            ),
            None => None,
        };
        let since_unix_us = match query("since") {
            Some(text) => Some(
                clock::parse_rfc3339_us(&text)
                    .or_else(|| {
                        observe::parse_window(&text).ok().map(|age| {
                            clock::unix_now_us()
                                .saturating_sub(u64::try_from(age.as_micros()).unwrap_or(0))
                        })
                    })
                    .ok_or_else(|| {
                        bad(format!(
                            "since {text:?} must be an RFC 3339 time or an age such as 10m"
                        ))
                    })?,
            ),
            None => None,
        };
        let log_query = LogQuery {
            tail,
            since_unix_us,
            request_id: query("request_id"),
        };
        let follow = matches!(query("follow").as_deref(), Some("1" | "true"));
        // Registered before the backlog is read: no line falls between.
        let follower = if follow {
            Some(
                self.observed
                    .logs
                    .follow(&name)
                    .map_err(|e| ApiError::new(ApiErrorKind::Unavailable, e.to_string()))?,
            )
        } else {
            None
        };
        let lines = self
            .observed
            .logs
            .read(&name, &log_query)
            .map_err(|e| ApiError::new(ApiErrorKind::Internal, e.to_string()))?;
        match follower {
            Some(follower) => Ok(Answer::Follow {
                backlog: lines,
                follower,
            }),
            None => {
                let mut body = Vec::with_capacity(lines.len() * 160);
                for line in &lines {
                    body.extend_from_slice(&json_line(
                        &serde_json::to_value(line).map_err(internal)?,
                    ));
                }
                Ok(Answer::Body {
                    status: 200,
                    content_type: NDJSON,
                    body,
                })
            }
        }
    }

    fn caller(&self, request: &ApiRequest<'_>) -> Result<Caller, ApiError> {
        let Some(secret) = &request.bearer else {
            let local = request.peer.is_some_and(|ip| ip.is_loopback());
            return Ok(if local {
                Caller::Local
            } else {
                Caller::Anonymous
            });
        };
        let hash = auth::key_hash(secret);
        let grant: Option<(String, Option<String>)> = self
            .connection()?
            .query_row(
                "SELECT scopes, functions FROM api_keys WHERE hash = ?1 AND revoked IS NULL",
                [&hash],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(internal)?;
        match grant {
            Some((scopes, functions)) => Ok(Caller::Key {
                scopes: scopes.split(',').filter_map(Scope::parse).collect(),
                // Read as the cores read it.
                grant: KeyGrant::from_stored(functions.as_deref()),
            }),
            None => Err(ApiError::new(
                ApiErrorKind::Unauthorized,
                "unknown or revoked API key",
            )),
        }
    }

    fn route(&mut self, request: &ApiRequest<'_>) -> Result<(u16, Value), ApiError> {
        let caller = self.caller(request)?;
        let rest = request.path.strip_prefix(API_PREFIX).unwrap_or("");
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let method = request.method;
        let not_allowed = |allow: &str| {
            Err(ApiError::new(
                ApiErrorKind::MethodNotAllowed,
                format_args!("{method} is not allowed here (allowed: {allow})"),
            ))
        };
        match parts.as_slice() {
            ["functions"] => match method {
                "GET" | "HEAD" => {
                    caller.may(None)?;
                    let list = self.with_registry(|registry| registry.list())?;
                    let mut list = serde_json::to_value(list).map_err(internal)?;
                    // What a list view shows of each: the last 5 minutes.
                    if let Value::Array(functions) = &mut list {
                        for function in functions.iter_mut() {
                            let recent = function["name"]
                                .as_str()
                                .and_then(|name| self.observed.recent_summary(name));
                            if let (Value::Object(map), Some(recent)) = (function, recent) {
                                map.insert("last_5m".into(), recent);
                            }
                        }
                    }
                    Ok((200, json!({ "functions": list })))
                }
                "POST" => {
                    caller.may(Some(Scope::Deploy))?;
                    self.deploy(None, request, &caller)
                }
                _ => not_allowed("GET, POST"),
            },
            ["functions", name] => match method {
                "GET" | "HEAD" => {
                    caller.may(None)?;
                    let info = self.with_registry(|registry| registry.get(name))?;
                    Ok((200, serde_json::to_value(info).map_err(internal)?))
                }
                "PUT" => {
                    caller.may(Some(Scope::Deploy))?;
                    self.deploy(Some(name), request, &caller)
                }
                "DELETE" => {
                    caller.may(Some(Scope::Deploy))?;
                    let removed = self.with_registry(|registry| registry.delete(name))?;
                    self.observed.telemetry.stats.remove(name);
                    if let Err(error) = self.observed.logs.remove(name) {
                        eprintln!("corefn: cannot remove the logs of {name:?}: {error}");
                    }
                    Ok((
                        200,
                        json!({ "deleted": name, "artifacts_removed": removed }),
                    ))
                }
                _ => not_allowed("GET, PUT, DELETE"),
            },
            ["functions", name, "settings"] => match method {
                "PUT" => {
                    caller.may(Some(Scope::Deploy))?;
                    // A field left out keeps its setting; `null` clears it.
                    let asked: serde_json::Map<String, Value> = parse_json(request.body)?;
                    if let Some(unknown) = asked
                        .keys()
                        .find(|k| k.as_str() != "rate_limit" && k.as_str() != "async")
                    {
                        return Err(ApiError::new(
                            ApiErrorKind::BadRequest,
                            format_args!(
                                "unknown setting {unknown:?} (settings: rate_limit, async)"
                            ),
                        ));
                    }
                    let now = clock::unix_now_secs() as i64;
                    if let Some(value) = asked.get("async").cloned() {
                        let policy: Option<AsyncPolicy> = match value {
                            Value::Null => None,
                            value => {
                                #[derive(Deserialize)]
                                #[serde(deny_unknown_fields)]
                                struct Asked {
                                    max_attempts: Option<u32>,
                                    max_age_s: Option<u64>,
                                }
                                let asked: Asked = serde_json::from_value(value).map_err(|e| {
                                    ApiError::new(
                                        ApiErrorKind::BadRequest,
                                        format_args!("async: {e}"),
                                    )
                                })?;
                                let defaults = AsyncPolicy::default();
                                Some(AsyncPolicy {
                                    max_attempts: asked
                                        .max_attempts
                                        .unwrap_or(defaults.max_attempts),
                                    max_age_s: asked.max_age_s.unwrap_or(defaults.max_age_s),
                                })
                            }
                        };
                        invocations::set_policy(&*self.connection()?, name, policy, now)
                            .map_err(registry_error)?;
                    }
                    if let Some(value) = asked.get("rate_limit").cloned() {
                        let rate_limit: Option<crate::runtimes::descriptor::RateLimit> =
                            serde_json::from_value(value).map_err(|e| {
                                ApiError::new(
                                    ApiErrorKind::BadRequest,
                                    format_args!("rate_limit: {e}"),
                                )
                            })?;
                        self.with_registry(|registry| {
                            registry.set_rate_limit(name, rate_limit, now)
                        })?;
                    }
                    let rate_limit =
                        crate::registry::functions::rate_limit_setting(&*self.connection()?, name)
                            .map_err(registry_error)?;
                    let policy = invocations::policy_of(&*self.connection()?, name)
                        .map_err(registry_error)?;
                    Ok((
                        200,
                        json!({ "name": name, "rate_limit": rate_limit, "async": policy }),
                    ))
                }
                _ => not_allowed("PUT"),
            },
            ["functions", name, "aliases", "live"] => match method {
                "PUT" => {
                    caller.may(Some(Scope::Deploy))?;
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Alias {
                        version: u32,
                        canary: Option<crate::runtimes::descriptor::Canary>,
                    }
                    let asked: Alias = parse_json(request.body)?;
                    let now = clock::unix_now_secs() as i64;
                    self.with_registry(|registry| {
                        registry.set_alias(name, asked.version, asked.canary, now)
                    })?;
                    Ok((
                        200,
                        json!({ "name": name, "live_version": asked.version, "canary": asked.canary }),
                    ))
                }
                _ => not_allowed("PUT"),
            },
            ["functions", name, "versions"] => match method {
                "GET" | "HEAD" => {
                    caller.may(None)?;
                    let versions = self.with_registry(|registry| registry.versions(name))?;
                    Ok((200, json!({ "name": name, "versions": versions })))
                }
                _ => not_allowed("GET"),
            },
            ["functions", name, "rollback"] => match method {
                "POST" => {
                    caller.may(Some(Scope::Deploy))?;
                    #[derive(Deserialize, Default)]
                    #[serde(deny_unknown_fields)]
                    struct Rollback {
                        version: Option<u32>,
                    }
                    let asked: Rollback = if request.body.iter().all(u8::is_ascii_whitespace) {
                        Rollback::default()
                    } else {
                        parse_json(request.body)?
                    };
                    let now = clock::unix_now_secs() as i64;
                    let version =
                        self.with_registry(|registry| registry.rollback(name, asked.version, now))?;
                    Ok((200, json!({ "name": name, "live_version": version })))
                }
                _ => not_allowed("POST"),
            },
            ["keys"] => match method {
                "GET" | "HEAD" => {
                    caller.may(Some(Scope::Admin))?;
                    self.list_keys()
                }
                "POST" => {
                    caller.may(Some(Scope::Admin))?;
                    self.create_key(request.body)
                }
                _ => not_allowed("GET, POST"),
            },
            ["keys", id] => match method {
                "DELETE" => {
                    caller.may(Some(Scope::Admin))?;
                    let now = clock::unix_now_secs() as i64;
                    let changed = self
                        .connection()?
                        .execute(
                            "UPDATE api_keys SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL",
                            params![id, now],
                        )
                        .map_err(internal)?;
                    if changed == 0 {
                        return Err(ApiError::new(
                            ApiErrorKind::NotFound,
                            format_args!("no live key {id:?}"),
                        ));
                    }
                    Ok((200, json!({ "revoked": id })))
                }
                _ => not_allowed("DELETE"),
            },
            ["schedules"] => match method {
                "GET" | "HEAD" => {
                    caller.may(None)?;
                    let function = query_value(request.query, "function");
                    let list = schedules::list(&*self.connection()?, function.as_deref())
                        .map_err(registry_error)?;
                    let list: Vec<Value> = list.iter().map(schedule_json).collect();
                    Ok((200, json!({ "schedules": list })))
                }
                "POST" => {
                    caller.may(Some(Scope::Deploy))?;
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Asked {
                        function: String,
                        cron: String,
                        overlap: Option<String>,
                        method: Option<String>,
                        path: Option<String>,
                        body: Option<String>,
                    }
                    let asked: Asked = parse_json(request.body)?;
                    let overlap = Overlap::parse(asked.overlap.as_deref().unwrap_or("skip"))
                        .map_err(|e| ApiError::new(ApiErrorKind::BadRequest, e))?;
                    let schedule = schedules::create(
                        &*self.connection()?,
                        &NewSchedule {
                            function: &asked.function,
                            cron: &asked.cron,
                            overlap,
                            method: asked.method.as_deref().unwrap_or("POST"),
                            path: asked.path.as_deref().unwrap_or("/"),
                            body: asked.body.as_deref().unwrap_or(""),
                        },
                    )
                    .map_err(registry_error)?;
                    Ok((201, json!({ "schedule": schedule_json(&schedule) })))
                }
                _ => not_allowed("GET, POST"),
            },
            ["schedules", id] => {
                let id: i64 = id.parse().map_err(|_| {
                    ApiError::new(
                        ApiErrorKind::NotFound,
                        format_args!("no schedule {id:?}: ids are numbers"),
                    )
                })?;
                match method {
                    "GET" | "HEAD" => {
                        caller.may(None)?;
                        let schedule =
                            schedules::get(&*self.connection()?, id).map_err(registry_error)?;
                        Ok((200, json!({ "schedule": schedule_json(&schedule) })))
                    }
                    "DELETE" => {
                        caller.may(Some(Scope::Deploy))?;
                        schedules::delete(&*self.connection()?, id).map_err(registry_error)?;
                        Ok((200, json!({ "deleted": id })))
                    }
                    _ => not_allowed("GET, DELETE"),
                }
            }
            _ => Err(ApiError::new(
                ApiErrorKind::NotFound,
                format_args!("no API endpoint {} {}", request.method, request.path),
            )),
        }
    }

    /// The API thread's connection, for one answer (503 while the watcher
    /// switches the store to a new file).
    fn connection(&self) -> Result<Connected<'_>, ApiError> {
        self.db
            .connect()
            .map_err(|error| ApiError::new(ApiErrorKind::Unavailable, error))
    }

    fn with_registry<T>(
        &mut self,
        call: impl FnOnce(&mut Registry<'_>) -> Result<T, RegistryError>,
    ) -> Result<T, ApiError> {
        let mut connection = self.connection()?;
        let mut registry = Registry {
            connection: &mut connection,
            store: &self.store,
        };
        call(&mut registry).map_err(registry_error)
    }

    /// POST (create or new version) and PUT (new version of `name`).
    fn deploy(
        &mut self,
        name_in_path: Option<&str>,
        request: &ApiRequest<'_>,
        caller: &Caller,
    ) -> Result<(u16, Value), ApiError> {
        // JSON whatever the label (curl -d says form-urlencoded); multipart
        // (a code file and a descriptor field) and archives by their type.
        let content_type = request.content_type.as_deref().unwrap_or("");
        let mut tree: Option<(Archive, String)> = None;
        let (asked, uploaded_code) = if content_type.starts_with("multipart/form-data") {
            let upload =
                upload::parse_multipart(content_type, request.body, &UploadLimits::default())
                    .map_err(|e| ApiError::new(ApiErrorKind::BadRequest, e))?;
            let mut fields = match upload.descriptor {
                Some(Value::Object(map)) => map,
                Some(_) => {
                    return Err(ApiError::new(
                        ApiErrorKind::BadRequest,
                        "the descriptor field must be a JSON object",
                    ))
                }
                None => serde_json::Map::new(),
            };
            for (name, value) in &upload.fields {
                fields
                    .entry(name.clone())
                    .or_insert_with(|| value.clone().into());
            }
            if let Some(filename) = &upload.filename {
                fields
                    .entry("filename")
                    .or_insert_with(|| filename.clone().into());
            }
            let asked: DeployRequest =
                serde_json::from_value(Value::Object(fields)).map_err(|e| {
                    ApiError::new(
                        ApiErrorKind::BadRequest,
                        format_args!("invalid deploy fields: {e}"),
                    )
                })?;
            if asked.code.is_some() || asked.code_base64.is_some() {
                return Err(ApiError::new(
                    ApiErrorKind::BadRequest,
                    "a multipart deploy carries its code in the code file part",
                ));
            }
            (asked, Some(upload.code))
        } else if let Some(kind) = upload::detect(Some(content_type), request.body) {
            let archive = upload::unpack(request.body, kind, &UploadLimits::default())
                .map_err(|e| ApiError::new(ApiErrorKind::BadRequest, e))?;
            let (entry, runtime) = upload::entry_point(&archive).ok_or_else(|| {
                ApiError::new(
                    ApiErrorKind::BadRequest,
                    "the archive has no entry point: add main.py, index.js, index.php, main.wasm, \
                     main.c or an executable handler, or say it in corefn.json ({\"runtime\", \"entry\"})",
                )
            })?;
            let entry = entry.to_string();
            let mut fields = match &archive.manifest {
                Some(Value::Object(map)) => map.clone(),
                Some(_) => {
                    return Err(ApiError::new(
                        ApiErrorKind::BadRequest,
                        "corefn.json must be a JSON object",
                    ))
                }
                None => serde_json::Map::new(),
            };
            fields.remove("entry");
            fields.insert(
                "runtime".into(),
                serde_json::to_value(runtime).map_err(internal)?,
            );
            fields.insert("filename".into(), entry.clone().into());
            let asked: DeployRequest =
                serde_json::from_value(Value::Object(fields)).map_err(|e| {
                    ApiError::new(ApiErrorKind::BadRequest, format_args!("corefn.json: {e}"))
                })?;
            let code = archive
                .file(&entry)
                .map(|f| f.bytes.clone())
                .ok_or_else(|| ApiError::new(ApiErrorKind::Internal, "entry point vanished"))?;
            tree = Some((archive, entry));
            (asked, Some(code))
        } else if [
            "application/zip",
            "application/gzip",
            "application/x-tar",
            "application/x-gzip",
        ]
        .iter()
        .any(|t| content_type.starts_with(t))
        {
            return Err(ApiError::new(
                ApiErrorKind::BadRequest,
                "the body is not a zip or tar.gz archive",
            ));
        } else {
            (parse_json::<DeployRequest>(request.body)?, None)
        };
        let name = match (name_in_path, &asked.name) {
            (Some(path_name), Some(body_name)) if path_name != body_name => {
                return Err(ApiError::new(
                    ApiErrorKind::BadRequest,
                    format_args!("the body names {body_name:?} but the path {path_name:?}"),
                ))
            }
            (Some(path_name), _) => path_name.to_string(),
            (None, Some(body_name)) => body_name.clone(),
            (None, None) => {
                return Err(ApiError::new(
                    ApiErrorKind::BadRequest,
                    "\"name\" is required",
                ))
            }
        };
        check_name(&name).map_err(registry_error)?;
        let previous = if name_in_path.is_some() {
            let versions = self.with_registry(|registry| registry.versions(&name))?;
            versions.into_iter().last()
        } else {
            None
        };
        let runtime = asked
            .runtime
            .or(previous.as_ref().map(|p| p.runtime))
            .ok_or_else(|| ApiError::new(ApiErrorKind::BadRequest, "\"runtime\" is required"))?;
        // Native code runs inside the worker, unconfined: trusted code,
        // which only an admin may bring.
        if runtime == Runtime::Native {
            caller.may(Some(Scope::Admin)).map_err(|_| {
                ApiError::new(
                    ApiErrorKind::Forbidden,
                    "native code runs inside the worker with no sandbox: deploying it needs an \
                     admin key",
                )
            })?;
        }
        let code: Option<Vec<u8>> = match (&asked.code, &asked.code_base64) {
            _ if uploaded_code.is_some() => uploaded_code,
            (Some(_), Some(_)) => {
                return Err(ApiError::new(
                    ApiErrorKind::BadRequest,
                    "give \"code\" or \"code_base64\", not both",
                ))
            }
            (Some(text), None) => Some(text.as_bytes().to_vec()),
            (None, Some(encoded)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| {
                        ApiError::new(ApiErrorKind::BadRequest, format_args!("code_base64: {e}"))
                    })?,
            ),
            (None, None) => None,
        };
        if code.as_ref().is_some_and(|c| c.len() > CODE_BYTES_MAX) {
            return Err(ApiError::new(
                ApiErrorKind::PayloadTooLarge,
                format_args!("code is larger than {CODE_BYTES_MAX} bytes"),
            ));
        }
        let mut spec = VersionSpec {
            entry: if code.is_some() {
                None
            } else {
                previous.as_ref().and_then(|p| p.entry.clone())
            },
            runtime,
            handler: asked
                .handler
                .clone()
                .or(previous.as_ref().and_then(|p| p.handler.clone())),
            routes: asked
                .routes
                .clone()
                .or(previous.as_ref().map(|p| p.routes.clone()))
                .unwrap_or_default(),
            config: asked
                .config
                .clone()
                .or(previous.as_ref().map(|p| p.config.clone()))
                .unwrap_or_default(),
        };
        crate::registry::functions::check_spec(&spec).map_err(registry_error)?;
        let (artifact, built_with) = match code {
            Some(code) => {
                let scratch = self.scratch_dir()?;
                let built = code::build(
                    &Upload {
                        runtime,
                        filename: asked.filename.as_deref(),
                        bytes: &code,
                    },
                    &self.tools,
                    &scratch,
                );
                let _ = std::fs::remove_dir_all(&scratch);
                let built = built.map_err(registry_error)?;
                // An archive's files stay together (imports of siblings);
                // compiled code is the one file the compiler made.
                let keep_tree = tree.as_ref().filter(|_| {
                    !matches!(built.extension, "wasm" | "so") || built.built_with.is_none()
                });
                let artifact = match keep_tree {
                    Some((archive, entry)) => {
                        let files: Vec<(&str, &[u8], bool)> = archive
                            .files
                            .iter()
                            .map(|f| (f.path.as_str(), f.bytes.as_slice(), f.executable))
                            .collect();
                        spec.entry = Some(entry.clone());
                        self.store.put_tree(&files).map_err(internal)?
                    }
                    None => self
                        .store
                        .put(&built.bytes, built.extension)
                        .map_err(internal)?,
                };
                (artifact, built.built_with)
            }
            None => {
                let Some(previous) = &previous else {
                    return Err(ApiError::new(
                        ApiErrorKind::BadRequest,
                        "\"code\" or \"code_base64\" is required",
                    ));
                };
                if previous.runtime != runtime {
                    return Err(ApiError::new(
                        ApiErrorKind::BadRequest,
                        "a new runtime needs new code",
                    ));
                }
                let extension = self.extension_of(&name, previous.version)?;
                let path = self.store.path_of(&previous.artifact_sha256, extension);
                (
                    crate::registry::artifacts::Artifact {
                        sha256: previous.artifact_sha256.clone(),
                        extension,
                        path,
                        bytes: 0,
                    },
                    None,
                )
            }
        };
        let now = clock::unix_now_secs() as i64;
        let version =
            self.with_registry(|registry| registry.deploy(&name, &spec, &artifact, now))?;
        let status = if version == 1 { 201 } else { 200 };
        Ok((
            status,
            json!({
                "name": name,
                "version": version,
                "runtime": runtime,
                "artifact_sha256": artifact.sha256,
                "built_with": built_with,
                "url_path": format!("/fn/{name}"),
            }),
        ))
    }

    fn extension_of(&self, name: &str, version: u32) -> Result<&'static str, ApiError> {
        let config: String = self
            .connection()?
            .query_row(
                "SELECT config FROM function_versions WHERE name = ?1 AND version = ?2",
                params![name, version],
                |row| row.get(0),
            )
            .map_err(internal)?;
        let value: Value = serde_json::from_str(&config).map_err(internal)?;
        let extension = value.get("extension").and_then(Value::as_str).unwrap_or("");
        crate::registry::artifacts::extension(extension).ok_or_else(|| {
            ApiError::new(
                ApiErrorKind::Internal,
                "stored version has no artifact type",
            )
        })
    }

    fn scratch_dir(&mut self) -> Result<PathBuf, ApiError> {
        self.scratch_counter += 1;
        let dir =
            self.scratch_root
                .join(format!("{}-{}", std::process::id(), self.scratch_counter));
        std::fs::create_dir_all(&dir).map_err(internal)?;
        Ok(dir)
    }

    fn create_key(&mut self, body: &[u8]) -> Result<(u16, Value), ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NewKeyRequest {
            scopes: Vec<String>,
            /// Limits an invoke key to these functions.
            functions: Option<Vec<String>>,
        }
        let asked: NewKeyRequest = parse_json(body)?;
        let mut scopes = Vec::new();
        for scope in &asked.scopes {
            let scope = Scope::parse(scope).ok_or_else(|| {
                ApiError::new(
                    ApiErrorKind::BadRequest,
                    format_args!("unknown scope {scope:?} (scopes: admin, deploy, invoke)"),
                )
            })?;
            scopes.push(scope);
        }
        if scopes.is_empty() {
            return Err(ApiError::new(
                ApiErrorKind::BadRequest,
                "a key needs at least one scope",
            ));
        }
        scopes.sort();
        scopes.dedup();
        if let Some(functions) = &asked.functions {
            for name in functions {
                check_name(name).map_err(registry_error)?;
            }
        }
        let key = insert_key(&*self.connection()?, &scopes, asked.functions.as_deref())
            .map_err(internal)?;
        Ok((
            201,
            json!({
                "id": key.id,
                "key": key.secret,
                "scopes": scopes.iter().map(|s| s.name()).collect::<Vec<_>>(),
                "note": "the key is shown once; corefn keeps only its hash",
            }),
        ))
    }

    fn list_keys(&self) -> Result<(u16, Value), ApiError> {
        let connection = self.connection()?;
        let mut statement = connection
            .prepare("SELECT id, scopes, created, revoked FROM api_keys ORDER BY created, id")
            .map_err(internal)?;
        let keys = statement
            .query_map([], |row| {
                Ok(json!({
                    "id": row.get::<_, String>(0)?,
                    "scopes": row.get::<_, String>(1)?.split(',').map(str::to_string).collect::<Vec<_>>(),
                    "created": row.get::<_, i64>(2)?,
                    "revoked": row.get::<_, Option<i64>>(3)?,
                }))
            })
            .map_err(internal)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        Ok((200, json!({ "keys": keys })))
    }
}

/// A deploy's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    name: Option<String>,
    runtime: Option<Runtime>,
    code: Option<String>,
    code_base64: Option<String>,
    /// Tells C from C++ and the like, where the content does not.
    filename: Option<String>,
    handler: Option<String>,
    routes: Option<Vec<String>>,
    config: Option<FunctionConfig>,
}

/// Stores a new key with `scopes`; the secret is in the result only.
pub fn insert_key(
    connection: &Connection,
    scopes: &[Scope],
    functions: Option<&[String]>,
) -> std::io::Result<keys::NewKey> {
    let key = keys::generate()?;
    let functions_json = functions
        .map(serde_json::to_string)
        .transpose()
        .map_err(std::io::Error::other)?;
    let scopes_text = scopes
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(",");
    connection
        .execute(
            "INSERT INTO api_keys (id, hash, scopes, functions, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key.id, key.hash, scopes_text, functions_json, clock::unix_now_secs() as i64],
        )
        .map_err(std::io::Error::other)?;
    Ok(key)
}

/// On a database without keys: makes an admin key and writes it to
/// `path` (mode 0600); returns whether it did.
pub fn ensure_admin_key(connection: &Connection, path: &Path) -> std::io::Result<bool> {
    let count: i64 = connection
        .query_row(
            "SELECT count(*) FROM api_keys WHERE revoked IS NULL",
            [],
            |row| row.get(0),
        )
        .map_err(std::io::Error::other)?;
    if count > 0 {
        return Ok(false);
    }
    let key = insert_key(connection, &[Scope::Admin], None)?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{}", key.secret)?;
    file.sync_all()?;
    Ok(true)
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ApiErrorKind::BadRequest,
            format_args!("invalid JSON body: {e}"),
        )
    })
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(ApiErrorKind::Internal, error)
}

/// A schedule as the API shows it: times in RFC 3339, the next run from
/// its timetable.
fn schedule_json(schedule: &Schedule) -> Value {
    let now_us = clock::unix_now_us();
    let next_run = Timetable::parse(&schedule.cron)
        .ok()
        .and_then(|timetable| timetable.next_after_us(now_us));
    json!({
        "id": schedule.id,
        "function": schedule.function,
        "cron": schedule.cron,
        "overlap": schedule.overlap,
        "method": schedule.method,
        "path": schedule.path,
        "next_run": next_run.map(clock::rfc3339_us),
        "last_run": schedule.last_run_unix_us.map(clock::rfc3339_us),
        "last_status": schedule.last_status,
        "last_duration_ms": schedule.last_duration_us.map(|us| us as f64 / 1000.0),
        "runs": schedule.runs,
        "skipped": schedule.skipped,
        "created": clock::rfc3339_us(schedule.created_unix.max(0) as u64 * 1_000_000),
    })
}

/// A registry error as the API answers it.
fn registry_error(error: RegistryError) -> ApiError {
    let kind = match &error {
        RegistryError::InvalidName(_) | RegistryError::Invalid(_) => ApiErrorKind::BadRequest,
        RegistryError::NotFound(_)
        | RegistryError::ScheduleNotFound(_)
        | RegistryError::VersionNotFound { .. } => ApiErrorKind::NotFound,
        RegistryError::Conflict(_) => ApiErrorKind::Conflict,
        RegistryError::Compile { .. } => ApiErrorKind::Unprocessable,
        RegistryError::Store(_) | RegistryError::Database(_) | RegistryError::Json(_) => {
            ApiErrorKind::Internal
        }
    };
    let mut api = ApiError::new(kind, &error);
    if let RegistryError::Compile { diagnostics } = error {
        api.details = Some(("diagnostics", json!(diagnostics)));
    }
    api
}

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// A whole JSON response to a dispatch (keep-alive and HEAD as the
/// dispatch says), with `headers` besides the content type.
pub fn json_response(
    header: &DispatchHeader,
    request_id: &str,
    status: u16,
    value: &Value,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let head_lines = HeadLines::new(&clock::date_line(clock::unix_now_secs()), request_id);
    let body = json_line(value);
    let mut all = Vec::with_capacity(headers.len() + 1);
    all.push(("content-type", JSON));
    all.extend_from_slice(headers);
    let mut out = Vec::with_capacity(body.len() + 256);
    encode::push_response(
        &mut out,
        status,
        &all,
        &body,
        head_lines.as_bytes(),
        header.connection(false),
        header.head_only(),
    );
    out
}

/// Invocations one list shows at most.
const INVOCATIONS_LISTED_MAX: usize = 1000;

fn invocation_json(invocation: &Invocation) -> Value {
    let headers: Option<Value> = invocation.result_headers_json.as_deref().map(|text| {
        let pairs: Vec<(String, String)> = serde_json::from_str(text).unwrap_or_default();
        Value::Object(
            pairs
                .into_iter()
                .map(|(name, value)| (name, Value::String(value)))
                .collect(),
        )
    });
    let mut out = json!({
        "id": invocation.id,
        "function": invocation.function,
        "state": invocation.state,
        "attempts": invocation.attempts,
        "max_attempts": invocation.max_attempts,
        "created": clock::rfc3339_us(invocation.created_us),
        "updated": clock::rfc3339_us(invocation.updated_us),
        "next_attempt": (invocation.state == invocations::State::Queued)
            .then(|| clock::rfc3339_us(invocation.next_attempt_us)),
        "status": invocation.status,
        "headers": headers,
        "error": invocation.error,
    });
    if let (Some(body), Value::Object(map)) = (&invocation.result_body, &mut out) {
        match std::str::from_utf8(body) {
            Ok(text) => map.insert("body".into(), Value::String(text.to_string())),
            Err(_) => map.insert(
                "body_base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            ),
        };
        map.insert(
            "body_truncated".into(),
            Value::Bool(invocation.result_truncated),
        );
    }
    out
}

fn json_line(value: &Value) -> Vec<u8> {
    let mut text = value.to_string();
    text.push('\n');
    text.into_bytes()
}

/// The value of `name` in a query string, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
