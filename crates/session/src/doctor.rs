//! `cordon doctor`: which layers work on this host and which profiles can run.

use cordon_policy::profile::LandlockLevel;
use cordon_sandbox::probe::{self, Probe};
use cordon_types::ProjectMode;
use serde::Serialize;

use crate::Dirs;

/// Whether one profile can run here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileStatus {
    /// Profile name.
    pub name: String,
    /// Runs on this host.
    pub runnable: bool,
    /// Probe ids (or errors) that stop it.
    pub missing: Vec<String>,
}

/// The full report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every probe, in order.
    pub probes: Vec<Probe>,
    /// Every profile cordon can find.
    pub profiles: Vec<ProfileStatus>,
    /// How process and memory limits are enforced here.
    pub limits: String,
    /// How profiles that allow network destinations reach them here.
    pub egress: String,
    /// Whether the default profile can run (the exit status of `doctor`).
    pub default_runs: bool,
}

/// Layers the namespaces backend always needs.
const BASE: &[&str] = &[
    "userns",
    "mountns",
    "pidns",
    "netns",
    "nested_userns",
    "seccomp",
];

fn ok(probes: &[Probe], id: &str) -> bool {
    probes.iter().any(|p| p.id == id && p.ok)
}

fn landlock_abi(probes: &[Probe]) -> i64 {
    probes
        .iter()
        .find(|p| p.id == "landlock" && p.ok)
        .and_then(|p| p.detail.strip_prefix("ABI "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Runs every probe and checks every profile. Must be called from a
/// single-threaded process.
pub fn run(dirs: &Dirs) -> Report {
    let scratch = dirs.state.clone();
    let _ = crate::dirs::create_private_dir(&scratch);
    let probes = probe::run_all(&scratch);
    let mut profiles = Vec::new();
    for listed in crate::profiles::list(dirs) {
        let mut missing = Vec::new();
        match crate::profiles::load(&listed.name, dirs) {
            Err(e) => missing.push(format!("profile error: {e}")),
            Ok(p) => {
                for id in BASE {
                    if !ok(&probes, id) {
                        missing.push((*id).to_owned());
                    }
                }
                let abi = landlock_abi(&probes);
                match p.sandbox.landlock {
                    LandlockLevel::Strict if abi < 6 => missing.push("landlock (ABI >= 6)".into()),
                    LandlockLevel::Required if abi < 1 => missing.push("landlock".into()),
                    _ => {}
                }
                if p.project.mode == ProjectMode::Overlay && !ok(&probes, "overlayfs") {
                    missing.push("overlayfs".into());
                }
                if p.network.mode == cordon_policy::network::EgressMode::Transparent
                    && !p.network.is_closed()
                    && !ok(&probes, "tun")
                {
                    missing.push("tun (transparent egress)".into());
                }
            }
        }
        profiles.push(ProfileStatus {
            name: listed.name,
            runnable: missing.is_empty(),
            missing,
        });
    }
    let limits = "process count: RLIMIT_NPROC per sandbox (uid 0 is exempt); memory: not \
                  capped (the sandbox's cgroup, where there is one, only freezes it; RLIMIT_AS \
                  would break node and java); /tmp and $HOME: tmpfs size caps"
        .to_owned();
    let egress = if ok(&probes, "tun") {
        format!(
            "transparent capture: profiles with [network] allow rules (mode auto or \
             transparent) get a TUN device and cordon's DNS; every tool's traffic goes through \
             the policy. mode = \"proxy\" uses the explicit proxy at 127.0.0.1:{} instead.",
            cordon_net::PROXY_PORT
        )
    } else {
        format!(
            "explicit-proxy mode: /dev/net/tun is not usable by this user, so profiles with \
             [network] allow rules get cordon's policy proxy at 127.0.0.1:{} inside the \
             sandbox (HTTP(S)_PROXY/ALL_PROXY point to it); tools that ignore proxy variables \
             have no way out. Profiles with mode = \"transparent\" cannot run.",
            cordon_net::PROXY_PORT
        )
    };
    let default_runs = profiles.iter().any(|p| p.name == "default" && p.runnable);
    Report {
        probes,
        profiles,
        limits,
        egress,
        default_runs,
    }
}
