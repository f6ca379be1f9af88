//! What to build: the sandbox specification, as plain data.
//!
//! The session layer turns a profile into a [`SandboxSpec`]; the launcher
//! executes it without further interpretation. Paths in `dest` fields are
//! absolute paths *inside* the sandbox; `src` fields are host paths.
//!
//! The spec travels from the supervisor to the sandbox's init as JSON (init
//! is started before the spec exists, see [`crate::Prelaunch`]). Paths and
//! strings from the host need not be UTF-8: they are encoded as a JSON string
//! when they are, and as an array of bytes otherwise ([`os`]).

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the launcher needs to start one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Command and arguments. `argv[0]` without a `/` is looked up in the
    /// sandbox's `PATH` (from `env`) after the root is built.
    #[serde(with = "os::vec")]
    pub argv: Vec<OsString>,
    /// The file to execute, when the supervisor resolved (and checked) it
    /// already: an absolute path, executed in place of looking `argv[0]`
    /// up; `argv[0]` stays as given.
    #[serde(with = "os::opt", default)]
    pub program: Option<PathBuf>,
    /// The complete environment of the agent (`NAME=value`), already filtered.
    #[serde(with = "os::pairs")]
    pub env: Vec<(OsString, OsString)>,
    /// Working directory inside the sandbox.
    #[serde(with = "os::one")]
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
    /// A TCP port on the sandbox's 127.0.0.1 where init listens for the
    /// supervisor's egress proxy: the listening socket is handed out
    /// (`Event::ProxyListener`), so connections made inside are accepted
    /// outside. `None`: loopback only, no way out.
    #[serde(default)]
    pub proxy_port: Option<u16>,
    /// A TUN device for transparent egress capture: created inside the
    /// sandbox's network namespace, given this address, made the route to
    /// every IPv4 destination, and handed to the supervisor
    /// (`Event::Tun`). `None`: no TUN.
    #[serde(default)]
    pub tun: Option<TunSpec>,
}

/// The sandbox's TUN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunSpec {
    /// The sandbox's own address on it.
    pub address: std::net::Ipv4Addr,
    /// Its MTU.
    pub mtu: u32,
}

/// One mount operation. Applied in order; a mount whose `dest` lies under an
/// earlier one is placed inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mount {
    /// A fresh tmpfs (nosuid, nodev).
    Tmpfs {
        /// Where, inside the sandbox.
        #[serde(with = "os::one")]
        dest: PathBuf,
        /// Size cap in bytes.
        size: u64,
        /// Permission bits of the tmpfs root.
        mode: u32,
    },
    /// A recursive bind of a host path (file or directory).
    Bind {
        /// Host path.
        #[serde(with = "os::one")]
        src: PathBuf,
        /// Where, inside the sandbox.
        #[serde(with = "os::one")]
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
        #[serde(with = "os::one")]
        target: PathBuf,
        /// Where, inside the sandbox.
        #[serde(with = "os::one")]
        dest: PathBuf,
    },
    /// A regular file with fixed contents, created read-only.
    File {
        /// Where, inside the sandbox.
        #[serde(with = "os::one")]
        dest: PathBuf,
        /// The contents.
        contents: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A fresh procfs for the sandbox's pid namespace.
    Proc {
        /// Where, inside the sandbox (normally `/proc`).
        #[serde(with = "os::one")]
        dest: PathBuf,
    },
    /// A private devpts instance plus `ptmx` symlink.
    Devpts {
        /// Where, inside the sandbox (normally `/dev/pts`).
        #[serde(with = "os::one")]
        dest: PathBuf,
    },
    /// A copy-on-write overlay: reads come from `lower`, writes go to `upper`.
    Overlay {
        /// Host path of the read-only lower layer.
        #[serde(with = "os::one")]
        lower: PathBuf,
        /// Host path of the upper (writable) layer.
        #[serde(with = "os::one")]
        upper: PathBuf,
        /// Host path of overlayfs's work directory (same filesystem as `upper`).
        #[serde(with = "os::one")]
        work: PathBuf,
        /// Where, inside the sandbox.
        #[serde(with = "os::one")]
        dest: PathBuf,
    },
    /// Re-bind an existing path inside the sandbox read-only (a protected path),
    /// making it a mountpoint that cannot be renamed or removed either.
    ReadOnly {
        /// Path inside the sandbox; skipped when absent.
        #[serde(with = "os::one")]
        dest: PathBuf,
    },
    /// Bind an existing path onto itself, read-write, so it becomes a
    /// mountpoint: it can no longer be renamed or removed (e.g. `.git`).
    Pin {
        /// Path inside the sandbox; skipped when absent.
        #[serde(with = "os::one")]
        dest: PathBuf,
    },
    /// Cover an existing path with an empty, unreadable file or directory.
    Mask {
        /// Path inside the sandbox; skipped when absent.
        #[serde(with = "os::one")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LandlockSpec {
    /// Enforcement requirement.
    pub mode: LandlockMode,
    /// Read-only hierarchies.
    #[serde(with = "os::vec")]
    pub read: Vec<PathBuf>,
    /// Read-write hierarchies.
    #[serde(with = "os::vec")]
    pub write: Vec<PathBuf>,
    /// Device hierarchies (write + device ioctls), e.g. `/dev`.
    #[serde(with = "os::vec")]
    pub devices: Vec<PathBuf>,
}

/// Seccomp options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeccompSpec {
    /// Leave `ptrace`, `process_vm_*` and friends allowed (debuggers).
    pub allow_ptrace: bool,
    /// Hand the supervisor a seccomp listener for every `execve` and
    /// `execveat` in the sandbox, and `exit_group` unless
    /// `exits_by_pidfd` (the exec audit).
    #[serde(default)]
    pub audit_exec: bool,
    /// With `audit_exec`: exits are not notified; the supervisor reads each
    /// executed process's exit status from a pidfd once it is reaped
    /// ([`crate::exit_info_supported`]), which spares every process a
    /// round trip and also sees deaths by signal.
    #[serde(default)]
    pub exits_by_pidfd: bool,
}

