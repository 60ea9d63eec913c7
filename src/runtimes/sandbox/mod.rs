//! What a function's long-lived process (a language host) may not do, set
//! between fork and exec after its limits ([`super::process::ChildLimits`]):
//!
//! * a network namespace of its own, with no interface up (not even
//!   loopback), unless the function's config says `"network": true`: it
//!   cannot reach the gateway, the workers' sockets or anything else (made
//!   inside a user namespace of its own when the worker is not root);
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
//! The filters are compiled once per worker, before any fork: the child
//! between fork and exec may not allocate. Nothing here decides a status.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

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

/// The compiled filters and what this worker can do; shared by every host
/// and exec start.
pub struct Sandbox {
    denied: BpfProgram,
    clone3: BpfProgram,
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

impl Sandbox {
    pub fn new() -> Result<Arc<Sandbox>, SandboxError> {
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
        Ok(Arc::new(Sandbox {
            denied,
            clone3,
            offline: OnceLock::new(),
        }))
    }

    /// [`Sandbox::apply_to`] for a process per request (exec): without
    /// `network` it joins the worker's empty network namespace.
    pub fn apply_to_request(self: &Arc<Self>, command: &mut Command, network: bool) {
        let offline = match (network, self.offline()) {
            (false, Some(offline)) => offline,
            _ => return self.apply_to(command, network),
        };
        let user = offline.user.as_ref().map(AsRawFd::as_raw_fd);
        let net = offline.net.as_raw_fd();
        // SAFETY: runs between fork and exec; setns takes descriptors the
        // worker holds open for its whole life; nothing is allocated.
        unsafe {
            command.pre_exec(move || {
                if let Some(user) = user {
                    if libc::setns(user, libc::CLONE_NEWUSER) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::setns(net, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.apply_to(command, true);
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
    pub fn apply_to(self: &Arc<Self>, command: &mut Command, network: bool) {
        let sandbox = self.clone();
        // A network namespace needs CAP_SYS_ADMIN in the user namespace it
        // is made in: root has it; a worker that dropped root makes a user
        // namespace of its own first (its files stay its own: the process's
        // uid outside does not change).
        // SAFETY: geteuid has no preconditions.
        let namespaces = match (network, unsafe { libc::geteuid() } == 0) {
            (true, _) => 0,
            (false, true) => libc::CLONE_NEWNET,
            (false, false) => libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
        };
        // SAFETY: the closure runs between fork and exec and makes only
        // async-signal-safe calls (unshare, prctl, seccomp); the filters
        // were built before the fork and nothing is allocated here.
        unsafe {
            command.pre_exec(move || {
                if namespaces != 0 && libc::unshare(namespaces) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The denied list goes last: it forbids unshare itself.
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
}

/// The namespaces of [`Offline`]: a holder process makes them between fork
/// and exec, the worker opens them from /proc once the holder runs, and
/// the holder goes (the open descriptors keep the namespaces).
fn make_offline() -> io::Result<Offline> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
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
    let open =
        |kind: &str| std::fs::File::open(format!("/proc/{pid}/ns/{kind}")).map(OwnedFd::from);
    let opened = (|| {
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
        let sandbox = Sandbox::new().expect("sandbox");
        let mut command = Command::new("python3");
        sandbox.apply_to(&mut command, true);
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
}
