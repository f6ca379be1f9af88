//! From an effective profile to the sandbox's filesystem view.
//!
//! The view, in the order the launcher builds it: a tmpfs root; `/usr` and the
//! usr-merge links; a curated `/etc`; `/opt`; fresh `/proc`; a minimal `/dev`;
//! tmpfs `/tmp`; the fake `$HOME` (tmpfs plus granted entries); extra paths;
//! the project at its real path (ro, overlay or rw); protected paths re-bound
//! read-only; hidden files masked.

use std::ffi::OsStr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use cordon_policy::hide::HideMatcher;
use cordon_policy::Profile;
use cordon_sandbox::{LandlockMode, LandlockSpec, Mount};
use cordon_types::ProjectMode;

use crate::{Dirs, Error};

/// System paths bound read-only when present.
const SYSTEM_DIRS: &[&str] = &["/usr", "/opt"];
/// usr-merge links (recreated as symlinks when they are symlinks on the host).
const MERGED_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/// Device nodes bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// At most this many hidden paths are masked (each one is a mount).
pub const MAX_HIDDEN: usize = 4096;

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// Effective profile.
    pub profile: &'a Profile,
    /// cordon's directories (for the real home and persisted entries).
    pub dirs: &'a Dirs,
    /// Canonical project path.
    pub project: PathBuf,
    /// Project mode (profile or `--mode`).
    pub mode: ProjectMode,
    /// Session directory (overlay layers live here).
    pub session_dir: PathBuf,
    /// Extra read-only host paths (canonical).
    pub allow_read: Vec<PathBuf>,
    /// Extra read-write host paths (canonical).
    pub allow_write: Vec<PathBuf>,
}

/// The view, ready for the launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Mount operations.
    pub mounts: Vec<Mount>,
    /// Landlock rules matching the mounts.
    pub landlock: LandlockSpec,
    /// Placeholders created in the overlay's upper layer (project-relative).
    pub placeholders: Vec<PathBuf>,
    /// Hidden project paths (project-relative).
    pub hidden: Vec<PathBuf>,
    /// Protected paths that did not exist at start (project-relative).
    pub missing_protected: Vec<PathBuf>,
    /// Every protected path (project-relative), including `core.hooksPath`.
    pub protected: Vec<PathBuf>,
    /// Prefixes of protected paths that were symlinks at start.
    pub symlinks: Vec<PathBuf>,
    /// rw mode: [`scan_sensitive`] before the run.
    pub sensitive: Vec<PathBuf>,
    /// rw mode: `.git/HEAD` before the run.
    pub git_head: Option<Vec<u8>>,
}

fn ro(src: &Path, optional: bool) -> Mount {
    Mount::Bind {
        src: src.to_path_buf(),
        dest: src.to_path_buf(),
        writable: false,
        optional,
        dev: false,
    }
}

fn rw(src: &Path, dest: &Path) -> Mount {
    Mount::Bind {
        src: src.to_path_buf(),
        dest: dest.to_path_buf(),
        writable: true,
        optional: false,
        dev: false,
    }
}

/// Mounts under `/etc` other than its own entries (grants, a project there)
/// need mountpoints in the cached copy: make a copy that has them.
fn etc_mountpoints(mounts: &mut [Mount], profile: &Profile, dirs: &Dirs) -> Result<(), Error> {
    let etc = Path::new("/etc");
    let Some(at) = mounts
        .iter()
        .position(|m| matches!(m, Mount::Bind { dest, .. } if dest == etc))
    else {
        return Ok(());
    };
    let own: Vec<PathBuf> = mounts[at..]
        .iter()
        .take_while(|m| m.dest().starts_with(etc))
        .map(|m| m.dest().to_path_buf())
        .collect();
    let extra: Vec<(PathBuf, bool)> = mounts
        .iter()
        .filter_map(|m| {
            let (dest, dir) = match m {
                Mount::Bind { src, dest, .. } => (dest, src.is_dir()),
                Mount::Overlay { dest, .. } | Mount::Tmpfs { dest, .. } => (dest, true),
                _ => return None,
            };
            let rel = dest.strip_prefix(etc).ok()?;
            (!own.contains(dest) && !rel.as_os_str().is_empty()).then(|| (rel.to_path_buf(), dir))
        })
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    let view = crate::etc::prepare(&dirs.state, &profile.sandbox.hostname, &extra)?;
    if let Mount::Bind { src, .. } = &mut mounts[at] {
        *src = view.dir;
    }
    Ok(())
}

