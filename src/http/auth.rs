//! Bearer keys as HTTP carries them: the `Authorization: Bearer KEY`
//! header, and the SHA-256 a key is stored and looked up by (the control
//! plane keeps only hashes; the cores compare hashes from a published
//! snapshot). Pure functions.

use sha2::{Digest, Sha256};

/// The text every corefn key starts with, so that a leaked one is
/// recognisable.
pub const KEY_PREFIX: &str = "cfk_";

/// The key of an `Authorization: Bearer KEY` header value.
pub fn bearer(header_value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header_value).ok()?.trim();
    let (scheme, key) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// What is stored for (and looked up by) a key: its SHA-256, hex.
pub fn key_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// What a key may invoke: any function, or the named ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyGrant {
    pub functions: Option<Vec<String>>,
}

impl KeyGrant {
    /// From a key row's `functions` column (a JSON list, or NULL for any).
    /// A list that does not parse grants nothing rather than everything.
    pub fn from_stored(functions: Option<&str>) -> KeyGrant {
        KeyGrant {
            functions: functions
                .map(|json| serde_json::from_str::<Vec<String>>(json).unwrap_or_default()),
        }
    }

    /// `function` None: a call that names no function (only an unlimited
    /// key may make it).
    pub fn allows(&self, function: Option<&str>) -> bool {
        match (&self.functions, function) {
            (None, _) => true,
            (Some(names), Some(function)) => names.iter().any(|n| n == function),
            (Some(_), None) => false,
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_function_list_limits_a_grant_and_a_broken_one_grants_nothing() {
        assert!(KeyGrant::from_stored(None).allows(Some("any")));
        let limited = KeyGrant::from_stored(Some(r#"["greet"]"#));
        assert!(limited.allows(Some("greet")));
        assert!(!limited.allows(Some("other")) && !limited.allows(None));
        assert!(!KeyGrant::from_stored(Some("not json")).allows(Some("greet")));
    }

    #[test]
    fn bearer_header_is_parsed() {
        assert_eq!(bearer(b"Bearer cfk_x"), Some("cfk_x"));
        assert_eq!(bearer(b"bearer  cfk_x "), Some("cfk_x"));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"cfk_x"), None);
        assert_eq!(key_hash("a").len(), 64);
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
    }
}
