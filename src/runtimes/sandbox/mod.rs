//! What a function's process (a language host, an exec call) may not do,
//! set between fork and exec after its limits
//! ([`super::process::ChildLimits`]):
//!
//! * user, mount, pid, ipc and uts namespaces of its own, and in the mount
//!   one a read-only [`view`] of the system's directories and its own
//!   function's, with a private `/tmp`: the route database, the key file,
//!   the module cache, other functions' files and every process outside
//!   its own are simply not there. Its uid is mapped to itself, and
//!   `RLIMIT_NPROC` ([`FUNCTION_TASKS_MAX`]) counts only the namespace's
//!   tasks;
//! * a network namespace with no interface up (not even loopback), unless
//!   the function's config says `"network": true`: a host gets its own,
//!   exec calls join one per worker (making one per request cost two
//!   thirds of exec's throughput);
//! * `no_new_privs`, and a seccomp filter (built with `seccompiler`) that
//!   fails with EPERM the system calls no function needs and a sandbox
//!   escape does: ptrace and reading other processes' memory, mount and
//!   the new mount API, namespaces (unshare, setns, clone with a namespace
//!   flag), pivot_root and chroot, kexec, bpf, perf_event_open, the kernel
//!   keyring, module loading, reboot, swap, clock and accounting changes,
//!   io_uring (its operations bypass seccomp), userfaultfd and file
//!   handles. `clone3` fails with ENOSYS (its flags are behind a pointer
//!   the filter cannot read), so the C library falls back to `clone`.
//!
//! A confined start is a chain of three processes (see [`Lifetime`]): the
//! one the worker forked, the first of the new pid namespace, and the
//! function's; when the function's ends, the kernel ends everything left
//! in its namespace. The filters and every string the child needs are
//! made before the fork: between fork and exec nothing is allocated.
//! Nothing here decides a status.

mod view;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

use view::SystemPaths;
pub use view::{View, ViewRequest, FUNCTION_TMP_BYTES_MAX};

#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("this machine's architecture has no seccomp filter here")]
    Architecture,
    #[error("cannot build the seccomp filter: {0}")]
    Filter(String),
}

/// System calls a function's process never gets (EPERM).
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// `clone` flags that make a namespace: a clone with any of them is EPERM.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// Tasks (processes and threads) one function process and everything it
/// starts may run at once (`RLIMIT_NPROC`, counted in its own user
/// namespace, so other functions' tasks do not count): node runs a dozen
/// threads; a fork bomb stops here.
pub const FUNCTION_TASKS_MAX: u64 = 128;

/// How the process the worker started waits for the function's: the
/// function runs as the first process of a pid namespace, a child of the
/// one the worker holds ([`super::process`] kills and reaps that one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// One call (exec): the outer process waits as it is, for milliseconds.
    Call,
    /// A language host, for minutes or hours: the two processes of ours
    /// become `corefn-relay` ([`relay`]) instead of keeping copies of the
    /// worker's memory alive.
    Host,
}

/// The compiled filters and what this worker can do; shared by every host
/// and exec start.
pub struct Sandbox {
    denied: BpfProgram,
    clone3: BpfProgram,
    /// Whether namespaces (user, mount, pid, ipc, uts) and the view can be
    /// made here; when not, said once at start, and functions run with
    /// the filter, the limits and (where it can be made) their own network
    /// namespace only.
    namespaces: bool,
    system: SystemPaths,
    /// The empty directory views are built in (in each child's own mount
    /// namespace: the worker's stays untouched).
    stage: PathBuf,
    /// `/proc/self/{setgroups,uid_map,gid_map}` and what is written there:
    /// the worker's own uid and gid, mapped to themselves.
    maps: [(CString, CString); 3],
    /// This program, for [`Lifetime::Host`]'s relay.
    exe: Option<OwnedFd>,
    /// The empty network namespace exec processes join, made at the first
    /// one (`None` inside: it could not be made, and each makes its own).
    offline: OnceLock<Option<Offline>>,
}

/// An empty network namespace, and for a worker that is not root the user
/// namespace that owns it, made once per worker. An exec function starts a
/// process per request: joining this one (two setns calls) instead of
/// making a namespace each time kept exec throughput from falling to a
/// third (PERFORMANCE.md). Exec processes of one worker share it: it has no
/// interface up, so they cannot reach each other over IP either.
struct Offline {
    user: Option<OwnedFd>,
    net: OwnedFd,
}

