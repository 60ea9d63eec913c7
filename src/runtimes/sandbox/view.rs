//! The filesystem a function's process sees: a root of its own (a small
//! tmpfs, read-only once built) holding the system's directories read-only,
//! the function's own directory read-only, a few device nodes, a fresh
//! `/proc` of its pid namespace and a private, size-capped `/tmp`. The
//! route database, the key file, the compiled-module cache, the host
//! programs of other runtimes and every other function's files are not in
//! it at all.
//!
//! A [`View`] is planned in the worker (paths resolved, every string made,
//! nothing left to allocate) and built in the child between fork and exec
//! by [`View::enter`] (before the pid namespace's first process is forked)
//! and [`View::finish`] (in that process). Nothing here decides a status.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::check;

/// Directories of the system a function's process sees read-only (those
/// this machine has; a symbolic link such as `/bin -> usr/bin` is copied
/// as a link).
const SYSTEM_PATHS: [&str; 9] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];
/// Device nodes a function's process may open (bound from the host's).
const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];
/// Size of a function process's private `/tmp` (and `/dev/shm`): what it
/// writes there counts towards this, not towards the host's disk.
pub const FUNCTION_TMP_BYTES_MAX: u64 = 64 << 20;
/// Files a function process's `/tmp` may hold.
const FUNCTION_TMP_FILES_MAX: u64 = 4096;
/// Where the old root is kept between `pivot_root` and its unmount.
const OLD_ROOT: &str = ".old-root";

/// What the view holds for one function, besides the system's paths.
#[derive(Debug, Clone)]
pub struct ViewRequest<'a> {
    /// The function's code: its directory is bound, or the file alone when
    /// it is a content-addressed artifact (named by its SHA-256) whose
    /// directory holds other functions' artifacts.
    pub module: &'a Path,
    /// Further paths bound read-only at the same place: the host programs'
    /// directory, and the interpreter (outside the system's directories,
    /// the whole installation it is in).
    pub extra: &'a [&'a Path],
}

/// One step of building the view, in order; every path is inside the
/// staging directory.
#[derive(Debug)]
enum Step {
    Dir(CString),
    File(CString),
    Symlink { target: CString, link: CString },
    BindReadOnly { source: CString, target: CString },
    Tmpfs { target: CString, options: CString },
}

/// A planned view; see the module doc.
#[derive(Debug)]
pub struct View {
    stage: CString,
    old_root_in_stage: CString,
    old_root: CString,
    steps: Vec<Step>,
    /// The module's real path (symbolic links resolved): the one that
    /// exists inside the view, and the one the process is given.
    module: PathBuf,
    /// Its directory, the process's working directory.
    cwd: CString,
}

/// The system part of every view, read once per worker.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    /// (path, link target if it is a symbolic link)
    entries: Vec<(PathBuf, Option<PathBuf>)>,
}

impl SystemPaths {
    pub fn read() -> SystemPaths {
        let entries = SYSTEM_PATHS
            .iter()
            .filter_map(|path| {
                let path = Path::new(path);
                let meta = std::fs::symlink_metadata(path).ok()?;
                if meta.file_type().is_symlink() {
                    Some((path.to_path_buf(), Some(std::fs::read_link(path).ok()?)))
                } else if meta.is_dir() {
                    Some((path.to_path_buf(), None))
                } else {
                    None
                }
            })
            .collect();
        SystemPaths { entries }
    }

    /// Whether `path` is inside a system directory the view already holds.
    fn covers(&self, path: &Path) -> bool {
        self.entries
            .iter()
            .any(|(dir, link)| link.is_none() && path.starts_with(dir))
    }
}

