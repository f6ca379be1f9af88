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

/// Syscalls per leaf of the search tree (compared one after the other).
const LEAF: usize = 4;

/// Compiles the filter for `spec`. Denied calls return `errno`.
///
/// After the architecture checks, the syscall number goes down a binary
/// search tree over the numbers that need a decision (the deny-list plus
/// `clone`, `ioctl` and `personality`, whose arguments are checked); every
/// other call is allowed. A tree rather than a straight list: the kernel
/// evaluates the filter for every syscall number when it is installed (to
/// cache the always-allowed ones), and at run time for the calls whose
/// arguments matter, so its depth is paid at every sandbox start.
pub fn compile(spec: &SeccompSpec, errno: i32) -> Vec<libc::sock_filter> {
    let ret_errno = |e: i32| stmt(BPF_RET_K, RET_ERRNO | (e as u32 & 0xffff));
    let allow = stmt(BPF_RET_K, RET_ALLOW);
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
    // Every block below is self-contained: it ends in RETs.
    let mut leaves: Vec<(u32, Vec<libc::sock_filter>)> = deny_list(spec, errno)
        .into_iter()
        .map(|d| (nr32(d.nr), vec![ret_errno(d.errno)]))
        .collect();
    // clone(flags): refuse any CLONE_NEW* flag (new namespaces, above all a
    // new user namespace). flags is the first argument on both arches.
    leaves.push((
        nr32(libc::SYS_clone),
        vec![
            stmt(BPF_LD_W_ABS, off_arg_lo(0)),
            jump(BPF_JSET_K, CLONE_NEW_MASK, 0, 1),
            ret_errno(errno),
            allow,
        ],
    ));
    // ioctl(fd, TIOCSTI | TIOCLINUX): terminal input injection. The request is
    // an unsigned int: compare the low 32 bits only.
    leaves.push((
        nr32(libc::SYS_ioctl),
        vec![
            stmt(BPF_LD_W_ABS, off_arg_lo(1)),
            jump(BPF_JEQ_K, TIOCSTI, 1, 0),
            jump(BPF_JEQ_K, TIOCLINUX, 0, 1),
            ret_errno(errno),
            allow,
        ],
    ));
    // personality: allow only the default persona and queries (plus disabling
    // ASLR when debuggers are allowed); other personas change the kernel ABI.
    let mut personas = vec![0, PER_QUERY];
    if spec.allow_ptrace {
        personas.push(ADDR_NO_RANDOMIZE);
    }
    let n = personas.len();
    let mut block = vec![stmt(BPF_LD_W_ABS, off_arg_lo(0))];
    for (i, v) in personas.iter().enumerate() {
        // On a match, jump over the remaining compares and the errno.
        block.push(jump(BPF_JEQ_K, *v, (n - i) as u8, 0));
    }
    block.push(ret_errno(errno));
    block.push(allow);
    leaves.push((nr32(libc::SYS_personality), block));
    leaves.sort_by_key(|(nr, _)| *nr);
    leaves.dedup_by_key(|(nr, _)| *nr);
    p.extend(tree(&leaves));
    p
}

/// The search tree over sorted `(number, block)` leaves; numbers not in the
/// list end in ALLOW.
fn tree(leaves: &[(u32, Vec<libc::sock_filter>)]) -> Vec<libc::sock_filter> {
    let mut out = Vec::new();
    if leaves.len() <= LEAF {
        for (nr, block) in leaves {
            // Not this number: skip its block.
            out.push(jump(BPF_JEQ_K, *nr, 0, offset(block.len())));
            out.extend_from_slice(block);
        }
        out.push(stmt(BPF_RET_K, RET_ALLOW));
        return out;
    }
    let (low, high) = leaves.split_at(leaves.len() / 2);
    let left = tree(low);
    // nr >= first of the upper half: skip the lower half's code.
    out.push(jump(BPF_JGE_K, high[0].0, offset(left.len()), 0));
    out.extend(left);
    out.extend(tree(high));
    out
}

