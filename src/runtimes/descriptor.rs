//! The descriptor: what a route runs and how, the JSON in the `v` column of
//! `functions`. It lives with the runtimes because it is their contract: the
//! route table parses it to build a route, and a worker parses the same
//! text to run the function.
//!
//! Parsing rejects unknown keys, checks every bound and asks the runtime
//! whether it can do what the row asks (a wasm instance's memory is capped
//! by its pool slot), so a bad row is reported with a reason instead of
//! misbehaving at request time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::http::rules::{self, is_function_name, RESPONSE_STATUS_RANGE};

pub const TIMEOUT_MS_DEFAULT: u64 = 30_000;
pub const TIMEOUT_MS_MAX: u64 = 15 * 60 * 1000;
pub const MEMORY_MB_DEFAULT: u64 = 128;
pub const MEMORY_MB_MAX: u64 = 64 * 1024;
/// Longest descriptor of a function route: its text travels in every
/// dispatch to a worker. (Static routes never leave the gateway; their
/// body may be larger.)
pub const DESCRIPTOR_BYTES_MAX: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Wasm,
    Native,
    Exec,
    Python,
    Node,
    Php,
    Static,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Wasm => "wasm",
            Runtime::Native => "native",
            Runtime::Exec => "exec",
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Php => "php",
            Runtime::Static => "static",
        }
    }

    /// Its calls run on the worker thread that took them (wasm, native):
    /// the thread computes rather than waits. The others wait on a process
    /// of their own (a language host, an exec call) for the whole call.
    pub fn runs_on_the_calling_thread(self) -> bool {
        matches!(self, Runtime::Wasm | Runtime::Native | Runtime::Static)
    }

    /// The largest `memory_mb` this runtime can honour. A wasm instance
    /// lives in a pooled slot reserved at worker start, so its cap is the
    /// slot size; the process runtimes take any value up to
    /// [`MEMORY_MB_MAX`].
    pub fn memory_mb_max(self) -> u64 {
        match self {
            Runtime::Wasm => crate::runtimes::wasm::MEMORY_MB_MAX_DEFAULT,
            _ => MEMORY_MB_MAX,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    pub runtime: Runtime,
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default = "timeout_ms_default")]
    pub timeout_ms: u64,
    #[serde(default = "memory_mb_default")]
    pub memory_mb: u64,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Requests per second the route accepts (token bucket); above, 429.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The deployed function this route serves (written by the registry):
    /// `x-corefn-version: N` then reaches its version N at `/fn/NAME@N`.
    #[serde(default)]
    pub function: Option<String>,
    /// The version of `function` this route serves (written by the
    /// registry): stats and logs are kept per version.
    #[serde(default)]
    pub version: Option<u32>,
    /// A share of the requests that go to another version of `function`.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// `key`: callers need an invoke key (`Authorization: Bearer`).
    #[serde(default)]
    pub auth: Option<FunctionAuth>,
    /// Warm hosts kept per worker once called (python, node, php);
    /// default `--host-min-instances`.
    #[serde(default)]
    pub min_instances: Option<u32>,
    /// Hosts per worker at most (python, node, php): a call when all are
    /// busy is a 503; default `--worker-threads`.
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// Python, node, php, exec: the function's processes share the
    /// worker's network; without it each has a network namespace of its
    /// own with nothing in it.
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "status_default")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn timeout_ms_default() -> u64 {
    TIMEOUT_MS_DEFAULT
}
fn memory_mb_default() -> u64 {
    MEMORY_MB_DEFAULT
}
fn status_default() -> u16 {
    200
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionAuth {
    Public,
    Key,
}

/// `weight` (0..=1) of the requests go to `version` instead.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub version: u32,
    pub weight: f64,
}

/// The path prefix that serves version `version` of function `name`.
pub fn version_path(name: &str, version: u32) -> String {
    format!("/fn/{name}@{version}")
}

/// Bounds of a rate limit.
pub const RATE_RPS_MAX: f64 = 1_000_000.0;
pub const RATE_BURST_MAX: u32 = 1_000_000;