impl View {
    /// Plans the view of `request` with `stage` (an empty directory of the
    /// worker's) as the place it is built in.
    pub fn plan(system: &SystemPaths, stage: &Path, request: &ViewRequest<'_>) -> io::Result<View> {
        let mut plan = Planner {
            stage,
            steps: Vec::new(),
            dirs: Vec::new(),
        };
        for (path, link) in &system.entries {
            match link {
                Some(target) => plan.symlink(target, path)?,
                None => plan.bind(path, true)?,
            }
        }
        plan.dir(Path::new("/dev"))?;
        for device in DEVICES {
            let device = Path::new("/dev").join(device);
            if device.exists() {
                plan.bind(&device, false)?;
            }
        }
        for (link, target) in [
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
        ] {
            plan.symlink(Path::new(target), Path::new(link))?;
        }
        let tmp_options =
            format!("size={FUNCTION_TMP_BYTES_MAX},nr_inodes={FUNCTION_TMP_FILES_MAX},mode=1777");
        for dir in ["/tmp", "/dev/shm"] {
            plan.tmpfs(Path::new(dir), &tmp_options)?;
        }
        plan.dir(Path::new("/proc"))?;
        // The function's code, at its real path (a symbolic link to it is
        // resolved here: the link's own directory is not in the view).
        let module = std::fs::canonicalize(request.module)?;
        let own = match module.parent() {
            Some(dir) if !is_content_addressed(&module) => dir.to_path_buf(),
            _ => module.clone(),
        };
        if !system.covers(&own) {
            plan.bind(&own, own.is_dir())?;
        }
        for extra in request.extra {
            // A missing interpreter is the start's own error (501).
            let Ok(extra) = std::fs::canonicalize(extra) else {
                continue;
            };
            if system.covers(&extra) {
                continue;
            }
            // An interpreter outside the system's directories comes with
            // its installation: `PREFIX/bin/node` needs `PREFIX/lib`, a
            // version manager's `ROOT/shims/python3` needs `ROOT`.
            let installation = match extra.parent().and_then(Path::parent) {
                Some(prefix) if !extra.is_dir() && prefix.parent().is_some() => prefix,
                _ => &extra,
            };
            plan.bind(installation, installation.is_dir())?;
        }
        plan.dir(&Path::new("/").join(OLD_ROOT))?;
        Ok(View {
            stage: c_path(stage)?,
            old_root_in_stage: c_path(&stage.join(OLD_ROOT))?,
            old_root: c_path(&Path::new("/").join(OLD_ROOT))?,
            steps: plan.steps,
            cwd: c_path(module.parent().unwrap_or(Path::new("/")))?,
            module,
        })
    }

    /// The module's path inside the view (its real path).
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The process's working directory inside the view: the module's.
    pub fn cwd(&self) -> &Path {
        self.module.parent().unwrap_or(Path::new("/"))
    }

    /// In the child, in its new mount namespace (and before the pid
    /// namespace's first process is forked): builds the view in the stage
    /// and makes it the root. The old root stays reachable until
    /// [`View::finish`]: the kernel mounts a new `/proc` only where a
    /// whole one is still visible.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: plain system calls on strings made before the fork;
        // nothing is allocated.
        unsafe {
            let empty = c"".as_ptr();
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.stage.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"size=1048576,mode=0755".as_ptr().cast(),
            ))?;
            for step in &self.steps {
                match step {
                    Step::Dir(path) => {
                        if libc::mkdir(path.as_ptr(), 0o755) != 0
                            && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                        {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    Step::File(path) => {
                        let fd = libc::open(
                            path.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o644,
                        );
                        if fd < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        libc::close(fd);
                    }
                    Step::Symlink { target, link } => {
                        check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
                    }
                    Step::BindReadOnly { source, target } => {
                        check(libc::mount(
                            source.as_ptr(),
                            target.as_ptr(),
                            empty,
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ))?;
                        read_only_tree(target)?;
                    }
                    Step::Tmpfs { target, options } => {
                        check(libc::mount(
                            c"tmpfs".as_ptr(),
                            target.as_ptr(),
                            c"tmpfs".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NODEV,
                            options.as_ptr().cast(),
                        ))?;
                    }
                }
            }
            check(libc::syscall(
                libc::SYS_pivot_root,
                self.stage.as_ptr(),
                self.old_root_in_stage.as_ptr(),
            ) as libc::c_int)?;
            check(libc::chdir(c"/".as_ptr()))?;
        }
        Ok(())
    }

    /// In the pid namespace's first process: its `/proc`, the old root
    /// let go, the root made read-only, the working directory entered.
    pub fn finish(&self) -> io::Result<()> {
        // SAFETY: as in `enter`.
        unsafe {
            check(libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ))?;
            check(libc::umount2(self.old_root.as_ptr(), libc::MNT_DETACH))?;
            check(libc::rmdir(self.old_root.as_ptr()))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                std::ptr::null(),
            ))?;
            check(libc::chdir(self.cwd.as_ptr()))?;
        }
        Ok(())
    }
}