/// The system part of the view (everything but home, project and grants).
fn system_mounts(profile: &Profile, dirs: &Dirs) -> Result<Vec<Mount>, Error> {
    let mut m = Vec::new();
    for d in SYSTEM_DIRS {
        m.push(ro(Path::new(d), true));
    }
    for d in MERGED_DIRS {
        let p = Path::new(d);
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(p) {
                    m.push(Mount::Symlink {
                        target,
                        dest: p.to_path_buf(),
                    });
                }
            }
            Ok(_) => m.push(ro(p, true)),
            Err(_) => {}
        }
    }
    let etc = crate::etc::prepare(&dirs.state, &profile.sandbox.hostname, &[])?;
    m.push(Mount::Bind {
        src: etc.dir,
        dest: "/etc".into(),
        writable: false,
        optional: false,
        dev: false,
    });
    for p in &etc.binds {
        m.push(ro(p, true));
    }
    m.push(Mount::Proc {
        dest: "/proc".into(),
    });
    m.push(Mount::Tmpfs {
        dest: "/dev".into(),
        size: 1 << 20,
        mode: 0o755,
    });
    for d in DEVICES {
        let p = Path::new("/dev").join(d);
        m.push(Mount::Bind {
            src: p.clone(),
            dest: p,
            writable: true,
            optional: false,
            dev: true,
        });
    }
    m.push(Mount::Devpts {
        dest: "/dev/pts".into(),
    });
    m.push(Mount::Tmpfs {
        dest: "/dev/shm".into(),
        size: profile.limits.tmp_size.0,
        mode: 0o1777,
    });
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        m.push(Mount::Symlink {
            target: target.into(),
            dest: Path::new("/dev").join(name),
        });
    }
    m.push(Mount::Tmpfs {
        dest: "/tmp".into(),
        size: profile.limits.tmp_size.0,
        mode: 0o1777,
    });
    m.push(Mount::Symlink {
        target: "/tmp".into(),
        dest: "/var/tmp".into(),
    });
    Ok(m)
}

fn refuse(message: String, hint: &str) -> Error {
    Error::Refused {
        message,
        hint: hint.to_owned(),
    }
}

/// Refuses grants that overlap cordon's own configuration or state (the
/// agent could rewrite profiles, or other sessions' overlays that `apply`
/// later writes into projects).
fn check_not_cordon(path: &Path, dirs: &Dirs, what: &str) -> Result<(), Error> {
    for own in [&dirs.config, &dirs.state] {
        if path.starts_with(own) || own.starts_with(path) {
            return Err(refuse(
                format!(
                    "refusing to expose {} as {what}: it overlaps cordon's own directory {}",
                    path.display(),
                    own.display()
                ),
                "name a directory outside ~/.config/cordon and ~/.local/state/cordon",
            ));
        }
    }
    Ok(())
}

/// Credential locations in a home that a grant may never lead into through a
/// symlink (directories and single files).
const SECRET_HOME_PATHS: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".config/gh",
    ".config/hub",
    ".local/share/gh",
    ".local/share/keyrings",
    ".password-store",
    ".git-credentials",
    ".pgpass",
    ".vault-token",
    ".netrc",
];

/// A grant under the home directory is mounted where its symlinks lead:
/// refuse when that is, contains, or lies inside a credential location, is
/// the home itself or above it, or is a file the profile hides — so a dotfile
/// or toolchain directory turned into a link to `~/.ssh` by an earlier
/// session does not hand the keys over. A grant *written* as a credential
/// path (or with a hidden name) is the user's explicit choice and allowed.
fn check_home_target(src: &Path, real: &Path, home: &Path, p: &Profile) -> Result<(), Error> {
    if real == src || !(src.starts_with(home) || real.starts_with(home)) {
        return Ok(());
    }
    let inside_secret = |x: &Path| {
        SECRET_HOME_PATHS
            .iter()
            .any(|d| x.starts_with(home.join(d)))
    };
    let holds_secret = |x: &Path| {
        SECRET_HOME_PATHS
            .iter()
            .any(|d| home.join(d).starts_with(x))
    };
    let hidden = |x: &Path| {
        x.file_name()
            .is_some_and(|n| p.hide_matcher().is_hidden(Path::new(n)))
    };
    // Written as a credential path or a hidden name: an explicit choice.
    if inside_secret(src) || hidden(src) {
        return Ok(());
    }
    if inside_secret(real) || holds_secret(real) || hidden(real) {
        return Err(refuse(
            format!(
                "refusing {}: its symlinks lead to {}, which is or holds credentials",
                src.display(),
                real.display()
            ),
            "check that symlink (an earlier session may have planted it)",
        ));
    }
    Ok(())
}