/// A token bucket: `rps` tokens a second, at most `burst` saved up
/// (default: one second's worth, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub rps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimit {
    pub fn burst_or_default(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.rps.ceil().clamp(1.0, f64::from(RATE_BURST_MAX)) as u32)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DescriptorError {
    #[error("descriptor is not valid JSON for a route: {0}")]
    Json(String),
    #[error("runtime {0} needs a \"module\"")]
    ModuleMissing(&'static str),
    #[error("\"body\" is only for the static runtime")]
    BodyNotStatic,
    #[error("status {0} is outside {lo}..={hi}", lo = RESPONSE_STATUS_RANGE.start(), hi = RESPONSE_STATUS_RANGE.end())]
    Status(u16),
    #[error("timeout_ms {0} is outside 1..={TIMEOUT_MS_MAX}")]
    Timeout(u64),
    #[error("memory_mb {0} is outside 1..={MEMORY_MB_MAX}")]
    Memory(u64),
    #[error("memory_mb {asked} is more than the {runtime} runtime can give (at most {max})")]
    MemoryOverRuntime {
        runtime: &'static str,
        asked: u64,
        max: u64,
    },
    #[error(
        "descriptor of {0} bytes is over the {DESCRIPTOR_BYTES_MAX}-byte limit of function routes"
    )]
    TooLarge(usize),
    #[error("rate_limit.rps must be above 0 and at most {RATE_RPS_MAX}")]
    RateRps,
    #[error("rate_limit.burst must be 1..={RATE_BURST_MAX}")]
    RateBurst,
    #[error("canary needs \"function\", a version of at least 1 and a weight in 0..=1")]
    Canary,
    #[error("function {0:?} is not a function name")]
    FunctionName(String),
    #[error("min_instances and max_instances are for the python, node and php runtimes, 0 <= min <= max, max >= 1")]
    Instances,
    #[error("max_concurrency must be at least 1")]
    Concurrency,
    #[error("header name {0:?} is not a valid HTTP token")]
    HeaderName(String),
    #[error("header {0:?} has a value with control characters")]
    HeaderValue(String),
    #[error("header {0:?} is set by the gateway and cannot be overridden")]
    HeaderReserved(String),
    #[error("env key {0:?} is empty or contains '=' or NUL")]
    EnvKey(String),
    /// A process environment cannot carry a NUL: such a value would make
    /// the row valid and every start of its process fail.
    #[error("env value of {0:?} contains NUL")]
    EnvValue(String),
}

impl Descriptor {
    pub fn parse(json: &str) -> Result<Descriptor, DescriptorError> {
        let descriptor: Descriptor =
            serde_json::from_str(json).map_err(|e| DescriptorError::Json(e.to_string()))?;
        descriptor.validate()?;
        if descriptor.runtime != Runtime::Static && json.len() > DESCRIPTOR_BYTES_MAX {
            return Err(DescriptorError::TooLarge(json.len()));
        }
        Ok(descriptor)
    }