/// Makes the mount at `target` and every mount under it read-only (a
/// remount would leave the ones under it writable).
///
/// # Safety
/// Between fork and exec: a system call on a string made before the fork.
unsafe fn read_only_tree(target: &CString) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the caller's; `attr` lives across the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    } as libc::c_int)
}

/// Whether `module` is named like an artifact of the content-addressed
/// store (`<aa>/<64 hex digits>.<ext>`), whose directory is shared by every
/// artifact that starts with the same two digits.
fn is_content_addressed(module: &Path) -> bool {
    let stem = module.file_stem().map(OsStr::as_bytes).unwrap_or_default();
    stem.len() == 64 && stem.iter().all(u8::is_ascii_hexdigit)
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
}

/// Collects the steps; makes each directory on the way once.
struct Planner<'a> {
    stage: &'a Path,
    steps: Vec<Step>,
    dirs: Vec<PathBuf>,
}

impl Planner<'_> {
    /// The staging path of an absolute `path` of the view.
    fn staged(&self, path: &Path) -> PathBuf {
        let relative: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        self.stage.join(relative)
    }

    /// `path` and each directory above it, as directories of the view.
    fn dir(&mut self, path: &Path) -> io::Result<()> {
        let mut above = Vec::new();
        let mut current = Some(path);
        while let Some(dir) = current {
            if dir.parent().is_none() || self.dirs.iter().any(|d| d == dir) {
                break;
            }
            above.push(dir.to_path_buf());
            current = dir.parent();
        }
        for dir in above.into_iter().rev() {
            self.steps.push(Step::Dir(c_path(&self.staged(&dir))?));
            self.dirs.push(dir);
        }
        Ok(())
    }

    fn parent_of(&mut self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) => self.dir(parent),
            None => Ok(()),
        }
    }

    fn bind(&mut self, source: &Path, is_dir: bool) -> io::Result<()> {
        if is_dir {
            self.dir(source)?;
        } else {
            self.parent_of(source)?;
            self.steps.push(Step::File(c_path(&self.staged(source))?));
        }
        self.steps.push(Step::BindReadOnly {
            source: c_path(source)?,
            target: c_path(&self.staged(source))?,
        });
        Ok(())
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        self.parent_of(link)?;
        self.steps.push(Step::Symlink {
            target: c_path(target)?,
            link: c_path(&self.staged(link))?,
        });
        Ok(())
    }

    fn tmpfs(&mut self, target: &Path, options: &str) -> io::Result<()> {
        self.dir(target)?;
        self.steps.push(Step::Tmpfs {
            target: c_path(&self.staged(target))?,
            options: CString::new(options).map_err(io::Error::other)?,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_makes_each_directory_once_and_binds_the_function_s_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let functions = dir.path().join("functions/app");
        std::fs::create_dir_all(&functions).expect("mkdir");
        let module = functions.join("main.py");
        std::fs::write(&module, "x").expect("write");
        let system = SystemPaths::read();
        let stage = dir.path().join("stage");
        let view = View::plan(
            &system,
            &stage,
            &ViewRequest {
                module: &module,
                extra: &[],
            },
        )
        .expect("plan");
        let dirs: Vec<&CString> = view
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Dir(d) => Some(d),
                _ => None,
            })
            .collect();
        let mut unique = dirs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), dirs.len(), "{dirs:?}");
        let canonical = std::fs::canonicalize(&functions).expect("canonical");
        let staged = stage.join(canonical.strip_prefix("/").expect("absolute"));
        assert!(view.steps.iter().any(|s| matches!(s,
            Step::BindReadOnly { target, .. } if target.as_bytes() == staged.as_os_str().as_bytes())));
    }

    #[test]
    fn an_artifact_is_bound_alone() {
        let sha = "ab".repeat(32);
        assert!(is_content_addressed(Path::new(&format!("/s/ab/{sha}.py"))));
        assert!(!is_content_addressed(Path::new("/s/functions/hello.py")));
    }
}
