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
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

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
/// start.
pub struct Sandbox {
    denied: BpfProgram,
    clone3: BpfProgram,
}

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
        Ok(Arc::new(Sandbox { denied, clone3 }))
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