/// What holds the new namespaces while the worker opens them.
const NAMESPACE_HOLDER: &str = "/bin/sleep";
/// The relay program, installed next to corefn.
pub const RELAY_NAME: &str = "corefn-relay";

impl Sandbox {
    /// The filters, and a first confined start (`/bin/true`) that tells
    /// whether this kernel lets the worker make namespaces and the view;
    /// `work_dir` is the worker's own (the staging directory goes there).
    pub fn new(work_dir: &Path) -> Result<Arc<Sandbox>, SandboxError> {
        let arch = target_arch()?;
        let build = |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: u32| {
            SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno),
                arch,
            )
            .and_then(BpfProgram::try_from)
            .map_err(|e| SandboxError::Filter(e.to_string()))
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&call| (call, Vec::new())).collect();
        let namespace_clones = NAMESPACE_FLAGS
            .iter()
            .map(|&flag| {
                let flag = flag as u64;
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .and_then(|condition| SeccompRule::new(vec![condition]))
                .map_err(|e| SandboxError::Filter(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_clone, namespace_clones);
        let denied = build(rules, libc::EPERM as u32)?;
        let clone3 = build(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            libc::ENOSYS as u32,
        )?;
        let stage = std::path::absolute(work_dir.join("view")).unwrap_or(work_dir.join("view"));
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let entry = |file: &str, text: String| {
            (
                CString::new(format!("/proc/self/{file}")).unwrap_or_default(),
                CString::new(text).unwrap_or_default(),
            )
        };
        let mut sandbox = Arc::new(Sandbox {
            denied,
            clone3,
            namespaces: true,
            system: SystemPaths::read(),
            stage,
            maps: [
                entry("setgroups", "deny".into()),
                entry("uid_map", format!("{uid} {uid} 1")),
                entry("gid_map", format!("{gid} {gid} 1")),
            ],
            exe: relay_program(),
            offline: OnceLock::new(),
        });
        if let Err(reason) = sandbox.probe() {
            eprintln!(
                "corefn: functions run without their own namespaces and file view \
                 (pid, mount, user): {reason}"
            );
            match Arc::get_mut(&mut sandbox) {
                Some(only) => only.namespaces = false,
                None => return Err(SandboxError::Filter("the probe kept the sandbox".into())),
            }
        }
        Ok(sandbox)
    }

    /// A confined `/bin/true` in a view with a network namespace of its
    /// own, as a language host would start.
    fn probe(self: &Arc<Self>) -> Result<(), String> {
        std::fs::create_dir_all(&self.stage)
            .map_err(|e| format!("cannot make {}: {e}", self.stage.display()))?;
        let program = Path::new("/bin/true");
        let view = self
            .plan_view(&ViewRequest {
                module: program,
                extra: &[],
            })
            .map_err(|e| format!("cannot plan a view: {e}"))?;
        let mut command = Command::new(program);
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        self.apply_to(&mut command, false, view, Lifetime::Call);
        let status = command.status();
        drop(command);
        match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("a confined /bin/true ended with {status}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The view a function process gets ([`view`]); `None` where this
    /// kernel does not let the worker make one.
    pub fn plan_view(&self, request: &ViewRequest<'_>) -> io::Result<Option<View>> {
        if !self.namespaces {
            return Ok(None);
        }
        View::plan(&self.system, &self.stage, request).map(Some)
    }

    fn offline(&self) -> Option<&Offline> {
        self.offline
            .get_or_init(|| match make_offline() {
                Ok(offline) => Some(offline),
                Err(error) => {
                    eprintln!(
                        "corefn: cannot make the exec functions' shared network namespace \
                         ({error}): each makes its own"
                    );
                    None
                }
            })
            .as_ref()
    }

    /// Adds the confinement to `command`'s fork-time steps (after those
    /// already added: the limits and the descriptor moves come first).
    /// Without `network`, a call joins the worker's empty network
    /// namespace and a host gets one of its own.
    pub fn apply_to(
        self: &Arc<Self>,
        command: &mut Command,
        network: bool,
        view: Option<View>,
        lifetime: Lifetime,
    ) {
        let sandbox = self.clone();
        let confined = self.namespaces && view.is_some();
        let offline = match (confined, network, lifetime) {
            (true, false, Lifetime::Call) => self
                .offline()
                .map(|o| (o.user.as_ref().map(AsRawFd::as_raw_fd), o.net.as_raw_fd())),
            _ => None,
        };
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let namespaces = if confined {
            let own_net = !network && offline.is_none();
            libc::CLONE_NEWUSER
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
                | if own_net { libc::CLONE_NEWNET } else { 0 }
        } else if network {
            0
        } else if root {
            // No view: the network namespace alone, inside a user
            // namespace of its own when the worker is not root (a network
            // namespace needs CAP_SYS_ADMIN where it is made).
            libc::CLONE_NEWNET
        } else {
            libc::CLONE_NEWUSER | libc::CLONE_NEWNET
        };
        // SAFETY: the closure runs between fork and exec and makes only
        // async-signal-safe system calls (setns, unshare, open/write,
        // setrlimit, prctl, mount, a raw clone, wait, seccomp); every
        // string and filter was made before the fork; nothing is allocated.
        unsafe {
            command.pre_exec(move || {
                if let Some((user, net)) = offline {
                    if let Some(user) = user {
                        check(libc::setns(user, libc::CLONE_NEWUSER))?;
                    }
                    check(libc::setns(net, libc::CLONE_NEWNET))?;
                }
                if namespaces != 0 {
                    check(libc::unshare(namespaces))?;
                }
                if let Some(view) = &view {
                    sandbox.enter_user_namespace()?;
                    view.enter()?;
                    // Three processes: this one (outside the new pid
                    // namespace, the one the worker waits for), the
                    // namespace's first (ours: it reaps orphans, and when
                    // it ends the kernel kills every process left in the
                    // namespace, setsid or not), and the function's.
                    for _forked in 0..2 {
                        let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
                        if pid < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        if pid > 0 {
                            sandbox.hand_over(pid as libc::pid_t, lifetime);
                        }
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        if libc::getpid() == 1 {
                            view.finish()?;
                        }
                    }
                }
                // The denied list goes last: it forbids unshare and mount.
                for filter in [&sandbox.clone3, &sandbox.denied] {
                    seccompiler::apply_filter(filter).map_err(|e| match e {
                        seccompiler::Error::Prctl(error) | seccompiler::Error::Seccomp(error) => {
                            error
                        }
                        _ => io::Error::from_raw_os_error(libc::EINVAL),
                    })?;
                }
                Ok(())
            });
        }
    }

    /// In the child just after `unshare(CLONE_NEWUSER)`: the worker's uid
    /// and gid mapped to themselves (files it makes are its own), the task
    /// bound (counted in this namespace: set after it is made, or every
    /// process of the user on the machine would count), and the
    /// parent-death signal the credential change cleared set again.
    ///
    /// # Safety
    /// Between fork and exec: system calls on strings made before the fork.
    unsafe fn enter_user_namespace(&self) -> io::Result<()> {
        // SAFETY: the caller's (see the doc).
        unsafe {
            // A worker that changed its uid is not dumpable, and so are its
            // forks: their /proc files are root's and the maps below could
            // not be written. This process's copy only; exec resets it.
            libc::prctl(libc::PR_SET_DUMPABLE, 1);
            for (path, text) in &self.maps {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let bytes = text.as_bytes();
                let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                libc::close(fd);
                if written != bytes.len() as isize {
                    return Err(io::Error::last_os_error());
                }
            }
            let limit = libc::rlimit {
                rlim_cur: FUNCTION_TASKS_MAX,
                rlim_max: FUNCTION_TASKS_MAX,
            };
            check(libc::setrlimit(libc::RLIMIT_NPROC, &limit))?;
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        }
    }

    /// A process of ours in the function's chain (the outer one, or the
    /// pid namespace's first), once its child is forked: lets go of every
    /// descriptor (the function's pipes end with the function), then waits
    /// for `child` and ends as it ended ([`wait_and_end_as`]); for a host,
    /// as the relay program, so that no copy of the worker's memory stays
    /// alive as long as the host. Never returns.
    ///
    /// # Safety
    /// Between fork and exec: close_range, execveat, waitpid and exit only.
    unsafe fn hand_over(&self, child: libc::pid_t, lifetime: Lifetime) -> ! {
        // SAFETY: the caller's (see the doc).
        unsafe {
            let exe = self.exe.as_ref().map(AsRawFd::as_raw_fd);
            match (lifetime, exe) {
                (Lifetime::Host, Some(exe)) => {
                    let exe = exe as libc::c_uint;
                    if exe > 0 {
                        libc::syscall(libc::SYS_close_range, 0, exe - 1, 0);
                    }
                    libc::syscall(libc::SYS_close_range, exe + 1, libc::c_uint::MAX, 0);
                    let mut digits = [0u8; 16];
                    let argv = [
                        c"corefn-relay".as_ptr(),
                        decimal(child, &mut digits),
                        std::ptr::null(),
                    ];
                    let envp = [std::ptr::null::<libc::c_char>()];
                    libc::syscall(
                        libc::SYS_execveat,
                        exe,
                        c"".as_ptr(),
                        argv.as_ptr(),
                        envp.as_ptr(),
                        libc::AT_EMPTY_PATH,
                    );
                    // No relay program: wait here, as for a call.
                    libc::close(exe as libc::c_int);
                }
                _ => {
                    libc::syscall(libc::SYS_close_range, 0, libc::c_uint::MAX, 0);
                }
            }
            wait_and_end_as(child)
        }
    }
}

/// `pid` in decimal, NUL-terminated, in `buffer` (no allocation).
fn decimal(pid: libc::pid_t, buffer: &mut [u8; 16]) -> *const libc::c_char {
    let mut value = pid.max(0) as u32;
    let mut start = buffer.len() - 1;
    buffer[start] = 0;
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 || start == 0 {
            break;
        }
    }
    buffer[start..].as_ptr().cast()
}

/// Waits for `child`, reaping any other child meanwhile (the first process
/// of a pid namespace inherits every orphan in it), and ends as `child`
/// ended. The first process of a pid namespace cannot send itself a
/// signal, so there a child killed by signal N is passed on as exit code
/// 128 + N, the shell's convention, and the outer process, which can,
/// turns such a code back into the signal.
fn wait_and_end_as(child: libc::pid_t) -> ! {
    let mut status = 0;
    loop {
        let mut reaped = 0;
        // SAFETY: waitpid writes the status into a local.
        let pid = unsafe { libc::waitpid(-1, &mut reaped, 0) };
        if pid == child {
            status = reaped;
            break;
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    // SAFETY: getpid, signal, sigprocmask, kill and _exit have no memory
    // effects beyond the locals passed.
    unsafe {
        let first_of_namespace = libc::getpid() == 1;
        let signal = if libc::WIFSIGNALED(status) {
            Some(libc::WTERMSIG(status))
        } else if libc::WIFEXITED(status) {
            let code = libc::WEXITSTATUS(status);
            (!first_of_namespace && (129..=128 + 64).contains(&code)).then(|| code - 128)
        } else {
            None
        };
        match signal {
            Some(signal) if first_of_namespace => libc::_exit(128 + signal),
            Some(signal) => {
                libc::signal(signal, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, signal);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::kill(libc::getpid(), signal);
                libc::_exit(128 + signal)
            }
            None if libc::WIFEXITED(status) => libc::_exit(libc::WEXITSTATUS(status)),
            None => libc::_exit(1),
        }
    }
}

/// `corefn-relay` next to this program, opened for [`Lifetime::Host`]:
/// without it (a build of the `corefn` binary alone) the waiting processes
/// stay forks of the worker, said once per worker.
fn relay_program() -> Option<OwnedFd> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let relay = exe.with_file_name(RELAY_NAME);
    match std::fs::File::open(&relay) {
        Ok(file) => Some(OwnedFd::from(file)),
        Err(error) => {
            eprintln!(
                "corefn: no {} ({error}): each language host keeps two copies of its \
                 worker waiting (cargo build --release --bins builds it)",
                relay.display()
            );
            None
        }
    }
}

/// `corefn-relay PID` (`src/relay.rs`): a process of a language host's
/// chain (see [`Lifetime::Host`]): waits for its child PID and ends as it
/// ended.
pub fn relay() -> ! {
    let child = std::env::args()
        .nth(1)
        .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        .unwrap_or(-1);
    wait_and_end_as(child)
}

/// A system call's 0-or-error result as an `io::Result`.
fn check(result: libc::c_int) -> io::Result<()> {
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The namespaces of [`Offline`]: a holder process makes them between fork
/// and exec, the worker maps its own uid and gid in the user namespace and
/// opens both from /proc once the holder runs, and the holder goes (the
/// open descriptors keep the namespaces).
fn make_offline() -> io::Result<Offline> {
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let root = uid == 0;
    let flags = if root {
        libc::CLONE_NEWNET
    } else {
        libc::CLONE_NEWUSER | libc::CLONE_NEWNET
    };
    let mut command = Command::new(NAMESPACE_HOLDER);
    command
        .arg("60")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: unshare between fork and exec allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::unshare(flags) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut holder = command.spawn()?;
    let pid = holder.id();
    let opened = (|| {
        if !root {
            // Function processes make their own user namespaces inside
            // this one: their uid must be mapped here first.
            for (file, text) in [
                ("setgroups", "deny".to_string()),
                ("uid_map", format!("{uid} {uid} 1")),
                ("gid_map", format!("{gid} {gid} 1")),
            ] {
                std::fs::write(format!("/proc/{pid}/{file}"), text)?;
            }
        }
        let open =
            |kind: &str| std::fs::File::open(format!("/proc/{pid}/ns/{kind}")).map(OwnedFd::from);
        Ok(Offline {
            user: if root { None } else { Some(open("user")?) },
            net: open("net")?,
        })
    })();
    let _ = holder.kill();
    let _ = holder.wait();
    opened
}

fn target_arch() -> Result<TargetArch, SandboxError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        "riscv64" => Ok(TargetArch::riscv64),
        _ => Err(SandboxError::Architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child under the filter: unshare and ptrace are EPERM, a fork
    /// still works.
    #[test]
    fn the_filter_denies_escapes_and_keeps_fork() {
        let work = tempfile::tempdir().expect("tempdir");
        let sandbox = Sandbox::new(work.path()).expect("sandbox");
        let mut command = Command::new("python3");
        sandbox.apply_to(&mut command, true, None, Lifetime::Call);
        let script = "import ctypes, os\n\
            libc = ctypes.CDLL(None, use_errno=True)\n\
            print(libc.unshare(0x40000000), ctypes.get_errno())\n\
            print(libc.ptrace(0, 0, None, None), ctypes.get_errno())\n\
            pid = os.fork()\n\
            if pid == 0: os._exit(7)\n\
            print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n";
        let output = command.args(["-c", script]).output().expect("run python3");
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            text,
            format!("-1 {0}\n-1 {0}\n7\n", libc::EPERM),
            "stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn a_pid_is_written_in_decimal() {
        for pid in [0, 1, 7, 10, 4_194_304, libc::pid_t::MAX] {
            let mut buffer = [0u8; 16];
            let text = decimal(pid, &mut buffer);
            // SAFETY: `decimal` returns a NUL-terminated string in `buffer`.
            let text = unsafe { std::ffi::CStr::from_ptr(text) };
            assert_eq!(text.to_str().expect("ascii"), pid.to_string());
        }
    }

    /// A confined shell: it is pid 2 of its own namespace under ours, it
    /// sees only the view, and its exit code and its death by a signal
    /// (sent to itself, which the first process of a namespace could not
    /// do) reach the parent as they were.
    #[test]
    fn a_confined_process_ends_as_it_ended_and_sees_only_its_view() {
        use std::os::unix::process::ExitStatusExt;
        let work = tempfile::tempdir().expect("tempdir");
        let sandbox = Sandbox::new(work.path()).expect("sandbox");
        if !sandbox.namespaces {
            eprintln!("skipped: this kernel lets no namespaces be made here");
            return;
        }
        let run = |script: &str| {
            let view = sandbox
                .plan_view(&ViewRequest {
                    module: Path::new("/bin/sh"),
                    extra: &[],
                })
                .expect("plan")
                .expect("a view");
            let mut command = Command::new("/bin/sh");
            command.args(["-c", script]);
            sandbox.apply_to(&mut command, false, Some(view), Lifetime::Call);
            command.output().expect("run")
        };
        let checkout = env!("CARGO_MANIFEST_DIR");
        let seen = run(&format!(
            "echo $$ /proc/[0-9]*; test -e {checkout} && echo outside; \
             touch /tmp/t && echo tmp; touch /usr/x 2>/dev/null || echo ro"
        ));
        assert_eq!(
            String::from_utf8_lossy(&seen.stdout),
            "2 /proc/1 /proc/2\ntmp\nro\n",
            "{}",
            String::from_utf8_lossy(&seen.stderr)
        );
        assert_eq!(run("exit 3").status.code(), Some(3));
        assert_eq!(run("kill -SEGV $$").status.signal(), Some(libc::SIGSEGV));
    }
}