/// A forward jump distance; cBPF offsets are 8 bits. The tree's halves stay
/// far below that; a distance that does not fit saturates to 255, which
/// `install` refuses.
fn offset(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// Installs the filter on the calling thread (requires `no_new_privs`).
pub fn install(spec: &SeccompSpec, errno: i32) -> io::Result<()> {
    let prog = compile(spec, errno);
    // A saturated offset (see `offset`) would jump to the wrong place: fail
    // closed rather than install it.
    if prog
        .iter()
        .any(|i| i.code & 0x07 == 0x05 && (i.jt == u8::MAX || i.jf == u8::MAX))
    {
        return Err(io::Error::other(
            "seccomp program too large for 8-bit jumps",
        ));
    }
    crate::sys::seccomp_set_filter(&prog, 0).map(drop)
}

/// The exec-audit filter: `execve`, `execveat` and, with `exits`,
/// `exit_group` become user notifications (see `exec_audit`); every other
/// call, and any foreign architecture (the deny filter kills those),
/// passes.
pub fn compile_exec_notify(exits: bool) -> Vec<libc::sock_filter> {
    let notify = stmt(BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF);
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_ALLOW),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    if exits {
        prog.extend([
            jump(BPF_JEQ_K, nr32(libc::SYS_execve), 3, 0),
            jump(BPF_JEQ_K, nr32(libc::SYS_execveat), 2, 0),
            jump(BPF_JEQ_K, nr32(libc::SYS_exit_group), 1, 0),
        ]);
    } else {
        prog.extend([
            jump(BPF_JEQ_K, nr32(libc::SYS_execve), 2, 0),
            jump(BPF_JEQ_K, nr32(libc::SYS_execveat), 1, 0),
        ]);
    }
    prog.extend([stmt(BPF_RET_K, RET_ALLOW), notify]);
    prog
}

