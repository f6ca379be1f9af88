//! Raw system calls, each wrapped once in a small safe function returning
//! `io::Result`. This module holds most of cordon's `unsafe`; every block
//! states the invariant it relies on.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Which side of a fork-like call we are on.
#[derive(Debug)]
pub enum Forked {
    /// In the parent; the child's pid (in the parent's pid namespace).
    Parent(libc::pid_t),
    /// In the child.
    Child,
}

/// `clone(flags | SIGCHLD)` with fork semantics (no new stack, no shared VM).
///
/// # Safety
///
/// The caller must be single-threaded: the child is a copy of only the calling
/// thread, so locks held by other threads (allocator, stdio) would stay locked
/// forever in the child. Also, glibc's cached thread id is not refreshed in the
/// child, so the child must not rely on `raise`/`abort`-style helpers that use
/// it; it reports errors by message and `_exit`.
pub unsafe fn clone_fork(flags: libc::c_int) -> io::Result<Forked> {
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like
    // fork(2): the child runs on a copy of the caller's stack. The caller
    // guarantees single-threadedness (see the function's contract).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match cvt(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as libc::pid_t)),
    }
}

/// `clone3` with `flags | CLONE_INTO_CGROUP` and fork semantics (no new
/// stack, no shared VM, SIGCHLD at exit): the child is born in the cgroup
/// whose directory `cgroup` is open. Being born there takes no cgroup
/// migration, which costs a whole RCU grace period (tens of milliseconds)
/// when made by writing `cgroup.procs`.
///
/// # Safety
///
/// As for [`clone_fork`].
pub unsafe fn clone_fork_into(flags: libc::c_int, cgroup: BorrowedFd<'_>) -> io::Result<Forked> {
    /// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    // SAFETY: `args` is a valid `struct clone_args` of the size passed; with
    // no stack and no CLONE_VM the child runs on a copy of the caller's
    // stack, like fork(2). The caller guarantees single-threadedness.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match cvt(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as libc::pid_t)),
    }
}