/// Paths that must never be granted wholesale: `/` and the home directory or
/// any of its ancestors (they contain every credential the user has).
pub fn check_grant(path: &Path, home: &Path, what: &str) -> Result<(), Error> {
    if let Ok(md) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if md.is_dir() && md.permissions().mode() & 0o1002 == 0o1002 {
            return Err(refuse(
                format!(
                    "refusing to expose {} as {what}: it is a shared, world-writable directory \
                     (other users' files, ssh-agent and tmux sockets)",
                    path.display()
                ),
                "grant a directory of your own",
            ));
        }
    }
    for special in ["/proc", "/sys", "/dev", "/run"] {
        if path.starts_with(special) {
            return Err(refuse(
                format!(
                    "refusing to expose {} as {what}: {special} holds kernel interfaces and \
                     service sockets (D-Bus, ssh-agent, the container runtime)",
                    path.display()
                ),
                "the sandbox has its own /proc and /dev; grant a regular directory",
            ));
        }
    }
    if path == Path::new("/") || home.starts_with(path) {
        return Err(refuse(
            format!(
                "refusing to expose {} as {what}: it contains your home directory and with it \
                 your SSH keys, cloud credentials and tokens",
                path.display()
            ),
            "name a narrower directory (a project, a toolchain directory)",
        ));
    }
    Ok(())
}

