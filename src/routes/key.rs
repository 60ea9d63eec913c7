//! Route keys: `METHOD:/path`, where METHOD may be `ANY` and a path ending in
//! `/*` is a prefix that matches itself and everything below it.

use thiserror::Error;

use crate::http::rules::{self, METRICS_PATH, RESERVED_PATH_PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
        Method::Options,
    ];

    pub fn parse(text: &str) -> Option<Method> {
        Some(match text {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which methods a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodMatch {
    Exact(Method),
    Any,
}

/// Which paths a route answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    /// `/static/*` is stored as `/static`; `/*` as the empty string.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteKey {
    pub method: MethodMatch,
    pub pattern: PathPattern,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key must look like METHOD:/path")]
    Shape,
    #[error("unknown method {0:?} (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY)")]
    Method(String),
    #[error("path must start with '/'")]
    PathStart,
    #[error("path contains a space, control character, '?' or '#'")]
    PathCharacter,
    #[error("'*' is only allowed as a final '/*'")]
    Wildcard,
    #[error("paths under {RESERVED_PATH_PREFIX} and {METRICS_PATH} are reserved for corefn")]
    Reserved,
}

impl RouteKey {
    pub fn parse(key: &str) -> Result<RouteKey, KeyError> {
        let (method_text, path) = key.split_once(':').ok_or(KeyError::Shape)?;
        let method = if method_text == "ANY" {
            MethodMatch::Any
        } else {
            MethodMatch::Exact(
                Method::parse(method_text).ok_or_else(|| KeyError::Method(method_text.into()))?,
            )
        };
        if !path.starts_with('/') {
            return Err(KeyError::PathStart);
        }
        if path
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
        {
            return Err(KeyError::PathCharacter);
        }
        if rules::is_reserved_path(path) {
            return Err(KeyError::Reserved);
        }
        let pattern = match path.strip_suffix("/*") {
            Some(prefix) => PathPattern::Prefix(prefix.to_string()),
            None => PathPattern::Exact(path.to_string()),
        };
        let stem = match &pattern {
            PathPattern::Exact(p) | PathPattern::Prefix(p) => p,
        };
        if stem.contains('*') {
            return Err(KeyError::Wildcard);
        }
        Ok(RouteKey { method, pattern })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_prefix_and_any() {
        assert_eq!(
            RouteKey::parse("GET:/hello"),
            Ok(RouteKey {
                method: MethodMatch::Exact(Method::Get),
                pattern: PathPattern::Exact("/hello".into())
            })
        );
        assert_eq!(
            RouteKey::parse("ANY:/static/*"),
            Ok(RouteKey {
                method: MethodMatch::Any,
                pattern: PathPattern::Prefix("/static".into())
            })
        );
        assert_eq!(
            RouteKey::parse("GET:/*").map(|k| k.pattern),
            Ok(PathPattern::Prefix(String::new()))
        );
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(RouteKey::parse("/hello"), Err(KeyError::Shape));
        assert_eq!(
            RouteKey::parse("FETCH:/x"),
            Err(KeyError::Method("FETCH".into()))
        );
        assert_eq!(RouteKey::parse("GET:hello"), Err(KeyError::PathStart));
        assert_eq!(RouteKey::parse("GET:/a b"), Err(KeyError::PathCharacter));
        assert_eq!(RouteKey::parse("GET:/a/*/b"), Err(KeyError::Wildcard));
        assert_eq!(RouteKey::parse("GET:/_/health"), Err(KeyError::Reserved));
    }
}
