//! The content-addressed artifact store (`--store-dir`): uploaded and
//! compiled code, one file per SHA-256, named `<aa>/<sha256>.<ext>`.
//!
//! A file is written once, atomically (a temporary file in the store,
//! fsync, rename, fsync of the directory) and never overwritten: a version
//! names its artifact by hash, and whatever reads that path reads those
//! bytes. Collection removes files no version refers to.
//!
//! Blocking file I/O: control plane only, never on a core.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::http::auth::hex;

/// Extensions an artifact may have: what the runtimes tell code apart by.
pub const EXTENSIONS: [&str; 8] = ["wasm", "wat", "py", "js", "php", "sh", "so", "bin"];

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub sha256: String,
    pub extension: &'static str,
    pub path: PathBuf,
    pub bytes: u64,
}

pub struct ArtifactStore {
    dir: PathBuf,
    temp_counter: AtomicU64,
}

impl ArtifactStore {
    /// Opens (creates) the store. The directory is made absolute so that
    /// the paths it hands out are valid from any working directory.
    pub fn open(dir: &Path) -> io::Result<ArtifactStore> {
        fs::create_dir_all(dir)?;
        let dir = std::path::absolute(dir)?;
        Ok(ArtifactStore {
            dir,
            temp_counter: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, sha256: &str, extension: &str) -> PathBuf {
        let shard = sha256.get(..2).unwrap_or("00");
        self.dir.join(shard).join(format!("{sha256}.{extension}"))
    }

    /// Stores `bytes` under their hash; an artifact already there is kept
    /// as it is (same hash, same bytes).
    pub fn put(&self, bytes: &[u8], extension: &'static str) -> io::Result<Artifact> {
        assert!(EXTENSIONS.contains(&extension), "known extension");
        let sha256 = hex(&Sha256::digest(bytes));
        let path = self.path_of(&sha256, extension);
        let artifact = Artifact {
            sha256,
            extension,
            path: path.clone(),
            bytes: bytes.len() as u64,
        };
        if path.exists() {
            return Ok(artifact);
        }
        let shard_dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&shard_dir)?;
        let temp = shard_dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if extension == "sh" || extension == "bin" {
                    0o755
                } else {
                    0o644
                })
                .open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            File::open(&shard_dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map(|()| artifact)
    }

    /// Removes every artifact whose hash is not in `referenced`; returns
    /// how many files went.
    pub fn collect(&self, referenced: &HashSet<String>) -> io::Result<usize> {
        let mut removed = 0;
        for shard in fs::read_dir(&self.dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".tmp-") {
                    continue;
                }
                let sha = name.split('.').next().unwrap_or_default();
                if !referenced.contains(sha) {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArtifactStore::open(dir.path()).expect("open");
        let a = store.put(b"(module)", "wat").expect("put");
        assert_eq!(a.sha256.len(), 64);
        assert_eq!(fs::read(&a.path).expect("read"), b"(module)");
        let again = store.put(b"(module)", "wat").expect("put again");
        assert_eq!(again, a);
        let b = store.put(b"print(1)", "py").expect("put");
        assert_ne!(a.sha256, b.sha256);
        let keep: HashSet<String> = [b.sha256.clone()].into();
        assert_eq!(store.collect(&keep).expect("collect"), 1);
        assert!(!a.path.exists());
        assert!(b.path.exists());
    }
}
