//! API keys: 256 random bits from the OS, shown once as `cfk_<64 hex>`,
//! stored as their SHA-256 (a key cannot be read back from the database),
//! with scopes `admin`, `deploy` and `invoke` (optionally limited to named
//! functions).
//!
//! A key's hash is what the published key snapshot holds; checking a
//! presented key is one SHA-256 and one hash-map lookup.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};

use crate::http::auth::hex;
use crate::http::auth::{key_hash, KEY_PREFIX};
const KEY_RANDOM_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Manage keys (and everything below).
    Admin,
    /// Create, change and delete functions, versions and aliases.
    Deploy,
    /// Call functions whose `auth` is `key`.
    Invoke,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Admin, Scope::Deploy, Scope::Invoke];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Deploy => "deploy",
            Scope::Invoke => "invoke",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == text)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A new key: the secret (shown once) and what is stored.
pub struct NewKey {
    pub secret: String,
    pub id: String,
    pub hash: String,
}

/// Fills `bytes` from the OS's randomness (the one place corefn reads
/// it: keys here, seeds elsewhere).
pub fn os_random(bytes: &mut [u8]) -> io::Result<()> {
    File::open("/dev/urandom")?.read_exact(bytes)
}

/// Makes a key from the OS's randomness.
pub fn generate() -> io::Result<NewKey> {
    let mut random = [0u8; KEY_RANDOM_BYTES];
    os_random(&mut random)?;
    let secret = format!("{KEY_PREFIX}{}", hex(&random));
    let hash = key_hash(&secret);
    // The id is public (lists, revocation): derived from the hash, it says
    // nothing about the secret.
    let id = hash[..16].to_string();
    Ok(NewKey { secret, id, hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_stored_hashed() {
        let a = generate().expect("key");
        let b = generate().expect("key");
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(a.secret.len(), KEY_PREFIX.len() + 2 * KEY_RANDOM_BYTES);
        assert_eq!(key_hash(&a.secret), a.hash);
        assert!(!a.hash.contains(&a.secret[KEY_PREFIX.len()..]));
        assert_eq!(a.id, a.hash[..16]);
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(Scope::parse("deploy"), Some(Scope::Deploy));
        assert_eq!(Scope::parse("root"), None);
    }
}