/// Runs `entry(arg)` in a child that shares the caller's memory
/// (`CLONE_VM | CLONE_VFORK`, like `posix_spawn`) on a stack of its own, and
/// returns once the child has called `execve` or exited. Much cheaper than
/// `fork` (no page tables are copied).
///
/// # Safety
///
/// The caller must be single-threaded, and `entry` may only make system
/// calls on data that `arg` points to (no allocation, no locks, no unwinding)
/// and must end in `execve` or `_exit`. `arg` must stay valid until this
/// function returns.
pub unsafe fn vfork_spawn(
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> io::Result<libc::pid_t> {
    const STACK: usize = 256 * 1024;
    // The lowest 64 KiB stay inaccessible: an overflow faults instead of
    // writing into whatever the parent (whose memory the child shares)
    // has mapped below.
    const GUARD: usize = 64 * 1024;
    // SAFETY: an anonymous private mapping; the result is checked.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the first GUARD bytes of the mapping just created (GUARD is a
    // multiple of every page size Linux uses on x86_64 and aarch64).
    if unsafe { libc::mprotect(stack, GUARD, libc::PROT_NONE) } != 0 {
        let err = io::Error::last_os_error();
        // SAFETY: unmapping exactly the mapping created above.
        unsafe {
            libc::munmap(stack, STACK);
        }
        return Err(err);
    }
    // SAFETY: the stack grows down from the end of the mapping, which is
    // page-aligned; the child is done with it when clone returns (vfork
    // semantics), so it is unmapped only then. The caller guarantees the
    // contract of `entry` and `arg`.
    let pid = unsafe {
        libc::clone(
            entry,
            stack.cast::<u8>().add(STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: unmapping exactly the mapping created above, no longer in use.
    unsafe {
        libc::munmap(stack, STACK);
    }
    if pid < 0 {
        Err(err)
    } else {
        Ok(pid)
    }
}

/// Terminates the calling process immediately, without running destructors
/// or atexit handlers (which belong to the parent's copy of the state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// `mount_setattr(2)` on a mount fd (`AT_EMPTY_PATH`), optionally recursive.
pub fn mount_setattr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    clear: u64,
    propagation: u64,
) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` lives
    // across the call and its size is passed exactly; `fd` is a live fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    cvt(ret).map(drop)
}

/// Closes every file descriptor >= 3 except those in `keep`.
pub fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: libc::c_uint = 3;
    for fd in keep.iter().map(|&fd| fd as libc::c_uint) {
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd + 1;
    }
    close_range(first, libc::c_uint::MAX)
}

fn close_range(first: libc::c_uint, last: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; this process owns no Rust
    // objects for the closed range that are used afterwards (callers keep the
    // fds they still need in `keep`).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    cvt(ret).map(drop)
}

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl std::fmt::Debug for SigSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigSet")
    }
}

impl SigSet {
    /// A set holding exactly `signals`.
    pub fn of(signals: &[libc::c_int]) -> SigSet {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it fully
        // before any member is read, and sigaddset only writes inside it.
        unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            SigSet(set)
        }
    }
}

/// Replaces the calling thread's signal mask; returns the previous one.
pub fn set_sigmask(how: libc::c_int, set: &SigSet) -> io::Result<SigSet> {
    // SAFETY: both pointers refer to valid, initialised sigset_t values that
    // outlive the call.
    unsafe {
        let mut old = std::mem::zeroed::<libc::sigset_t>();
        let ret = libc::pthread_sigmask(how, &set.0, &mut old);
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        Ok(SigSet(old))
    }
}

/// Waits for one of the (blocked) signals in `set`; returns its number.
pub fn sigwait(set: &SigSet) -> io::Result<libc::c_int> {
    loop {
        // SAFETY: `set` is an initialised sigset_t; a null siginfo pointer is
        // allowed.
        let ret = unsafe { libc::sigwaitinfo(&set.0, std::ptr::null_mut()) };
        match cvt_int(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Like [`sigwait`], giving up after `timeout`: `Ok(None)` then.
pub fn sigtimedwait(set: &SigSet, timeout: std::time::Duration) -> io::Result<Option<libc::c_int>> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX as _),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` and `ts` are initialised and outlive the call; a null
    // siginfo pointer is allowed.
    let ret = unsafe { libc::sigtimedwait(&set.0, std::ptr::null_mut(), &ts) };
    match cvt_int(ret) {
        Ok(sig) => Ok(Some(sig)),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates a signalfd for `set` (the signals must be blocked by the caller).
pub fn signalfd(set: &SigSet) -> io::Result<OwnedFd> {
    // SAFETY: `set` is initialised; -1 asks for a new fd, which we own.
    let fd =
        cvt_int(unsafe { libc::signalfd(-1, &set.0, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: the fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal number from a signalfd.
pub fn read_signalfd(fd: BorrowedFd<'_>) -> io::Result<Option<libc::c_int>> {
    // SAFETY: signalfd_siginfo is plain data; we pass its exact size and the
    // kernel writes at most that many bytes.
    unsafe {
        let mut info = std::mem::zeroed::<libc::signalfd_siginfo>();
        let n = libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            std::mem::size_of::<libc::signalfd_siginfo>(),
        );
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(info.ssi_signo as libc::c_int))
    }
}

/// Sends `sig` to `pid`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    cvt_int(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
}

impl WaitStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            WaitStatus::Exited(c) => c,
            WaitStatus::Signaled(s) => 128 + s,
        }
    }
}

/// `waitpid(pid, WNOHANG?)`; `Ok(None)` when nothing is ready or no child left.
pub fn waitpid(pid: libc::pid_t, nohang: bool) -> io::Result<Option<(libc::pid_t, WaitStatus)>> {
    let mut status = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(None),
                _ => return Err(e),
            }
        }
        if ret == 0 {
            return Ok(None);
        }
        let st = if libc::WIFEXITED(status) {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            continue;
        };
        return Ok(Some((ret, st)));
    }
}