/// Builds the view for `input`.
pub fn build(input: &Input<'_>) -> Result<Layout, Error> {
    let p = input.profile;
    let home = &input.dirs.home;
    let project = &input.project;
    let mut mounts = system_mounts(p, input.dirs)?;
    let mut write: Vec<PathBuf> = vec!["/tmp".into(), "/dev/shm".into(), home.clone()];

    // The fake home: a tmpfs at the real path, plus granted entries.
    mounts.push(Mount::Tmpfs {
        dest: home.clone(),
        size: p.limits.home_size.0,
        mode: 0o700,
    });
    for (rules, writable) in [(&p.home.read, false), (&p.home.write, true)] {
        for r in rules {
            let src = home.join(&r.value.0);
            let what = if writable {
                "a writable home entry"
            } else {
                "a home entry"
            };
            let real = crate::dirs::resolve(&src);
            check_not_cordon(&real, input.dirs, what)?;
            check_home_target(&src, &real, home, p)?;
            if !src.exists() {
                if r.optional {
                    continue;
                }
                return Err(Error::NotFound(format!(
                    "profile {:?} grants ~/{} but {} does not exist (create it, or mark the \
                     rule `optional = true`)",
                    p.name,
                    r.value.0.display(),
                    src.display()
                )));
            }
            mounts.push(Mount::Bind {
                src: src.clone(),
                dest: src,
                writable,
                optional: false,
                dev: false,
            });
        }
    }
    let persisted = input.dirs.persisted_home(&p.name);
    for r in &p.home.persist {
        let src = persisted.join(&r.value.0);
        crate::dirs::create_private_dir(&src)?;
        mounts.push(rw(&src, &home.join(&r.value.0)));
    }

    // Extra host paths: the profile's rules, then the command line's (which
    // are canonical already and must exist).
    let rules = [(&p.filesystem.read, false), (&p.filesystem.write, true)];
    let from_profile = rules.into_iter().flat_map(|(rules, writable)| {
        rules
            .iter()
            .map(move |r| (r.value.resolve(home), writable, r.optional))
    });
    let from_cli = input
        .allow_read
        .iter()
        .map(|x| (x.clone(), false, false))
        .chain(input.allow_write.iter().map(|x| (x.clone(), true, false)));
    for (path, writable, optional) in from_profile.chain(from_cli) {
        let what = if writable {
            "a writable path"
        } else {
            "a read-only path"
        };
        let real = crate::dirs::resolve(&path);
        check_grant(&real, home, what)?;
        check_not_cordon(&real, input.dirs, what)?;
        check_home_target(&path, &real, home, p)?;
        if !path.exists() {
            if optional {
                continue;
            }
            return Err(Error::NotFound(format!(
                "profile {:?} grants {what} {} which does not exist (mark it `optional = true`?)",
                p.name,
                path.display()
            )));
        }
        if writable {
            mounts.push(rw(&path, &path));
            write.push(path);
        } else {
            mounts.push(ro(&path, false));
        }
    }

    // The project.
    let mut placeholders = Vec::new();
    let mut missing_protected = Vec::new();
    let mut protected = p.protected_paths();
    let mut dir_like: Vec<PathBuf> = Vec::new();
    for (extra, dir) in git_config_protected(project, home) {
        if dir {
            dir_like.push(extra.clone());
        }
        if !protected.contains(&extra) {
            protected.push(extra);
        }
    }
    // A protected path that is a symlink is protected where it points (also
    // when that does not exist yet); a mount on the link itself would
    // protect nothing.
    let targets: Vec<(PathBuf, bool)> = protected
        .iter()
        .filter_map(|rel| {
            symlink_target(project, rel).map(|t| (t, is_dir_like(rel) || dir_like.contains(rel)))
        })
        .collect();
    for (t, dir) in targets {
        if dir {
            dir_like.push(t.clone());
        }
        if !protected.contains(&t) {
            protected.push(t);
        }
    }
    let git = project.join(".git");
    let git_is_file = std::fs::symlink_metadata(&git).is_ok_and(|m| !m.is_dir());
    match input.mode {
        ProjectMode::Ro => mounts.push(ro(project, false)),
        ProjectMode::Rw => {
            mounts.push(rw(project, project));
            write.push(project.clone());
        }
        ProjectMode::Overlay => {
            let upper = input.session_dir.join("upper");
            let work = input.session_dir.join("work");
            crate::dirs::create_private_dir(&upper)?;
            crate::dirs::create_private_dir(&work)?;
            mounts.push(Mount::Overlay {
                lower: project.clone(),
                upper,
                work,
                dest: project.clone(),
            });
            write.push(project.clone());
        }
    }
    if input.mode != ProjectMode::Ro {
        if git.is_dir() && !git_is_file {
            // A mountpoint cannot be renamed or removed: the agent cannot swap
            // .git for a copy with writable hooks.
            mounts.push(Mount::Pin { dest: git.clone() });
        } else if git_is_file {
            // A worktree or submodule checkout: `.git` names the git dir;
            // rewriting it would point git at a directory the agent made.
            mounts.push(Mount::ReadOnly { dest: git.clone() });
        }
    }
    if input.mode != ProjectMode::Ro {
        // A directory holding a protected path could be renamed and replaced
        // by one without the read-only mount (`mv .github x; mkdir -p
        // .github/hooks`): make every such ancestor a mountpoint too.
        let mut pinned: Vec<PathBuf> = vec![PathBuf::from(".git")];
        for rel in &protected {
            let mut prefix = PathBuf::new();
            let comps: Vec<_> = rel.components().collect();
            for comp in comps.iter().take(comps.len().saturating_sub(1)) {
                prefix.push(comp);
                let host = project.join(&prefix);
                let is_dir = std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir());
                if is_dir && !pinned.contains(&prefix) {
                    pinned.push(prefix.clone());
                    mounts.push(Mount::Pin { dest: host });
                }
            }
        }
    }
    let mut symlinks = Vec::new();
    for rel in &protected {
        let mut prefix = PathBuf::new();
        for comp in rel.components() {
            prefix.push(comp);
            if std::fs::symlink_metadata(project.join(&prefix))
                .is_ok_and(|m| m.file_type().is_symlink())
                && !symlinks.contains(&prefix)
            {
                symlinks.push(prefix.clone());
            }
        }
        let host = project.join(rel);
        let exists = std::fs::symlink_metadata(&host).is_ok();
        if !exists {
            missing_protected.push(rel.clone());
            // Give the read-only mount something to cover, in the upper layer
            // only; `apply` never writes placeholders back. Under `.git` none
            // are made (an empty `commondir` would break git inside); there
            // `apply` refuses everything but objects, refs, index and logs.
            let is_link =
                std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink());
            if input.mode == ProjectMode::Overlay && !rel.starts_with(".git") && !is_link {
                let ph = input.session_dir.join("upper").join(rel);
                create_placeholder(&ph, is_dir_like(rel) || dir_like.contains(rel))?;
                placeholders.push(rel.clone());
            } else {
                continue;
            }
        }
        if input.mode != ProjectMode::Ro {
            mounts.push(Mount::ReadOnly { dest: host.clone() });
        }
    }

    // Hidden files.
    let matcher = p.hide_matcher();
    let hidden = find_hidden(project, matcher, input.mode != ProjectMode::Ro)?;
    for rel in &hidden {
        mounts.push(Mount::Mask {
            dest: project.join(rel),
        });
    }

    let landlock = LandlockSpec {
        mode: match p.sandbox.landlock {
            cordon_policy::profile::LandlockLevel::Strict => LandlockMode::Strict,
            cordon_policy::profile::LandlockLevel::Required => LandlockMode::Required,
            cordon_policy::profile::LandlockLevel::BestEffort => LandlockMode::BestEffort,
        },
        read: vec!["/".into()],
        write,
        devices: vec!["/dev".into()],
    };
    etc_mountpoints(&mut mounts, p, input.dirs)?;
    Ok(Layout {
        mounts,
        landlock,
        placeholders,
        hidden,
        missing_protected,
        protected,
        symlinks,
        sensitive: if input.mode == ProjectMode::Rw {
            scan_sensitive(project)
        } else {
            Vec::new()
        },
        git_head: if input.mode == ProjectMode::Rw {
            std::fs::read(project.join(".git/HEAD")).ok()
        } else {
            None
        },
    })
}

