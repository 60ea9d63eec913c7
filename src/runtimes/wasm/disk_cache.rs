//! The on-disk cache of compiled modules: one file per (module bytes, engine)
//! pair, so that a new worker process deserializes in milliseconds what
//! would take the compiler much longer.
//!
//! A cache file is named by the SHA-256 of the engine fingerprint (wasmtime
//! version, target and every compilation setting, from
//! `Engine::precompile_compatibility_hash`) and the module bytes; it holds a
//! magic line, wasmtime's serialized artifact and the SHA-256 of that
//! artifact. Files are written whole to a temporary name and renamed, and a
//! file is only handed to wasmtime after its magic and checksum match: a
//! truncated, corrupted or foreign file is rejected (and recompiled over),
//! never deserialized. Nothing here panics on what the disk holds.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// First bytes of every cache file; bump the version when the layout changes.
const MAGIC: &[u8; 16] = b"corefn-cwasm-v1\n";
const CHECKSUM_LEN: usize = 32;
const FILE_EXTENSION: &str = "cwasm";

/// Largest cache file read back; larger ones are rejected (a compiled module
/// is a few times its wasm size, and modules are capped well below this).
const CACHE_FILE_BYTES_MAX: u64 = 1024 * 1024 * 1024;

pub(super) struct DiskCache {
    dir: PathBuf,
    /// SHA-256 state after the engine fingerprint, cloned per key.
    keyed: Sha256,
}

/// Why a cache file was not used.
#[derive(Debug)]
pub(super) enum Rejected {
    /// Wrong magic, wrong length or checksum mismatch.
    Corrupt,
    /// Intact, but wasmtime refused it (other version or settings).
    Incompatible,
    /// Could not be read.
    Io,
}

/// Feeds `Hash` output into SHA-256, so that the engine fingerprint is
/// stable across processes (std's hashers are randomly keyed).
struct Sha256Hasher<'a>(&'a mut Sha256);

impl Hasher for Sha256Hasher<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only the digest is used; `Hash` impls never call this.
        0
    }
}

impl DiskCache {
    pub(super) fn open(dir: &Path, engine: &Engine) -> io::Result<DiskCache> {
        fs::create_dir_all(dir)?;
        let mut keyed = Sha256::new();
        keyed.update(MAGIC);
        engine
            .precompile_compatibility_hash()
            .hash(&mut Sha256Hasher(&mut keyed));
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            keyed,
        })
    }

    /// The cache file for these module bytes under this engine.
    pub(super) fn path_for(&self, module_bytes: &[u8]) -> PathBuf {
        let mut hasher = self.keyed.clone();
        hasher.update(module_bytes);
        let digest = hasher.finalize();
        let mut name = String::with_capacity(2 * digest.len() + 1 + FILE_EXTENSION.len());
        for byte in digest {
            name.push(char::from(HEX[usize::from(byte >> 4)]));
            name.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        name.push('.');
        name.push_str(FILE_EXTENSION);
        self.dir.join(name)
    }

    /// The module in `path`, `Ok(None)` when there is no such file.
    pub(super) fn load(&self, engine: &Engine, path: &Path) -> Result<Option<Module>, Rejected> {
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(_) => return Err(Rejected::Io),
        };
        let len = file.metadata().map_err(|_| Rejected::Io)?.len();
        if len > CACHE_FILE_BYTES_MAX {
            return Err(Rejected::Corrupt);
        }
        let bytes = read_all(file, len).map_err(|_| Rejected::Io)?;
        let artifact = verified_artifact(&bytes).ok_or(Rejected::Corrupt)?;
        // SAFETY: `Module::deserialize` trusts its input to be an artifact
        // that wasmtime produced, for this engine's settings. `artifact`
        // passed the magic and SHA-256 checks of a file that only `store`
        // writes (whole, then renamed into place), and its name is derived
        // from this engine's compatibility fingerprint; wasmtime itself
        // also rejects artifacts of another version or configuration.
        let module =
            unsafe { Module::deserialize(engine, artifact) }.map_err(|_| Rejected::Incompatible)?;
        Ok(Some(module))
    }

    /// Writes the module's compiled artifact to `path`: to a temporary file
    /// first, renamed into place once complete, so that readers (other
    /// worker processes) see the whole file or none.
    pub(super) fn store(&self, module: &Module, path: &Path) -> io::Result<()> {
        let artifact = module.serialize().map_err(io::Error::other)?;
        let checksum = Sha256::digest(&artifact);
        static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp = self.dir.join(format!(
            ".tmp-{}-{}.{FILE_EXTENSION}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = fs::File::create(&temp)?;
            file.write_all(MAGIC)?;
            file.write_all(&artifact)?;
            file.write_all(&checksum)?;
            // No fsync: a file torn by a crash fails its checksum and is
            // recompiled, which is cheaper than an fsync per compile.
            drop(file);
            fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn read_all(file: fs::File, len: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(CACHE_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The artifact inside a cache file, if the file is intact.
fn verified_artifact(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(MAGIC.as_slice())?;
    let split = rest.len().checked_sub(CHECKSUM_LEN)?;
    let (artifact, checksum) = rest.split_at(split);
    (Sha256::digest(artifact).as_slice() == checksum).then_some(artifact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_is_verified() {
        let artifact = b"pretend artifact";
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(artifact);
        file.extend_from_slice(&Sha256::digest(artifact));
        assert_eq!(verified_artifact(&file), Some(&artifact[..]));

        let mut flipped = file.clone();
        flipped[MAGIC.len() + 3] ^= 1;
        assert_eq!(verified_artifact(&flipped), None);
        assert_eq!(verified_artifact(&file[..file.len() - 1]), None);
        assert_eq!(verified_artifact(&file[..10]), None);
        assert_eq!(verified_artifact(b""), None);
    }
}
