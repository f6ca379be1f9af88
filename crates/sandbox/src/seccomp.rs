//! The seccomp deny-list, compiled to classic BPF by hand.
//!
//! We assemble the program ourselves instead of using `seccompiler` because we
//! need two things it does not express: killing x32 syscalls (same audit arch
//! as x86-64, distinguished by bit 30 of the syscall number) and, for the exec
//! audit, `SECCOMP_RET_USER_NOTIF` actions. The program is a straight line of
//! small self-contained blocks, so every jump offset is local and checked by
//! the unit tests below, which also run the filter in forked children.
//!
//! What the filter does *not* do: it is not the sandbox's boundary. Mount
//! namespaces, Landlock and dropped capabilities are; seccomp shrinks the
//! kernel surface behind them and blocks the calls that could undo them.

use std::io;

use crate::spec::SeccompSpec;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("cordon's seccomp filter supports x86_64 and aarch64 only");

/// Syscall-number bit that marks the x32 ABI on x86-64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const CLONE_NEW_MASK: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP
    | 0x80) as u32; // CLONE_NEWTIME

const PER_QUERY: u32 = 0xffff_ffff;
const ADDR_NO_RANDOMIZE: u32 = 0x0004_0000;
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;

// Newer syscalls that the libc crate may not name yet (same number on every
// architecture that uses the unified syscall table).
const SYS_OPEN_TREE_ATTR: i64 = 467;

/// A syscall the filter refuses, with the reason shown in docs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// Syscall name.
    pub name: &'static str,
    /// Syscall number on this architecture.
    pub nr: i64,
    /// Errno returned (the kernel's own answer never uses ENOSYS for these,
    /// except `clone3`, where ENOSYS makes libc fall back to `clone`).
    pub errno: i32,
}

macro_rules! deny {
    ($list:ident, $errno:expr, $($name:ident),+ $(,)?) => {
        $( $list.push(Denied { name: stringify!($name), nr: libc::$name as i64, errno: $errno }); )+
    };
}