/// Joins a new anonymous session keyring, detaching from the user's.
pub fn join_new_session_keyring() -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name asks for an anonymous keyring; no pointers are read.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    cvt(ret).map(drop)
}

/// A datagram socket for interface ioctls in the current network namespace.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory preconditions; we own the returned fd.
    let sock =
        cvt_int(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `sock` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(sock) })
}

/// An `ifreq` naming interface `name` (shorter than IFNAMSIZ, no NUL).
fn ifreq(name: &[u8]) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req = unsafe { std::mem::zeroed::<libc::ifreq>() };
    for (i, b) in name.iter().take(libc::IFNAMSIZ - 1).enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    req
}

/// Brings interface `name` up.
fn interface_up(sock: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let mut req = ifreq(name);
    // SAFETY: `req` is an ifreq that lives across both ioctls, its name is
    // NUL-terminated within IFNAMSIZ, and the kernel reads or writes only
    // inside it.
    unsafe {
        cvt_int(libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS as _,
            &mut req,
        ))?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        cvt_int(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req))?;
    }
    Ok(())
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    interface_up(&ioctl_socket()?, b"lo")
}

/// Creates the TUN device `name` (IFF_TUN, no packet information, each
/// packet preceded by a 10-byte `virtio_net_hdr`, IFF_VNET_HDR) in the
/// current network namespace, gives it `address`/15, sets its MTU, brings
/// it up and makes it the default route. Returns the device's fd. No
/// offloads are enabled, so packets read from it are whole and
/// checksummed; the header lets the writer say a checksum need not be
/// verified (see cordon-net's stack).
pub fn tun_create(name: &str, address: std::net::Ipv4Addr, mtu: u32) -> io::Result<OwnedFd> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let mtu = libc::c_int::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU too large"))?;
    let path = c"/dev/net/tun";
    // SAFETY: `path` is a valid NUL-terminated string; we own the result.
    let dev = cvt_int(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: `dev` is a fresh fd owned by nobody else.
    let dev = unsafe { OwnedFd::from_raw_fd(dev) };
    let sock = ioctl_socket()?;
    let ifreq = || ifreq(bytes);
    let sockaddr = |ip: std::net::Ipv4Addr| {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr have the same size on Linux
        // (16 bytes); sockaddr is the generic view of the same bytes.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
    };
    // SAFETY: each request below is an ifreq that lives across its ioctl,
    // the name was copied within IFNAMSIZ with a NUL after it, and the
    // kernel reads or writes only inside the struct.
    unsafe {
        let mut req = ifreq();
        req.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        cvt_int(libc::ioctl(dev.as_raw_fd(), libc::TUNSETIFF as _, &req))?;
        let mut req = ifreq();
        req.ifr_ifru.ifru_addr = sockaddr(address);
        cvt_int(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR as _, &req))?;
        let mut req = ifreq();
        req.ifr_ifru.ifru_netmask = sockaddr(std::net::Ipv4Addr::new(255, 254, 0, 0));
        cvt_int(libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFNETMASK as _,
            &req,
        ))?;
        let mut req = ifreq();
        req.ifr_ifru.ifru_mtu = mtu;
        cvt_int(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU as _, &req))?;
    }
    interface_up(&sock, bytes)?;
    // The default route: every IPv4 destination off loopback goes to the
    // device. (A netmask of 0.0.0.0 would not do: the kernel adds no prefix
    // route for the zero network.)
    let mut dev_name = bytes.to_vec();
    dev_name.push(0);
    let any = sockaddr(std::net::Ipv4Addr::UNSPECIFIED);
    let route = RtEntry {
        rt_pad1: 0,
        rt_dst: any,
        rt_gateway: any,
        rt_genmask: any,
        rt_flags: RTF_UP,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev_name.as_mut_ptr().cast(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: `route` matches the kernel's `struct rtentry` and lives across
    // the call; `rt_dev` points at a NUL-terminated name that outlives it.
    cvt_int(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &route) })?;
    Ok(dev)
}

