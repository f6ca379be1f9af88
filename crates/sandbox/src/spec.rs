//! What to build: the sandbox specification, as plain data.
//!
//! The session layer turns a profile into a [`SandboxSpec`]; the launcher
//! executes it without further interpretation. Paths in `dest` fields are
//! absolute paths *inside* the sandbox; `src` fields are host paths.

use std::ffi::OsString;
use std::path::PathBuf;

/// Everything the launcher needs to start one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Command and arguments. `argv[0]` without a `/` is looked up in the
    /// sandbox's `PATH` (from `env`) after the root is built.
    pub argv: Vec<OsString>,
    /// The complete environment of the agent (`NAME=value`), already filtered.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Hostname inside the UTS namespace.
    pub hostname: String,
    /// Mount operations, applied in order onto an empty tmpfs root.
    pub mounts: Vec<Mount>,
    /// Size cap of the root tmpfs in bytes (it holds only mountpoints).
    pub root_size: u64,
    /// Landlock rules.
    pub landlock: LandlockSpec,
    /// Seccomp options.
    pub seccomp: SeccompSpec,
    /// Resource limits.
    pub limits: Limits,
    /// Terminal handling.
    pub terminal: Terminal,
}

/// One mount operation. Applied in order; a mount whose `dest` lies under an
/// earlier one is placed inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A fresh tmpfs (nosuid, nodev).
    Tmpfs {
        /// Where, inside the sandbox.
        dest: PathBuf,
        /// Size cap in bytes.
        size: u64,
        /// Permission bits of the tmpfs root.
        mode: u32,
    },
    /// A recursive bind of a host path (file or directory).
    Bind {
        /// Host path.
        src: PathBuf,
        /// Where, inside the sandbox.
        dest: PathBuf,
        /// Read-write when true; otherwise read-only, recursively.
        writable: bool,
        /// Skip silently when `src` does not exist (for optional system paths).
        optional: bool,
        /// Keep device nodes usable (only for the minimal `/dev` entries).
        dev: bool,
    },
    /// A symlink created in the tmpfs tree.
    Symlink {
        /// Link target (not resolved).
        target: PathBuf,
        /// Where, inside the sandbox.
        dest: PathBuf,
    },
    /// A copy of a small host file (or symlink) made in the root tmpfs, which
    /// becomes read-only: cheaper than a bind mount for configuration files,
    /// and a snapshot (later host changes are not seen).
    Copy {
        /// Host path.
        src: PathBuf,
        /// Where, inside the sandbox.
        dest: PathBuf,
        /// Skip silently when `src` does not exist.
        optional: bool,
    },
    /// A regular file with fixed contents, created read-only.
    File {
        /// Where, inside the sandbox.
        dest: PathBuf,
        /// The contents.
        contents: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A fresh procfs for the sandbox's pid namespace.
    Proc {
        /// Where, inside the sandbox (normally `/proc`).
        dest: PathBuf,
    },
    /// A private devpts instance plus `ptmx` symlink.
    Devpts {
        /// Where, inside the sandbox (normally `/dev/pts`).
        dest: PathBuf,
    },
    /// A copy-on-write overlay: reads come from `lower`, writes go to `upper`.
    Overlay {
        /// Host path of the read-only lower layer.
        lower: PathBuf,
        /// Host path of the upper (writable) layer.
        upper: PathBuf,
        /// Host path of overlayfs's work directory (same filesystem as `upper`).
        work: PathBuf,
        /// Where, inside the sandbox.
        dest: PathBuf,
    },
    /// Re-bind an existing path inside the sandbox read-only (a protected path),
    /// making it a mountpoint that cannot be renamed or removed either.
    ReadOnly {
        /// Path inside the sandbox; skipped when absent.
        dest: PathBuf,
    },
    /// Bind an existing path onto itself, read-write, so it becomes a
    /// mountpoint: it can no longer be renamed or removed (e.g. `.git`).
    Pin {
        /// Path inside the sandbox; skipped when absent.
        dest: PathBuf,
    },
    /// Cover an existing path with an empty, unreadable file or directory.
    Mask {
        /// Path inside the sandbox; skipped when absent.
        dest: PathBuf,
    },
}

impl Mount {
    /// The path inside the sandbox this operation affects.
    pub fn dest(&self) -> &std::path::Path {
        match self {
            Mount::Tmpfs { dest, .. }
            | Mount::Bind { dest, .. }
            | Mount::Symlink { dest, .. }
            | Mount::Copy { dest, .. }
            | Mount::File { dest, .. }
            | Mount::Proc { dest }
            | Mount::Devpts { dest }
            | Mount::Overlay { dest, .. }
            | Mount::ReadOnly { dest }
            | Mount::Pin { dest }
            | Mount::Mask { dest } => dest,
        }
    }
}

/// How strictly Landlock must be enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LandlockMode {
    /// Refuse to start unless every requested Landlock right and scope is enforced.
    Strict,
    /// Refuse to start when Landlock is not enforced at all; warn when only
    /// partly enforced (older kernel ABI).
    #[default]
    Required,
    /// Warn (never refuse) when Landlock is unavailable.
    BestEffort,
}

/// Landlock rules: everything under `read` is readable/executable, everything
/// under `write` also writable. Paths are inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LandlockSpec {
    /// Enforcement requirement.
    pub mode: LandlockMode,
    /// Read-only hierarchies.
    pub read: Vec<PathBuf>,
    /// Read-write hierarchies.
    pub write: Vec<PathBuf>,
    /// Device hierarchies (write + device ioctls), e.g. `/dev`.
    pub devices: Vec<PathBuf>,
}

/// Seccomp options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeccompSpec {
    /// Leave `ptrace`, `process_vm_*` and friends allowed (debuggers).
    pub allow_ptrace: bool,
}

/// Resource limits applied inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of processes/threads of the agent's uid in the sandbox.
    pub nproc: u64,
    /// Maximum open files per process (never raised above the current hard limit).
    pub nofile: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nproc: 4096,
            nofile: 65536,
        }
    }
}

/// How the agent's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Terminal {
    /// The agent inherits cordon's stdin/stdout/stderr (pipes or files).
    #[default]
    Inherit,
    /// The agent gets its own pseudo-terminal in a new session, in place of
    /// each standard descriptor that is a terminal (redirected ones are
    /// passed through); cordon relays bytes and window size between it and
    /// its own terminal.
    Pty,
}
