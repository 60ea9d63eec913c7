//! The route descriptor: the JSON in the `v` column of `functions`.
//!
//! Parsing rejects unknown keys and checks every bound, so a bad row is
//! reported with a reason instead of misbehaving at request time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const TIMEOUT_MS_DEFAULT: u64 = 30_000;
pub const TIMEOUT_MS_MAX: u64 = 15 * 60 * 1000;
pub const MEMORY_MB_DEFAULT: u64 = 128;
pub const MEMORY_MB_MAX: u64 = 64 * 1024;
/// Headers the gateway writes itself; a descriptor may not set them.
const GATEWAY_OWNED_HEADERS: [&str; 4] =
    ["content-length", "transfer-encoding", "connection", "date"];

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
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DescriptorError {
    #[error("descriptor is not valid JSON for a route: {0}")]
    Json(String),
    #[error("runtime {0} needs a \"module\"")]
    ModuleMissing(&'static str),
    #[error("\"body\" is only for the static runtime")]
    BodyNotStatic,
    #[error("status {0} is outside 200..=599")]
    Status(u16),
    #[error("timeout_ms {0} is outside 1..={TIMEOUT_MS_MAX}")]
    Timeout(u64),
    #[error("memory_mb {0} is outside 1..={MEMORY_MB_MAX}")]
    Memory(u64),
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
}

impl Descriptor {
    pub fn parse(json: &str) -> Result<Descriptor, DescriptorError> {
        let descriptor: Descriptor =
            serde_json::from_str(json).map_err(|e| DescriptorError::Json(e.to_string()))?;
        descriptor.validate()?;
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
        if !(200..=599).contains(&self.status) {
            return Err(DescriptorError::Status(self.status));
        }
        if !(1..=TIMEOUT_MS_MAX).contains(&self.timeout_ms) {
            return Err(DescriptorError::Timeout(self.timeout_ms));
        }
        if !(1..=MEMORY_MB_MAX).contains(&self.memory_mb) {
            return Err(DescriptorError::Memory(self.memory_mb));
        }
        if self.max_concurrency == Some(0) {
            return Err(DescriptorError::Concurrency);
        }
        for (name, value) in &self.headers {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(DescriptorError::HeaderName(name.clone()));
            }
            if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(DescriptorError::HeaderValue(name.clone()));
            }
            let lower = name.to_ascii_lowercase();
            if GATEWAY_OWNED_HEADERS.contains(&lower.as_str()) {
                return Err(DescriptorError::HeaderReserved(name.clone()));
            }
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(DescriptorError::EnvKey(key.clone()));
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

/// RFC 9110 `tchar`.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unknown_runtime_is_rejected() {
        assert!(matches!(
            Descriptor::parse(r#"{"runtime":"cobol","module":"x"}"#),
            Err(DescriptorError::Json(_))
        ));
    }
}