/// Entries that make git, direnv or an editor run code on the host, found
/// anywhere in the project (project-relative): names in
/// `NEVER_APPLIED_NAMES` (except the top-level `.git`), `*.code-workspace`,
/// and any symlink inside `.git` (git writes through them). rw mode compares
/// this before and after the run.
pub fn scan_sensitive(project: &Path) -> Vec<PathBuf> {
    use cordon_policy::profile::{NEVER_APPLIED_NAMES, NEVER_APPLIED_SUFFIXES};
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(project.join(&rel)) else {
            continue;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let child = rel.join(&name);
            let Ok(ft) = entry.file_type() else { continue };
            if child.starts_with(".git") {
                if ft.is_symlink() {
                    out.push(child);
                } else if ft.is_dir() {
                    stack.push(child);
                }
                continue;
            }
            let bad = NEVER_APPLIED_NAMES
                .iter()
                .any(|n| name.as_bytes() == n.as_bytes())
                || NEVER_APPLIED_SUFFIXES
                    .iter()
                    .any(|s| name.as_bytes().ends_with(s.as_bytes()));
            if bad {
                out.push(child);
            } else if ft.is_dir() {
                stack.push(child);
            }
        }
    }
    out.sort();
    out
}

/// Normalizes `path` lexically (`.` dropped, `..` applied) against `base`;
/// `~/` expands to `home`.
fn normalize(base: &Path, path: &str, home: &Path) -> PathBuf {
    let joined = match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => base.join(path),
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The git configuration files of the project's repository: `.git/config`,
/// or for a worktree/submodule checkout (`.git` is a file) the git dir's and
/// its common dir's `config`.
fn git_config_files(project: &Path) -> Vec<PathBuf> {
    let git = project.join(".git");
    if git.is_dir() {
        return vec![git.join("config")];
    }
    let Ok(text) = std::fs::read_to_string(&git) else {
        return Vec::new();
    };
    let Some(dir) = text.lines().find_map(|l| l.strip_prefix("gitdir:")) else {
        return Vec::new();
    };
    let gitdir = normalize(project, dir.trim(), Path::new("/"));
    let mut files = vec![gitdir.join("config")];
    if let Ok(common) = std::fs::read_to_string(gitdir.join("commondir")) {
        files.push(normalize(&gitdir, common.trim(), Path::new("/")).join("config"));
    }
    files
}

/// Paths inside the project that git's configuration makes executable or
/// authoritative: the `core.hooksPath` directory (relative to the worktree)
/// and every `include.path`/`includeIf.*.path` target (relative to the
/// including file), followed a few levels deep. A small reader of git's
/// config syntax: sections, `key = value` (also on the header line), quotes,
/// comments.
pub fn git_config_protected(project: &Path, home: &Path) -> Vec<(PathBuf, bool)> {
    let mut out: Vec<(PathBuf, bool)> = Vec::new();
    let mut queue: Vec<(PathBuf, usize)> = git_config_files(project)
        .into_iter()
        .map(|f| (f, 0))
        .collect();
    let mut seen = Vec::new();
    while let Some((file, depth)) = queue.pop() {
        if depth > 4 || seen.contains(&file) {
            continue;
        }
        seen.push(file.clone());
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let base = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut section = String::new();
        for raw in text.lines() {
            let mut l = raw.trim();
            if l.starts_with('[') {
                let end = l.find(']').unwrap_or(l.len());
                let name = l[1..end].trim().split([' ', '"', '.']).next().unwrap_or("");
                section = name.to_ascii_lowercase();
                l = l.get(end + 1..).unwrap_or("").trim();
            }
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                continue;
            };
            let key = k.trim().to_ascii_lowercase();
            let v = v
                .split([';', '#'])
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            let (target, dir) = match (section.as_str(), key.as_str()) {
                ("core", "hookspath") => (normalize(project, v, home), true),
                ("include" | "includeif", "path") => {
                    let t = normalize(&base, v, home);
                    queue.push((t.clone(), depth + 1));
                    (t, false)
                }
                _ => continue,
            };
            if let Ok(rel) = target.strip_prefix(project) {
                if !rel.as_os_str().is_empty() && !out.iter().any(|(o, _)| o == rel) {
                    out.push((rel.to_path_buf(), dir));
                }
            }
        }
    }
    out
}

