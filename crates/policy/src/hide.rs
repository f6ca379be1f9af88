//! Which project files are hidden from the agent.
//!
//! Patterns follow the familiar `.gitignore` shape: a pattern without `/`
//! matches a file or directory name at any depth (`*.pem`, `.env*`); a pattern
//! with `/` matches the path from the project root (`config/prod/*.json`);
//! `**` crosses directories. `reveal` patterns win over `hide`.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::values::{Glob, PathRule};

/// Compiled hide/reveal rules.
#[derive(Debug, Clone)]
pub struct HideMatcher {
    hide_name: GlobSet,
    hide_path: GlobSet,
    reveal_name: GlobSet,
    reveal_path: GlobSet,
    empty: bool,
}

fn build(rules: &[PathRule<Glob>]) -> (GlobSet, GlobSet) {
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    for r in rules {
        let pat = r.value.0.trim_start_matches('/');
        let anchored = r.value.0.contains('/');
        // Patterns were validated when the profile was read.
        if let Ok(g) = GlobBuilder::new(pat).literal_separator(true).build() {
            if anchored {
                paths.add(g);
            } else {
                names.add(g);
            }
        }
    }
    (
        names.build().unwrap_or_else(|_| GlobSet::empty()),
        paths.build().unwrap_or_else(|_| GlobSet::empty()),
    )
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
            empty: hide.is_empty(),
        }
    }

    /// True when no hide rule exists (nothing to scan for).
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Whether the project-relative `path` is hidden.
    pub fn is_hidden(&self, path: &Path) -> bool {
        let name = path.file_name().map(Path::new).unwrap_or(path);
        let hidden = self.hide_name.is_match(name) || self.hide_path.is_match(path);
        hidden && !(self.reveal_name.is_match(name) || self.reveal_path.is_match(path))
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
