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

/// Extensions an artifact may have: what the runtimes tell code apart by;
/// `d` is a directory (an archive's files), whose entry file the version
/// names.
pub const EXTENSIONS: [&str; 9] = [
    "wasm", "wat", "py", "js", "php", "sh", "so", "bin", DIRECTORY,
];
pub const DIRECTORY: &str = "d";

/// The known extension `name` is, as the `'static` the store hands out.
pub fn extension(name: &str) -> Option<&'static str> {
    EXTENSIONS.into_iter().find(|e| *e == name)
}

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

    /// Writes what `fill` makes at a temporary name next to `path`, then
    /// renames it to `path` and fsyncs the directory: readers see all of it
    /// or nothing. The temporary is removed on failure.
    fn publish(&self, path: &Path, fill: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
        let shard_dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&shard_dir)?;
        let temp = shard_dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let written = fill(&temp)
            .and_then(|()| fs::rename(&temp, path))
            .and_then(|()| File::open(&shard_dir)?.sync_all());
        if written.is_err() {
            let _ = fs::remove_file(&temp);
            let _ = fs::remove_dir_all(&temp);
        }
        written
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
        self.publish(&path, |temp| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if extension == "sh" || extension == "bin" {
                    0o755
                } else {
                    0o644
                })
                .open(temp)?;
            file.write_all(bytes)?;
            file.sync_all()
        })?;
        Ok(artifact)
    }

    /// Stores a tree of files (relative `/`-separated paths, executable or
    /// not) as a directory named by the SHA-256 of its canonical listing;
    /// written into a temporary directory, each file fsynced, then renamed
    /// into place, and never changed afterwards.
    pub fn put_tree(&self, files: &[(&str, &[u8], bool)]) -> io::Result<Artifact> {
        let mut sorted: Vec<&(&str, &[u8], bool)> = files.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        for (path, bytes, executable) in &sorted {
            assert!(
                !path.is_empty()
                    && !path.starts_with('/')
                    && !path.split('/').any(|c| c == ".." || c.is_empty()),
                "paths were checked on unpacking"
            );
            hasher.update(path.as_bytes());
            hasher.update([0, u8::from(*executable)]);
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
            total += bytes.len() as u64;
        }
        let sha256 = hex(&hasher.finalize());
        let path = self.path_of(&sha256, DIRECTORY);
        let artifact = Artifact {
            sha256,
            extension: DIRECTORY,
            path: path.clone(),
            bytes: total,
        };
        if path.exists() {
            return Ok(artifact);
        }
        self.publish(&path, |temp| {
            for (relative, bytes, executable) in &sorted {
                let target = temp.join(relative);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if *executable { 0o755 } else { 0o644 })
                    .open(&target)?;
                file.write_all(bytes)?;
                file.sync_all()?;
            }
            Ok(())
        })?;
        Ok(artifact)
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
                    if entry.file_type()?.is_dir() {
                        fs::remove_dir_all(entry.path())?;
                    } else {
                        fs::remove_file(entry.path())?;
                    }
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
        let tree = store
            .put_tree(&[
                ("index.js", b"x".as_slice(), false),
                ("lib/a.js", b"y".as_slice(), false),
            ])
            .expect("tree");
        assert_eq!(fs::read(tree.path.join("lib/a.js")).expect("read"), b"y");
        let same = store
            .put_tree(&[
                ("lib/a.js", b"y".as_slice(), false),
                ("index.js", b"x".as_slice(), false),
            ])
            .expect("tree again");
        assert_eq!(
            same.sha256, tree.sha256,
            "the listing's order does not matter"
        );
        let b = store.put(b"print(1)", "py").expect("put");
        assert_ne!(a.sha256, b.sha256);
        let keep: HashSet<String> = [b.sha256.clone()].into();
        assert_eq!(
            store.collect(&keep).expect("collect"),
            2,
            "the file and the tree"
        );
        assert!(!tree.path.exists());
        assert!(!a.path.exists());
        assert!(b.path.exists());
    }
}