/// Installs the exec-audit filter on the calling thread (after
/// `no_new_privs`) and returns its listener.
pub fn install_exec_notify(exits: bool) -> io::Result<std::os::fd::OwnedFd> {
    crate::sys::seccomp_set_filter(
        &compile_exec_notify(exits),
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as libc::c_ulong,
    )?
    .ok_or_else(|| io::Error::other("the kernel returned no seccomp listener"))
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
        match unsafe { sys::clone_fork(0) }.unwrap() {
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

    /// Both exec-audit filters send execve and execveat to the listener,
    /// exit_group only when exits are notified, and nothing else.
    #[test]
    fn the_exec_filter_notifies_what_it_should() {
        for exits in [true, false] {
            let prog = compile_exec_notify(exits);
            // Walk the program for a given syscall number.
            let verdict = |nr: i64| {
                let mut pc = 0usize;
                let mut acc = 0u32;
                loop {
                    let ins = prog[pc];
                    match ins.code {
                        c if c == BPF_LD_W_ABS => {
                            acc = if ins.k == OFF_ARCH {
                                AUDIT_ARCH
                            } else {
                                nr32(nr)
                            };
                            pc += 1;
                        }
                        c if c == BPF_JEQ_K => {
                            pc += 1 + usize::from(if acc == ins.k { ins.jt } else { ins.jf });
                        }
                        c if c == BPF_RET_K => return ins.k,
                        other => panic!("unexpected instruction {other:#x}"),
                    }
                }
            };
            let notify = libc::SECCOMP_RET_USER_NOTIF;
            assert_eq!(verdict(libc::SYS_execve), notify);
            assert_eq!(verdict(libc::SYS_execveat), notify);
            assert_eq!(verdict(libc::SYS_exit_group) == notify, exits);
            assert_eq!(verdict(libc::SYS_read), RET_ALLOW);
            assert_eq!(verdict(libc::SYS_exit), RET_ALLOW);
        }
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        for spec in [
            SeccompSpec::default(),
            SeccompSpec {
                allow_ptrace: true,
                ..SeccompSpec::default()
            },
        ] {
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

    /// Runs `prog` the way the kernel does, on a syscall number and first
    /// two arguments.
    fn eval(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u32; 2]) -> u32 {
        run(prog, arch, nr, args).0
    }

    /// [`eval`], also counting the instructions executed.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u32; 2]) -> (u32, usize) {
        let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let ins = prog[pc];
            pc += 1;
            steps += 1;
            match ins.code {
                BPF_LD_W_ABS => {
                    a = match ins.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        k if k == off_arg_lo(0) => args[0],
                        k if k == off_arg_lo(1) => args[1],
                        k => panic!("unexpected load at {k}"),
                    }
                }
                BPF_RET_K => return (ins.k, steps),
                code => {
                    let hit = match code {
                        BPF_JEQ_K => a == ins.k,
                        BPF_JGE_K => a >= ins.k,
                        BPF_JSET_K => a & ins.k != 0,
                        other => panic!("unexpected instruction {other:#x}"),
                    };
                    pc += usize::from(if hit { ins.jt } else { ins.jf });
                }
            }
        }
    }

    #[test]
    fn the_tree_decides_every_number_like_the_list() {
        let e = |n: i32| RET_ERRNO | n as u32;
        for spec in [
            SeccompSpec::default(),
            SeccompSpec {
                allow_ptrace: true,
                ..SeccompSpec::default()
            },
        ] {
            let prog = compile(&spec, PROOF);
            let denied = deny_list(&spec, PROOF);
            for nr in 0..1024u32 {
                let expected = denied
                    .iter()
                    .find(|d| nr32(d.nr) == nr)
                    .map_or(RET_ALLOW, |d| e(d.errno));
                let args = if nr == nr32(libc::SYS_personality) {
                    [PER_QUERY, 0]
                } else {
                    [0, 0]
                };
                assert_eq!(eval(&prog, AUDIT_ARCH, nr, args), expected, "syscall {nr}");
            }
            let clone = nr32(libc::SYS_clone);
            let ioctl = nr32(libc::SYS_ioctl);
            let pers = nr32(libc::SYS_personality);
            let newuser = libc::CLONE_NEWUSER as u32;
            assert_eq!(eval(&prog, AUDIT_ARCH, clone, [newuser, 0]), e(PROOF));
            assert_eq!(eval(&prog, AUDIT_ARCH, clone, [0x11, 0]), RET_ALLOW);
            assert_eq!(eval(&prog, AUDIT_ARCH, ioctl, [0, TIOCSTI]), e(PROOF));
            assert_eq!(eval(&prog, AUDIT_ARCH, ioctl, [0, TIOCLINUX]), e(PROOF));
            assert_eq!(eval(&prog, AUDIT_ARCH, ioctl, [0, 0x5401]), RET_ALLOW);
            assert_eq!(eval(&prog, AUDIT_ARCH, pers, [0x0008, 0]), e(PROOF));
            let aslr = eval(&prog, AUDIT_ARCH, pers, [ADDR_NO_RANDOMIZE, 0]);
            assert_eq!(aslr == RET_ALLOW, spec.allow_ptrace);
            assert_eq!(eval(&prog, 0x4000_0003, 0, [0, 0]), RET_KILL_PROCESS);
            if cfg!(target_arch = "x86_64") {
                assert_eq!(
                    eval(&prog, AUDIT_ARCH, X32_SYSCALL_BIT | 39, [0, 0]),
                    RET_KILL_PROCESS
                );
            }
        }
    }

    #[test]
    fn the_tree_is_shallow() {
        let prog = compile(&SeccompSpec::default(), PROOF);
        let longest = (0..1024u32)
            .map(|nr| run(&prog, AUDIT_ARCH, nr, [0, 0]).1)
            .max()
            .unwrap_or(0);
        // A straight list took about 160 instructions for an allowed call.
        assert!(longest <= 16, "{longest} instructions on the longest path");
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
            match unsafe { sys::clone_fork(0) } {
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