/// The kernel's `struct rtentry` (SIOCADDRT), which the libc crate does not
/// define for Linux.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// `RTF_UP` from `<linux/route.h>`.
const RTF_UP: libc::c_ushort = 0x0001;

/// Installs a seccomp BPF filter on the calling thread. `no_new_privs` must
/// already be set. Returns the listener fd when `flags` asks for one.
pub fn seccomp_set_filter(
    prog: &[libc::sock_filter],
    flags: libc::c_ulong,
) -> io::Result<Option<OwnedFd>> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel
    // copies the program and does not keep the pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    let ret = cvt(ret)?;
    if flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
        // SAFETY: with NEW_LISTENER the return value is a new fd we own.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as RawFd) }))
    } else {
        Ok(None)
    }
}

/// Asks whether the kernel supports a seccomp return action.
pub fn seccomp_action_available(action: u32) -> io::Result<()> {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_ulong = 2;
    // SAFETY: the kernel reads one u32 from the pointer, which is valid.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0u32,
            &action as *const u32,
        )
    };
    cvt(ret).map(drop)
}

/// The C type of a resource name (`RLIMIT_*`), which differs between glibc
/// and musl.
#[cfg(target_env = "gnu")]
pub type RlimitResource = libc::__rlimit_resource_t;
/// The C type of a resource name (`RLIMIT_*`), which differs between glibc
/// and musl.
#[cfg(not(target_env = "gnu"))]
pub type RlimitResource = libc::c_int;

/// Gets a resource limit.
pub fn getrlimit(resource: RlimitResource) -> io::Result<(u64, u64)> {
    // SAFETY: `lim` is a valid out-pointer.
    unsafe {
        let mut lim = std::mem::zeroed::<libc::rlimit>();
        cvt_int(libc::getrlimit(resource, &mut lim))?;
        Ok((lim.rlim_cur, lim.rlim_max))
    }
}

/// Sets a resource limit.
pub fn setrlimit(resource: RlimitResource, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid, initialised struct that outlives the call.
    cvt_int(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// The number of threads of the calling process.
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Drops every capability from the bounding set.
pub fn drop_bounding_set() -> io::Result<()> {
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP takes an integer capability number only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                // Past the last capability this kernel knows.
                return Ok(());
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Clears the ambient capability set.
pub fn clear_ambient_caps() -> io::Result<()> {
    // SAFETY: integer-only prctl.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    cvt_int(ret).map(drop)
}

/// Locks the capability securebits so that uid 0 never regains capabilities
/// through exec or setuid.
pub fn lock_securebits() -> io::Result<()> {
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
    const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
    const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
    const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: integer-only prctl.
    cvt_int(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) }).map(drop)
}

/// Reads the access mode flags (`O_ACCMODE` part) of an fd, if it is open.
pub fn fd_access_mode(fd: RawFd) -> Option<libc::c_int> {
    // SAFETY: F_GETFL on any integer is safe; an invalid fd yields EBADF.
    let ret = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    (ret >= 0).then_some(ret & libc::O_ACCMODE)
}

/// `dup2(old, new)` on raw descriptors (used for fds 0–2, which no Rust
/// object owns and which may be closed).
pub fn dup2_raw(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the descriptor table; `new` is one of the
    // standard descriptors, which no Rust object in this process owns.
    cvt_int(unsafe { libc::dup2(old, new) }).map(drop)
}

/// The sizes of the seccomp notification structures this kernel uses.
pub fn seccomp_notif_sizes() -> io::Result<libc::seccomp_notif_sizes> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: the kernel writes one `seccomp_notif_sizes` into `sizes`.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    })?;
    Ok(sizes)
}