/// The unconditional deny-list for this architecture. `errno` is what the
/// denied calls return (EPERM in production; tests pick an errno the kernel
/// would never return, to prove the filter answered).
pub fn deny_list(spec: &SeccompSpec, errno: i32) -> Vec<Denied> {
    let mut l = Vec::with_capacity(64);
    // Mounts, old and new API, and namespace changes: these could undo the
    // read-only view the launcher built.
    deny!(
        l,
        errno,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_chroot,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_move_mount,
        SYS_open_tree,
        SYS_mount_setattr,
        SYS_unshare,
        SYS_setns,
    );
    l.push(Denied {
        name: "SYS_open_tree_attr",
        nr: SYS_OPEN_TREE_ATTR,
        errno,
    });
    // clone3 passes flags in memory, which BPF cannot inspect: ENOSYS makes
    // glibc and musl fall back to clone, whose flags we can check.
    l.push(Denied {
        name: "SYS_clone3",
        nr: libc::SYS_clone3,
        errno: libc::ENOSYS,
    });
    // Large or privileged kernel surface.
    deny!(
        l,
        errno,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_userfaultfd,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_open_by_handle_at,
        SYS_name_to_handle_at,
        SYS_swapon,
        SYS_swapoff,
        SYS_reboot,
        SYS_syslog,
        SYS_acct,
        SYS_quotactl,
        SYS_vhangup,
        SYS_settimeofday,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_adjtimex,
        SYS_fanotify_init,
        SYS_lookup_dcookie,
    );
    #[cfg(target_arch = "x86_64")]
    deny!(
        l,
        errno,
        SYS_iopl,
        SYS_ioperm,
        SYS_modify_ldt,
        SYS_uselib,
        SYS__sysctl,
    );
    // Obsolete module and nfsd calls the libc crate no longer names.
    #[cfg(target_arch = "x86_64")]
    for (name, nr) in [
        ("SYS_create_module", 174),
        ("SYS_get_kernel_syms", 177),
        ("SYS_query_module", 178),
        ("SYS_nfsservctl", 180),
    ] {
        l.push(Denied { name, nr, errno });
    }
    if !spec.allow_ptrace {
        deny!(
            l,
            errno,
            SYS_ptrace,
            SYS_process_vm_readv,
            SYS_process_vm_writev,
            SYS_process_madvise,
            SYS_pidfd_getfd,
            SYS_kcmp,
        );
    }
    l
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn nr32(nr: i64) -> u32 {
    nr as u32
}

/// Compiles the filter for `spec`. Denied calls return `errno`.
pub fn compile(spec: &SeccompSpec, errno: i32) -> Vec<libc::sock_filter> {
    let ret_errno = |e: i32| stmt(BPF_RET_K, RET_ERRNO | (e as u32 & 0xffff));
    let mut p = vec![
        // Foreign architectures (e.g. i386 via int 0x80) are killed outright.
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        // x32 syscalls share the x86-64 audit arch; kill them too.
        p.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(stmt(BPF_RET_K, RET_KILL_PROCESS));
    }
    for d in deny_list(spec, errno) {
        p.push(jump(BPF_JEQ_K, nr32(d.nr), 0, 1));
        p.push(ret_errno(d.errno));
    }
    // clone(flags): refuse any CLONE_NEW* flag (new namespaces, above all a
    // new user namespace). flags is the first argument on both arches.
    p.extend([
        jump(BPF_JEQ_K, nr32(libc::SYS_clone), 0, 4),
        stmt(BPF_LD_W_ABS, off_arg_lo(0)),
        jump(BPF_JSET_K, CLONE_NEW_MASK, 0, 1),
        ret_errno(errno),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ]);
    // ioctl(fd, TIOCSTI | TIOCLINUX): terminal input injection. The request is
    // an unsigned int: compare the low 32 bits only.
    p.extend([
        jump(BPF_JEQ_K, nr32(libc::SYS_ioctl), 0, 5),
        stmt(BPF_LD_W_ABS, off_arg_lo(1)),
        jump(BPF_JEQ_K, TIOCSTI, 1, 0),
        jump(BPF_JEQ_K, TIOCLINUX, 0, 1),
        ret_errno(errno),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ]);
    // personality: allow only the default persona and queries (plus disabling
    // ASLR when debuggers are allowed); other personas change the kernel ABI.
    let mut allowed = vec![0, PER_QUERY];
    if spec.allow_ptrace {
        allowed.push(ADDR_NO_RANDOMIZE);
    }
    let n = allowed.len();
    p.push(jump(
        BPF_JEQ_K,
        nr32(libc::SYS_personality),
        0,
        (n + 3) as u8,
    ));
    p.push(stmt(BPF_LD_W_ABS, off_arg_lo(0)));
    for (i, v) in allowed.iter().enumerate() {
        // On a match jump over the remaining compares and the RET to the reload.
        p.push(jump(BPF_JEQ_K, *v, (n - i) as u8, 0));
    }
    p.push(ret_errno(errno));
    p.push(stmt(BPF_LD_W_ABS, OFF_NR));
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p
}

/// Installs the filter on the calling thread (requires `no_new_privs`).
pub fn install(spec: &SeccompSpec, errno: i32) -> io::Result<()> {
    let prog = compile(spec, errno);
    crate::sys::seccomp_set_filter(&prog, 0).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{self, Forked, WaitStatus};

    /// An errno the denied calls never return on their own here.
    const PROOF: i32 = libc::EHWPOISON;

    fn in_child(f: impl FnOnce() -> i32) -> WaitStatus {
        // SAFETY: the child only runs `f` (syscalls, no locks taken by other
        // test threads are needed) and leaves with _exit.
        match unsafe { sys::fork() }.unwrap() {
            Forked::Child => {
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
                sys::exit_now(code)
            }
            Forked::Parent(pid) => sys::waitpid(pid, false).unwrap().unwrap().1,
        }
    }

    fn confine() {
        rustix::thread::set_no_new_privs(true).unwrap();
        install(&SeccompSpec::default(), PROOF).unwrap();
    }

    fn errno_of(ret: libc::c_long) -> i32 {
        if ret < 0 {
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        for spec in [SeccompSpec::default(), SeccompSpec { allow_ptrace: true }] {
            let prog = compile(&spec, libc::EPERM);
            for (i, ins) in prog.iter().enumerate() {
                if ins.code & 0x07 == 0x05 {
                    assert!(
                        i + 1 + (ins.jt.max(ins.jf) as usize) < prog.len(),
                        "jump {i}"
                    );
                }
            }
            assert_eq!(prog.last().unwrap().k, RET_ALLOW);
        }
    }

    #[test]
    fn denied_calls_get_the_filter_errno() {
        let st = in_child(|| {
            confine();
            // SAFETY: these calls get denied before the kernel looks at the
            // (null or bogus) arguments; nothing is dereferenced by us.
            let checks = unsafe {
                [
                    errno_of(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)),
                    errno_of(libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0)),
                    errno_of(libc::syscall(libc::SYS_bpf, 0, 0, 0)),
                    errno_of(libc::syscall(libc::SYS_io_uring_setup, 1, 0)),
                    errno_of(libc::syscall(libc::SYS_keyctl, 0, 0)),
                    errno_of(libc::syscall(libc::SYS_ptrace, 0, 0, 0, 0)),
                    errno_of(libc::syscall(
                        libc::SYS_clone,
                        libc::CLONE_NEWUSER,
                        0,
                        0,
                        0,
                        0,
                    )),
                    errno_of(libc::syscall(
                        libc::SYS_ioctl,
                        0,
                        TIOCSTI as libc::c_ulong,
                        0,
                    )),
                    errno_of(libc::syscall(libc::SYS_personality, 0x0008)),
                ]
            };
            if checks.iter().all(|&e| e == PROOF) {
                0
            } else {
                eprintln!("errnos: {checks:?}");
                1
            }
        });
        assert_eq!(st, WaitStatus::Exited(0));
    }

    #[test]
    fn clone3_is_enosys_and_plain_fork_still_works() {
        let st = in_child(|| {
            confine();
            // SAFETY: clone3 is denied by the filter before its arguments are read.
            let e = errno_of(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) });
            if e != libc::ENOSYS {
                return 1;
            }
            // SAFETY: single-threaded child; the grandchild exits at once.
            match unsafe { sys::fork() } {
                Ok(Forked::Child) => sys::exit_now(7),
                Ok(Forked::Parent(pid)) => match sys::waitpid(pid, false) {
                    Ok(Some((_, WaitStatus::Exited(7)))) => 0,
                    _ => 2,
                },
                Err(_) => 3,
            }
        });
        assert_eq!(st, WaitStatus::Exited(0));
    }

    #[test]
    fn allowed_calls_and_personality_query_pass() {
        let st = in_child(|| {
            confine();
            // SAFETY: personality(0xffffffff) only queries; getpid has no args.
            let q =
                unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu32 as libc::c_ulong) };
            // SAFETY: see above.
            let pid = unsafe { libc::syscall(libc::SYS_getpid) };
            i32::from(q < 0 || pid <= 0)
        });
        assert_eq!(st, WaitStatus::Exited(0));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscalls_kill_the_process() {
        let st = in_child(|| {
            confine();
            // SAFETY: the filter kills the process before the call runs.
            unsafe { libc::syscall(X32_SYSCALL_BIT as libc::c_long | libc::SYS_getpid) };
            0
        });
        assert_eq!(st, WaitStatus::Signaled(libc::SIGSYS));
    }
}