/// Where a protected path really is when it (or a parent) is a symlink,
/// resolved lexically so that a target that does not exist yet is found too.
/// Only targets inside the project are returned (project-relative).
fn symlink_target(project: &Path, rel: &Path) -> Option<PathBuf> {
    let mut cur = project.to_path_buf();
    let mut hops = 0;
    let mut rest: Vec<std::ffi::OsString> =
        rel.components().map(|c| c.as_os_str().to_owned()).collect();
    rest.reverse();
    let mut changed = false;
    while let Some(name) = rest.pop() {
        let next = cur.join(&name);
        match std::fs::read_link(&next) {
            Ok(target) if hops < 16 => {
                hops += 1;
                changed = true;
                let t = normalize(&cur, &target.to_string_lossy(), Path::new("/"));
                cur = PathBuf::from("/");
                let mut parts: Vec<std::ffi::OsString> = t
                    .components()
                    .skip(1)
                    .map(|c| c.as_os_str().to_owned())
                    .collect();
                parts.reverse();
                rest.extend(parts);
            }
            _ => cur = next,
        }
    }
    if !changed {
        return None;
    }
    cur.strip_prefix(project)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

/// Protected names that are directories when they exist.
fn is_dir_like(rel: &Path) -> bool {
    [
        ".git/hooks",
        ".vscode",
        ".idea",
        ".devcontainer",
        ".husky",
        ".cordon",
    ]
    .iter()
    .any(|d| rel == Path::new(d))
}

fn create_placeholder(path: &Path, dir: bool) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        crate::dirs::create_private_dir(parent)?;
    }
    let r = if dir {
        std::fs::create_dir(path)
    } else {
        std::fs::write(path, b"")
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(
            format!("create placeholder {}", path.display()),
            e,
        )),
    }
}