/// Receives one notification into `buf` (zeroed first, as the kernel
/// requires; at least the kernel's `seccomp_notif` size) and returns it.
pub fn seccomp_notif_recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<libc::seccomp_notif> {
    if buf.len() < std::mem::size_of::<libc::seccomp_notif>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "notification buffer too small",
        ));
    }
    buf.fill(0);
    // SAFETY: `buf` is zeroed and at least as large as the kernel's
    // `seccomp_notif` (checked by the caller against SECCOMP_GET_NOTIF_SIZES
    // and above against ours); the kernel writes at most that much.
    cvt_int(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            buf.as_mut_ptr(),
        )
    })?;
    // SAFETY: `buf` holds at least size_of::<seccomp_notif>() initialized
    // bytes; the read is unaligned-safe, and every bit pattern is a valid
    // `seccomp_notif` (integers only).
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<libc::seccomp_notif>()) })
}

/// `struct pidfd_info` up to `exit_code` (`PIDFD_INFO_SIZE_VER0`, 64
/// bytes).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    /// pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid.
    ids: [u32; 11],
    exit_code: i32,
}

/// `PIDFD_INFO_CREDS`: pid, ppid and the uids and gids (always returned
/// for a live process).
const PIDFD_INFO_CREDS: u64 = 1 << 1;
/// `PIDFD_INFO_EXIT` (Linux 6.15).
const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `PIDFD_GET_INFO`: `_IOWR(0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;

/// The wait status of the process behind pidfd `fd`, once it has exited
/// and been reaped (by anyone: it need not be our child); `None` before.
pub fn pidfd_exit_status(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: the ioctl writes at most `size_of::<PidfdInfo>()` bytes (the
    // size encoded in the request) into `info`, which lives across it.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), PIDFD_GET_INFO, &mut info as *mut PidfdInfo) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code))
}

/// The parent pid and real uid of the live process behind pidfd `fd`, as
/// the caller's namespaces see them (`PIDFD_GET_INFO`, Linux 6.13): one
/// ioctl instead of formatting and parsing `/proc/PID/status`.
pub fn pidfd_parent_and_uid(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_CREDS,
        ..PidfdInfo::default()
    };
    // SAFETY: as in `pidfd_exit_status`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), PIDFD_GET_INFO, &mut info as *mut PidfdInfo) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    if info.mask & PIDFD_INFO_CREDS == 0 {
        return Err(io::Error::other("PIDFD_GET_INFO returned no credentials"));
    }
    Ok((info.ids[2], info.ids[3]))
}

/// Whether notification `id` is still pending (its target alive and in the
/// call).
pub fn seccomp_notif_id_valid(fd: BorrowedFd<'_>, id: u64) -> io::Result<bool> {
    let mut id = id;
    // SAFETY: the ioctl reads one u64 from the pointer.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &mut id as *mut u64,
        )
    };
    if ret == 0 {
        Ok(true)
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(false)
        } else {
            Err(e)
        }
    }
}

/// Lets the notified call `id` continue as if no filter had asked.
pub fn seccomp_notif_continue(fd: BorrowedFd<'_>, id: u64) -> io::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: the kernel reads one `seccomp_notif_resp` from the pointer.
    cvt_int(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut libc::seccomp_notif_resp,
        )
    })
    .map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` (`_IOW('!', 4, __u64)`; Linux 6.6).
const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
/// Wake the target on the answering CPU, without a round through the
/// scheduler.
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// Asks the kernel to hand the CPU straight back to a notified task when
/// its notification is answered (Linux 6.6+; an error on older kernels,
/// where answers still work, only slower).
pub fn seccomp_notif_sync_wake_up(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the ioctl takes its u64 argument by value.
    cvt_int(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    })
    .map(drop)
}
