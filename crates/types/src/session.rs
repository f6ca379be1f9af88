use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A parse error for the small string types in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is not a session id.
    #[error("invalid session id {0:?}: expected YYYYMMDD-HHMMSS-xxxxxx (lowercase hex suffix)")]
    SessionId(String),
    /// The text is not a project mode.
    #[error("invalid project mode {0:?}: expected one of ro, overlay, rw")]
    ProjectMode(String),
}

/// Identifies one sandbox session: UTC start time plus 24 random bits, e.g.
/// `20261125-093012-a1b2c3`. Sorts by start time; unique per host in practice
/// (collisions are detected when the session directory is created).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// Builds an id from a UTC timestamp (seconds since the epoch) and random bits.
    pub fn new(unix_seconds: u64, random: u32) -> Self {
        let (y, mo, d, h, mi, s) = civil_from_unix(unix_seconds);
        SessionId(format!(
            "{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{:06x}",
            random & 0x00ff_ffff
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SessionId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = b.len() == 22
            && b[8] == b'-'
            && b[15] == b'-'
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[16..]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        if ok {
            Ok(SessionId(s.to_owned()))
        } else {
            Err(ParseError::SessionId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SessionId {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

/// Converts seconds since the Unix epoch to a UTC civil date and time
/// (Howard Hinnant's days-from-civil algorithm, inverted).
pub fn civil_from_unix(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

/// How the project directory appears inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProjectMode {
    /// Read-only bind of the real project.
    #[default]
    Ro,
    /// Copy-on-write overlay; writes land in the session directory and are
    /// reviewed with `cordon diff` and written back with `cordon apply`.
    Overlay,
    /// Direct read-write bind of the real project.
    Rw,
}

impl ProjectMode {
    /// The mode's name as used in profiles and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectMode::Ro => "ro",
            ProjectMode::Overlay => "overlay",
            ProjectMode::Rw => "rw",
        }
    }
}

impl fmt::Display for ProjectMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProjectMode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ro" => Ok(ProjectMode::Ro),
            "overlay" => Ok(ProjectMode::Overlay),
            "rw" => Ok(ProjectMode::Rw),
            _ => Err(ParseError::ProjectMode(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_formats_utc_time_and_round_trips() {
        // 2026-11-25T09:30:12Z
        let id = SessionId::new(1_795_599_012, 0xa1b2c3);
        assert_eq!(id.as_str(), "20261125-093012-a1b2c3");
        assert_eq!(id.as_str().parse::<SessionId>(), Ok(id.clone()));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), id);
    }

    #[test]
    fn civil_dates_cover_leap_years_and_epoch() {
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_from_unix(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil_from_unix(4_107_542_399), (2100, 2, 28, 23, 59, 59));
    }

    #[test]
    fn session_id_rejects_malformed_text() {
        for bad in [
            "",
            "20261125-093012-A1B2C3",
            "20261125_093012-a1b2c3",
            "../../etc/passwd",
            "20261125-093012-a1b2c3x",
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn project_mode_parses_only_known_names() {
        assert_eq!("overlay".parse(), Ok(ProjectMode::Overlay));
        assert!("RO".parse::<ProjectMode>().is_err());
    }
}
