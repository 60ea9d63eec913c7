//! Dropping root: who the workers, and every function process they start,
//! run as when corefn is started by root (`--run-as USER`, default
//! [`RUN_AS_DEFAULT`]; `--run-as root` keeps root, for setups whose every
//! function is trusted).
//!
//! The gateway prepares what the workers may touch: the compiled-module
//! cache becomes the user's, and the route database and key file stay
//! root's with mode 0600. Each worker drops to the user once it has set
//! itself up (its inherited channels, its metrics socket connected, its host
//! programs written), before it serves anything: from then on it and its
//! children have no capabilities, no supplementary groups and
//! `no_new_privs`. Nothing here decides an HTTP status.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid, User};
use thiserror::Error;

use crate::schema::file::sidecar_path;

/// The user a root-started corefn runs its workers as unless told.
pub const RUN_AS_DEFAULT: &str = "nobody";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Error)]
pub enum PrivilegeError {
    #[error("--run-as {0}: no such user")]
    NoUser(String),
    #[error("--run-as {name}: cannot look the user up: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("--run-as {0}: only root can run the workers as another user")]
    NotRoot(String),
    #[error("cannot drop to uid {uid}, gid {gid}: {source}")]
    Drop {
        uid: u32,
        gid: u32,
        source: io::Error,
    },
    #[error("cannot prepare {path} for uid {uid}: {source}")]
    Prepare {
        path: PathBuf,
        uid: u32,
        source: io::Error,
    },
}

/// Who the workers become: `None` when they stay who corefn is (corefn is
/// not root, or `--run-as root`).
pub fn resolve(asked: Option<&str>) -> Result<Option<RunAs>, PrivilegeError> {
    let name = asked.unwrap_or(RUN_AS_DEFAULT);
    let lookup = |name: &str| {
        User::from_name(name)
            .map_err(|source| PrivilegeError::Lookup {
                name: name.to_string(),
                source,
            })?
            .ok_or_else(|| PrivilegeError::NoUser(name.to_string()))
    };
    if !Uid::effective().is_root() {
        // Without root there is no one else to become; asking for oneself
        // is fine.
        return match asked {
            Some(name) if lookup(name)?.uid != Uid::effective() => {
                Err(PrivilegeError::NotRoot(name.to_string()))
            }
            _ => Ok(None),
        };
    }
    let user = lookup(name)?;
    if user.uid.is_root() {
        return Ok(None);
    }
    Ok(Some(RunAs {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// In a worker, once it is set up: the user's group alone, then its uid
/// (real, effective and saved, so there is no way back), then
/// `no_new_privs`. Leaving uid 0 clears every capability.
pub fn drop_to(run_as: RunAs) -> Result<(), PrivilegeError> {
    let failed = |source: io::Error| PrivilegeError::Drop {
        uid: run_as.uid,
        gid: run_as.gid,
        source,
    };
    let gid = Gid::from_raw(run_as.gid);
    let uid = Uid::from_raw(run_as.uid);
    setgroups(&[gid]).map_err(|e| failed(e.into()))?;
    setresgid(gid, gid, gid).map_err(|e| failed(e.into()))?;
    setresuid(uid, uid, uid).map_err(|e| failed(e.into()))?;
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    assert!(
        Uid::current() == uid && Uid::effective() == uid,
        "the worker runs as uid {uid} now"
    );
    Ok(())
}

/// What the gateway does before it starts workers that will drop to
/// `run_as`: the database stays root's and unreadable to them, and the
/// compiled-module cache (which the workers write) becomes theirs.
pub fn prepare(run_as: RunAs, db: &Path, cache_dir: &Path) -> Result<(), PrivilegeError> {
    let failed = |path: &Path, source: io::Error| PrivilegeError::Prepare {
        path: path.to_path_buf(),
        uid: run_as.uid,
        source,
    };
    for suffix in ["", "-wal", "-shm"] {
        let path = sidecar_path(db, suffix);
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(failed(&path, error)),
        }
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| failed(cache_dir, e))?;
    give_tree(cache_dir, run_as).map_err(|e| failed(cache_dir, e))
}

/// Whether `run_as` can enter `dir` by its absolute path (every directory
/// above it searchable): asked of the shell's `test -x` run as that user, since root
/// passes every check itself. A functions directory under root's home
/// fails this, and its functions would answer 502.
pub fn can_enter(run_as: RunAs, dir: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    // The shell's own `test`, whatever PATH holds.
    std::process::Command::new("/bin/sh")
        .args(["-c", "test -x \"$1\"", "sh"])
        .arg(&dir)
        .uid(run_as.uid)
        .gid(run_as.gid)
        .status()
        .is_ok_and(|status| status.success())
}

/// `dir` and everything below it owned by `run_as` (links themselves, not
/// what they point to).
fn give_tree(dir: &Path, run_as: RunAs) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(run_as.uid), Some(run_as.gid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            give_tree(&entry?.path(), run_as)?;
        }
    }
    Ok(())
}