/// Walks the project (without following symlinks) and returns every
/// project-relative path to mask: what the matcher hides, every special file
/// (socket, FIFO, device) and every directory we cannot read. A hidden directory is masked as a
/// whole and not descended into. A hidden symlink masks its target when that
/// lies inside the project (a target outside is not in the view anyway).
///
/// With `unreadable_files`, regular files without any read bit are masked too
/// (one `stat` per file; needed when the project is writable, where the
/// agent could `chmod` them).
pub fn find_hidden(
    project: &Path,
    matcher: &HideMatcher,
    unreadable_files: bool,
) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = project.join(&rel);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            // We cannot see what is inside, but the agent (same uid) could
            // chmod it and look: mask the whole directory.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                if !rel.as_os_str().is_empty() {
                    out.push(rel);
                }
                continue;
            }
            Err(e) => return Err(Error::io(format!("scan {}", dir.display()), e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("scan {}", dir.display()), e))?;
            let name = entry.file_name();
            let child = rel.join(&name);
            let ft = entry
                .file_type()
                .map_err(|e| Error::io(format!("stat {}", child.display()), e))?;
            if matcher.is_hidden(&child) {
                if ft.is_symlink() {
                    if let Ok(target) = std::fs::canonicalize(project.join(&child)) {
                        if let Ok(inside) = target.strip_prefix(project) {
                            out.push(inside.to_path_buf());
                        }
                    }
                } else {
                    out.push(child);
                }
            } else if ft.is_socket() || ft.is_fifo() || ft.is_char_device() || ft.is_block_device()
            {
                // Special files are channels to something on the host: a
                // read-only mount stops neither connect() on a unix socket
                // (Landlock restricts that only from ABI 9) nor reading a FIFO
                // that a secret manager writes a `.env` into. Mask them all.
                out.push(child);
            } else if ft.is_dir() && !(rel == Path::new(".git") && name == OsStr::new("objects")) {
                stack.push(child);
            } else if unreadable_files && ft.is_file() {
                // Nobody can read it without chmod — which the agent, as the
                // owner, could do in overlay and rw modes. Mask it.
                use std::os::unix::fs::PermissionsExt;
                if entry
                    .metadata()
                    .is_ok_and(|m| m.permissions().mode() & 0o444 == 0)
                {
                    out.push(child);
                }
            }
            if out.len() > MAX_HIDDEN {
                return Err(refuse(
                    format!("more than {MAX_HIDDEN} project files match the profile's hide rules"),
                    "narrow the hide globs, or use `reveal` for test fixtures",
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_policy::{Glob, PathRule, RuleValue};

    #[test]
    fn hidden_walk_masks_matches_and_symlink_targets_inside_the_project() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::create_dir_all(p.join("credentials/x")).unwrap();
        std::fs::write(p.join("a/b/server.pem"), "k").unwrap();
        std::fs::write(p.join("a/real-secret"), "k").unwrap();
        std::fs::write(p.join("credentials/x/y"), "k").unwrap();
        std::os::unix::fs::symlink("a/real-secret", p.join(".env")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join(".env.outside")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(p.join("a/agent.sock")).unwrap();
        std::fs::write(p.join("main.rs"), "fn main(){}").unwrap();
        let rules: Vec<PathRule<Glob>> = ["*.pem", ".env*", "credentials*"]
            .iter()
            .map(|g| PathRule::new(Glob::parse(g).unwrap()))
            .collect();
        let m = HideMatcher::new(&rules, &[]);
        let canon = std::fs::canonicalize(p).unwrap();
        let found = find_hidden(&canon, &m, false).unwrap();
        assert_eq!(
            found,
            vec![
                PathBuf::from("a/agent.sock"),
                PathBuf::from("a/b/server.pem"),
                PathBuf::from("a/real-secret"),
                PathBuf::from("credentials"),
            ]
        );
    }

    /// A wide and deep project: every hidden file is found, and the cap on
    /// hidden paths holds.
    #[test]
    fn a_big_project_is_walked_without_missing_anything() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        let mut expected = Vec::new();
        for i in 0..300 {
            let d = format!("pkg{i}/src/deep{}", i % 7);
            std::fs::create_dir_all(p.join(&d)).unwrap();
            std::fs::write(p.join(&d).join("lib.rs"), "x").unwrap();
            if i % 3 == 0 {
                std::fs::write(p.join(&d).join(".env.local"), "k").unwrap();
                expected.push(PathBuf::from(format!("{d}/.env.local")));
            }
        }
        expected.sort();
        let rules = vec![PathRule::new(Glob::parse(".env*").unwrap())];
        let m = HideMatcher::new(&rules, &[]);
        let canon = std::fs::canonicalize(p).unwrap();
        assert_eq!(find_hidden(&canon, &m, false).unwrap(), expected);
        for i in 0..=MAX_HIDDEN {
            let d = p.join(format!("pkg{}", i % 300));
            std::fs::write(d.join(format!("k{i}.pem")), "k").unwrap();
        }
        let rules = vec![PathRule::new(Glob::parse("*.pem").unwrap())];
        let m = HideMatcher::new(&rules, &[]);
        let e = find_hidden(&canon, &m, false).unwrap_err().to_string();
        assert!(e.contains("more than 4096"), "{e}");
    }

    #[test]
    fn home_and_root_cannot_be_granted() {
        let home = Path::new("/home/u");
        assert!(check_grant(Path::new("/"), home, "x").is_err());
        assert!(check_grant(Path::new("/home"), home, "x").is_err());
        assert!(check_grant(Path::new("/home/u"), home, "x").is_err());
        assert!(check_grant(Path::new("/home/u/.cargo"), home, "x").is_ok());
        assert!(check_grant(Path::new("/opt/tool"), home, "x").is_ok());
    }
}