/// Resource limits applied inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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

/// Serde helpers for host strings and paths that may not be UTF-8.
mod os {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// A borrowed OS string, written as a JSON string when it is UTF-8 and
    /// as an array of bytes otherwise.
    struct Out<'a>(&'a OsStr);

    impl Serialize for Out<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0.to_str() {
                Some(text) => s.serialize_str(text),
                None => s.serialize_bytes(self.0.as_bytes()),
            }
        }
    }

    /// Either encoding, read back.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum In {
        Text(String),
        Bytes(Vec<u8>),
    }

    impl From<In> for OsString {
        fn from(v: In) -> OsString {
            match v {
                In::Text(t) => OsString::from(t),
                In::Bytes(b) => OsString::from_vec(b),
            }
        }
    }

    /// One value (`PathBuf` or `OsString`).
    pub mod one {
        use super::*;

        pub fn serialize<T: AsRef<OsStr>, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
            Out(v.as_ref()).serialize(s)
        }

        pub fn deserialize<'de, T: From<OsString>, D: Deserializer<'de>>(
            d: D,
        ) -> Result<T, D::Error> {
            In::deserialize(d).map(|v| T::from(OsString::from(v)))
        }
    }

    /// An optional value.
    pub mod opt {
        use super::*;

        pub fn serialize<T: AsRef<OsStr>, S: Serializer>(
            v: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(x) => s.serialize_some(&Out(x.as_ref())),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T: From<OsString>, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<T>, D::Error> {
            Option::<In>::deserialize(d).map(|v| v.map(|x| T::from(OsString::from(x))))
        }
    }

    /// A list of values.
    pub mod vec {
        use super::*;

        pub fn serialize<T: AsRef<OsStr>, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|x| Out(x.as_ref())))
        }

        pub fn deserialize<'de, T: From<OsString>, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<T>, D::Error> {
            Vec::<In>::deserialize(d).map(|v| v.into_iter().map(|x| T::from(x.into())).collect())
        }
    }

    /// A list of name/value pairs.
    pub mod pairs {
        use super::*;

        pub fn serialize<S: Serializer>(
            v: &[(OsString, OsString)],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|(k, x)| (Out(k), Out(x))))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<(OsString, OsString)>, D::Error> {
            Vec::<(In, In)>::deserialize(d)
                .map(|v| v.into_iter().map(|(k, x)| (k.into(), x.into())).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn spec_survives_json_including_non_utf8_paths() {
        let odd = OsString::from_vec(b"/tmp/caf\xe9".to_vec());
        let spec = SandboxSpec {
            argv: vec!["sh".into(), odd.clone()],
            program: Some(PathBuf::from(&odd)),
            env: vec![
                ("PATH".into(), "/usr/bin".into()),
                ("X".into(), odd.clone()),
            ],
            cwd: PathBuf::from(&odd),
            hostname: "cordon".into(),
            mounts: vec![
                Mount::Bind {
                    src: PathBuf::from(&odd),
                    dest: "/usr".into(),
                    writable: false,
                    optional: true,
                    dev: false,
                },
                Mount::File {
                    dest: "/etc/hostname".into(),
                    contents: b"cordon\n".to_vec(),
                    mode: 0o644,
                },
                Mount::Mask {
                    dest: PathBuf::from(&odd),
                },
            ],
            root_size: 1 << 20,
            landlock: LandlockSpec {
                mode: LandlockMode::Strict,
                read: vec!["/usr".into()],
                write: vec![PathBuf::from(&odd)],
                devices: vec!["/dev".into()],
            },
            seccomp: SeccompSpec {
                allow_ptrace: true,
                audit_exec: true,
                exits_by_pidfd: false,
            },
            limits: Limits::default(),
            terminal: Terminal::Pty,
            proxy_port: None,
            tun: None,
        };
        let json = serde_json::to_vec(&spec).expect("serialize");
        let back: SandboxSpec = serde_json::from_slice(&json).expect("deserialize");
        assert_eq!(back, spec);
    }
}
