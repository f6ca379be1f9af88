//! The floor of the exec audit's mechanism, for bench/audit.sh:
//!
//!   notif_floor COMMAND [ARG]...
//!
//! runs COMMAND under the exec-audit seccomp filter cordon installs (every
//! `execve` and `execveat` becomes a user notification) and answers each
//! notification "continue" at once, reading nothing and recording nothing,
//! with no sandbox around it. What it costs is what any exec audit by
//! seccomp user notification costs on the machine: cordon's own share is
//! what it adds on top.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

fn main() {
    let Ok(args) = std::env::args_os()
        .skip(1)
        .map(|a| CString::new(a.into_vec()))
        .collect::<Result<Vec<_>, _>>()
    else {
        eprintln!("notif_floor: an argument holds a NUL byte");
        std::process::exit(2);
    };
    if args.is_empty() {
        eprintln!("usage: notif_floor COMMAND [ARG]...");
        std::process::exit(2);
    }
    match run(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("notif_floor: {e}");
            std::process::exit(1);
        }
    }
}

fn run(args: &[CString]) -> io::Result<i32> {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let (read_end, write_end) = rustix::pipe::pipe()?;
    // SAFETY: the process has one thread here, so the child may allocate;
    // it installs the filter, reports the listener's number and execs.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(read_end);
        let code = match child(&write_end) {
            // SAFETY: `argv` is a NULL-terminated array of pointers to
            // NUL-terminated strings that outlive the call.
            Ok(()) => unsafe {
                libc::execvp(argv[0], argv.as_ptr());
                127
            },
            Err(_) => 126,
        };
        // SAFETY: leaves the forked child without running the parent's
        // destructors or atexit handlers.
        unsafe { libc::_exit(code) }
    }
    drop(write_end);
    let mut number = [0u8; 4];
    let n = rustix::io::read(&read_end, &mut number)?;
    if n != 4 {
        return Err(io::Error::other("the child could not install the filter"));
    }
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| io::Error::other("fork returned no pid"))?,
        rustix::process::PidfdFlags::empty(),
    )?;
    // The child's exec waits for an answer, so its listener (close-on-exec)
    // is still open.
    let listener = rustix::process::pidfd_getfd(
        &pidfd,
        i32::from_ne_bytes(number),
        rustix::process::PidfdGetfdFlags::empty(),
    )?;
    serve(listener.as_fd())?;
    let mut status = 0;
    // SAFETY: waits for our own child and writes its status into `status`.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// In the child: the filter, and the listener's number to the parent.
fn child(report: &OwnedFd) -> io::Result<()> {
    rustix::thread::set_no_new_privs(true)?;
    let listener = cordon_sandbox::seccomp::install_exec_notify(false)?;
    let number = listener.as_raw_fd().to_ne_bytes();
    rustix::io::write(report, &number)?;
    // Kept open (close-on-exec) until the exec is answered.
    std::mem::forget(listener);
    Ok(())
}

/// Answers "continue" to every notification until the listener hangs up.
fn serve(fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags};
    // Hand the CPU straight back to the waiting process, as cordon does.
    const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
    // SAFETY: the ioctl takes its flags by value.
    unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: the kernel writes one `seccomp_notif_sizes` into `sizes`.
    if unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let bytes = usize::from(sizes.seccomp_notif).max(std::mem::size_of::<libc::seccomp_notif>());
    let mut buf = vec![0u64; bytes.div_ceil(8)];
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let revents = fds[0].revents();
        if !revents.contains(PollFlags::IN) {
            if revents.intersects(PollFlags::HUP | PollFlags::ERR) {
                return Ok(());
            }
            continue;
        }
        // Zeroed, as the kernel requires, and as large as this kernel's
        // struct (it may have grown since libc's).
        buf.iter_mut().for_each(|w| *w = 0);
        // SAFETY: the kernel writes at most `sizes.seccomp_notif` bytes, and
        // `buf` holds at least that many, aligned for the struct.
        let got = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                buf.as_mut_ptr(),
            )
        };
        if got < 0 {
            continue;
        }
        // SAFETY: `buf` starts with a `seccomp_notif` the kernel filled in.
        let req: libc::seccomp_notif = unsafe { std::ptr::read(buf.as_ptr().cast()) };
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: the kernel reads one `seccomp_notif_resp`; a failure means
        // the target is gone, which needs no answer.
        unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp as *mut libc::seccomp_notif_resp,
            )
        };
    }
}
