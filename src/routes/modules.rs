//! Where a route's code may live: a descriptor's `module` is a path
//! relative to `--functions-dir` that does not climb out of it (`..`), or
//! an absolute path inside the artifact store (as deploys write them).
//! Any other row is skipped and reported, so a row cannot run `/bin/sh`
//! with the request body as its script, or another directory's files.
//!
//! Checked by the watcher when a table is built, never on a request's
//! path. `--trust-module-paths` turns it off for setups whose every row
//! is trusted. Symbolic links inside `--functions-dir` are the operator's
//! (the demo directory is made of them) and are followed.

use std::path::{Component, Path, PathBuf};

/// The directories code may come from.
#[derive(Debug, Clone)]
pub struct ModuleRoots {
    store_dir: PathBuf,
}

impl ModuleRoots {
    /// The store made absolute against the current directory.
    pub fn new(store_dir: &Path) -> ModuleRoots {
        ModuleRoots {
            store_dir: std::path::absolute(store_dir).unwrap_or_else(|_| store_dir.to_path_buf()),
        }
    }

    /// Ok when `module` stays inside its root; else why not.
    pub fn check(&self, module: &str) -> Result<(), String> {
        let path = Path::new(module);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(format!(
                "module {module:?} climbs out of its directory (..)"
            ));
        }
        if path.is_absolute() && !path.starts_with(&self.store_dir) {
            return Err(format!(
                "module {module:?} is an absolute path outside the artifact store ({}); \
                 hand-written rows name files relative to --functions-dir",
                self.store_dir.display()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_stay_in_the_functions_dir_or_the_store() {
        let roots = ModuleRoots::new(Path::new("/var/lib/corefn/store"));
        for fine in [
            "hello.wat",
            "sub/dir/f.py",
            "/var/lib/corefn/store/ab/abcd.wat",
        ] {
            assert_eq!(roots.check(fine), Ok(()), "{fine}");
        }
        let refused = [
            ("../outside/secret", "climbs out"),
            ("sub/../../outside/secret", "climbs out"),
            ("/var/lib/corefn/store/../../etc/passwd", "climbs out"),
            ("/bin/sh", "outside the artifact store"),
            (
                "/var/lib/corefn/store-other/x.wat",
                "outside the artifact store",
            ),
        ];
        for (module, says) in refused {
            let verdict = roots.check(module);
            assert!(
                matches!(&verdict, Err(reason) if reason.contains(says)),
                "{module}: {verdict:?}"
            );
        }
    }
}
