//! Which project files are hidden from the agent.
//!
//! Patterns follow the familiar `.gitignore` shape: a pattern without `/`
//! matches a file or directory name at any depth (`*.pem`, `.env*`); a pattern
//! with `/` matches the path from the project root (`config/prod/*.json`);
//! `**` crosses directories. `reveal` patterns win over `hide`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::glob::Pattern;
use crate::values::{Glob, PathRule};

/// Compiled hide/reveal rules.
#[derive(Debug, Clone)]
pub struct HideMatcher {
    hide_name: Vec<Pattern>,
    hide_path: Vec<Pattern>,
    reveal_name: Vec<Pattern>,
    reveal_path: Vec<Pattern>,
}

fn build(rules: &[PathRule<Glob>]) -> (Vec<Pattern>, Vec<Pattern>) {
    let mut names = Vec::new();
    let mut paths = Vec::new();
    for r in rules {
        // Patterns were validated when the profile was read.
        if let Ok(p) = Pattern::new(r.value.0.trim_start_matches('/')) {
            if r.value.0.contains('/') {
                paths.push(p);
            } else {
                names.push(p);
            }
        }
    }
    (names, paths)
}

fn any(set: &[Pattern], text: &[u8]) -> bool {
    set.iter().any(|p| p.is_match(text))
}

impl HideMatcher {
    /// Compiles the rules.
    pub fn new(hide: &[PathRule<Glob>], reveal: &[PathRule<Glob>]) -> HideMatcher {
        let (hide_name, hide_path) = build(hide);
        let (reveal_name, reveal_path) = build(reveal);
        HideMatcher {
            hide_name,
            hide_path,
            reveal_name,
            reveal_path,
        }
    }

    /// True when no hide rule exists.
    pub fn is_empty(&self) -> bool {
        self.hide_name.is_empty() && self.hide_path.is_empty()
    }

    /// Whether the project-relative `path` is hidden.
    pub fn is_hidden(&self, path: &Path) -> bool {
        let full = path.as_os_str().as_bytes();
        let name = path.file_name().map_or(full, |n| n.as_bytes());
        let hidden = any(&self.hide_name, name) || any(&self.hide_path, full);
        hidden && !(any(&self.reveal_name, name) || any(&self.reveal_path, full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::RuleValue;

    fn rules(pats: &[&str]) -> Vec<PathRule<Glob>> {
        pats.iter()
            .map(|p| PathRule::new(Glob::parse(p).unwrap()))
            .collect()
    }

    #[test]
    fn name_patterns_match_at_any_depth_and_path_patterns_are_anchored() {
        let m = HideMatcher::new(&rules(&["*.pem", "secrets/*.json"]), &[]);
        assert!(m.is_hidden(Path::new("a/b/c/server.pem")));
        assert!(m.is_hidden(Path::new("secrets/prod.json")));
        assert!(!m.is_hidden(Path::new("other/secrets/prod.json")));
        assert!(!m.is_hidden(Path::new("secrets/sub/prod.json")));
        assert!(!m.is_hidden(Path::new("pem.rs")));
    }

    #[test]
    fn reveal_wins() {
        let m = HideMatcher::new(&rules(&["*.key"]), &rules(&["tests/fixtures/*.key"]));
        assert!(m.is_hidden(Path::new("prod.key")));
        assert!(!m.is_hidden(Path::new("tests/fixtures/dummy.key")));
    }
}