    fn validate(&self) -> Result<(), DescriptorError> {
        if self.runtime != Runtime::Static {
            if self.module.as_deref().is_none_or(str::is_empty) {
                return Err(DescriptorError::ModuleMissing(self.runtime.name()));
            }
            if self.body.is_some() {
                return Err(DescriptorError::BodyNotStatic);
            }
        }
        if !RESPONSE_STATUS_RANGE.contains(&self.status) {
            return Err(DescriptorError::Status(self.status));
        }
        if !(1..=TIMEOUT_MS_MAX).contains(&self.timeout_ms) {
            return Err(DescriptorError::Timeout(self.timeout_ms));
        }
        if !(1..=MEMORY_MB_MAX).contains(&self.memory_mb) {
            return Err(DescriptorError::Memory(self.memory_mb));
        }
        if self.memory_mb > self.runtime.memory_mb_max() {
            return Err(DescriptorError::MemoryOverRuntime {
                runtime: self.runtime.name(),
                asked: self.memory_mb,
                max: self.runtime.memory_mb_max(),
            });
        }
        if let Some(rate) = &self.rate_limit {
            if !(rate.rps.is_finite() && rate.rps > 0.0 && rate.rps <= RATE_RPS_MAX) {
                return Err(DescriptorError::RateRps);
            }
            if rate
                .burst
                .is_some_and(|b| !(1..=RATE_BURST_MAX).contains(&b))
            {
                return Err(DescriptorError::RateBurst);
            }
        }
        if let Some(function) = &self.function {
            if !is_function_name(function) {
                return Err(DescriptorError::FunctionName(function.clone()));
            }
        }
        if let Some(canary) = &self.canary {
            if self.function.is_none()
                || canary.version == 0
                || !(0.0..=1.0).contains(&canary.weight)
            {
                return Err(DescriptorError::Canary);
            }
        }
        if self.min_instances.is_some() || self.max_instances.is_some() {
            let hosted = matches!(self.runtime, Runtime::Python | Runtime::Node | Runtime::Php);
            let max_ok = self.max_instances.is_none_or(|max| max >= 1);
            let order_ok = match (self.min_instances, self.max_instances) {
                (Some(min), Some(max)) => min <= max,
                _ => true,
            };
            if !(hosted && max_ok && order_ok) {
                return Err(DescriptorError::Instances);
            }
        }
        if self.max_concurrency == Some(0) {
            return Err(DescriptorError::Concurrency);
        }
        for (name, value) in &self.headers {
            if !rules::is_token(name.as_bytes()) {
                return Err(DescriptorError::HeaderName(name.clone()));
            }
            if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(DescriptorError::HeaderValue(name.clone()));
            }
            if rules::is_gateway_owned_header(name) {
                return Err(DescriptorError::HeaderReserved(name.clone()));
            }
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(DescriptorError::EnvKey(key.clone()));
            }
            if value.contains('\0') {
                return Err(DescriptorError::EnvValue(key.clone()));
            }
        }
        Ok(())
    }

    /// Response headers with the default content type filled in.
    pub fn response_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if !headers.iter().any(|(k, _)| k == "content-type") {
            headers.push(("content-type".into(), "text/plain".into()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_env_value_with_nul_is_refused_when_the_row_is_read() {
        let row = r#"{"runtime":"python","module":"f.py","env":{"K":"a\u0000b"}}"#;
        let error = Descriptor::parse(row)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(error, Err("env value of \"K\" contains NUL".to_string()));
        let fine = r#"{"runtime":"python","module":"f.py","env":{"K":"a b"}}"#;
        assert!(Descriptor::parse(fine).is_ok());
    }

    #[test]
    fn static_descriptor_gets_defaults() {
        let d = Descriptor::parse(r#"{"runtime":"static","body":"hi"}"#).expect("valid");
        assert_eq!(d.status, 200);
        assert_eq!(d.timeout_ms, TIMEOUT_MS_DEFAULT);
        assert_eq!(
            d.response_headers(),
            vec![("content-type".to_string(), "text/plain".to_string())]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Descriptor::parse(r#"{"runtime":"static","bodyy":"hi"}"#).unwrap_err();
        assert!(
            matches!(err, DescriptorError::Json(ref m) if m.contains("bodyy")),
            "{err}"
        );
    }

    #[test]
    fn wasm_needs_a_module() {
        assert_eq!(
            Descriptor::parse(r#"{"runtime":"wasm"}"#),
            Err(DescriptorError::ModuleMissing("wasm"))
        );
        assert!(Descriptor::parse(r#"{"runtime":"wasm","module":"hello.wasm"}"#).is_ok());
    }

    #[test]
    fn bounds_are_checked() {
        assert_eq!(
            Descriptor::parse(r#"{"runtime":"static","status":999}"#),
            Err(DescriptorError::Status(999))
        );
        assert_eq!(
            Descriptor::parse(r#"{"runtime":"static","timeout_ms":0}"#),
            Err(DescriptorError::Timeout(0))
        );
        assert_eq!(
            Descriptor::parse(r#"{"runtime":"static","headers":{"Content-Length":"3"}}"#),
            Err(DescriptorError::HeaderReserved("Content-Length".into()))
        );
        assert_eq!(
            Descriptor::parse(r#"{"runtime":"static","headers":{"x":"a\r\nb"}}"#),
            Err(DescriptorError::HeaderValue("x".into()))
        );
        assert_eq!(
            Descriptor::parse(r#"{"runtime":"static","headers":{"a b":"c"}}"#),
            Err(DescriptorError::HeaderName("a b".into()))
        );
    }

    #[test]
    fn memory_beyond_what_the_runtime_can_give_is_rejected() {
        let max = Runtime::Wasm.memory_mb_max();
        let asked = format!(
            r#"{{"runtime":"wasm","module":"m.wat","memory_mb":{}}}"#,
            max + 1
        );
        assert_eq!(
            Descriptor::parse(&asked),
            Err(DescriptorError::MemoryOverRuntime {
                runtime: "wasm",
                asked: max + 1,
                max,
            })
        );
        let at_cap = format!(r#"{{"runtime":"wasm","module":"m.wat","memory_mb":{max}}}"#);
        assert!(Descriptor::parse(&at_cap).is_ok());
        assert!(
            Descriptor::parse(r#"{"runtime":"python","module":"m.py","memory_mb":4096}"#).is_ok()
        );
    }

    #[test]
    fn a_function_descriptor_must_fit_a_dispatch() {
        let env = "x".repeat(DESCRIPTOR_BYTES_MAX);
        let json = format!(r#"{{"runtime":"wasm","module":"m.wat","env":{{"K":"{env}"}}}}"#);
        assert_eq!(
            Descriptor::parse(&json),
            Err(DescriptorError::TooLarge(json.len()))
        );
        let body = "x".repeat(DESCRIPTOR_BYTES_MAX);
        let big_static = format!(r#"{{"runtime":"static","body":"{body}"}}"#);
        assert!(
            Descriptor::parse(&big_static).is_ok(),
            "static routes stay in the gateway"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_the_gateways_too() {
        assert_eq!(
            Descriptor::parse(r#"{"runtime":"static","headers":{"Upgrade":"h2c"}}"#),
            Err(DescriptorError::HeaderReserved("Upgrade".into()))
        );
    }

    #[test]
    fn unknown_runtime_is_rejected() {
        assert!(matches!(
            Descriptor::parse(r#"{"runtime":"cobol","module":"x"}"#),
            Err(DescriptorError::Json(_))
        ));
    }
}
