//! `cordon trust`: pin agents' executables (docs/governance.md).

use clap::Subcommand;
use cordon_session::{trust, Dirs, Error};

use crate::{json, out, Fail};

#[derive(Debug, Subcommand)]
pub enum TrustCmd {
    /// Record the current digest of an agent: the executable CMD resolves
    /// to in PATH (for a script, also its interpreter, and the package.json
    /// of an npm-installed agent). Later runs of CMD whose files differ are
    /// refused until it is pinned again.
    Pin {
        /// The command (`claude`, `codex`, `/opt/agent/bin/agent`).
        command: String,
        /// The profile the agent runs with: its `[env] set` PATH is where
        /// the command is looked up, as `cordon run` will.
        #[arg(long, short = 'p', default_value = "default")]
        profile: String,
    },
    /// List the pins.
    List {
        /// Machine-readable list.
        #[arg(long)]
        json: bool,
    },
    /// Remove a command's pin.
    Rm {
        /// The command, as pinned.
        command: String,
    },
}

pub fn cmd(c: TrustCmd) -> Result<u8, Fail> {
    let dirs = Dirs::from_env()?;
    match c {
        TrustCmd::Pin { command, profile } => {
            dirs.ensure_state()?;
            let cwd = std::env::current_dir()?;
            let profile = cordon_session::profiles::load(&profile, &dirs)?;
            let id = trust::identify(
                std::ffi::OsStr::new(&command),
                trust::agent_path(&profile, &dirs.home).as_deref(),
                &cwd,
                Some(&dirs.state),
            )?;
            let mut s = format!(
                "pinned {command}: {} sha256 {}\n",
                id.exe.path.display(),
                id.exe.sha256
            );
            for (what, d) in [("interpreter", &id.interpreter), ("package", &id.package)] {
                if let Some(d) = d {
                    s.push_str(&format!(
                        "  {what} {} sha256 {}\n",
                        d.path.display(),
                        d.sha256
                    ));
                }
            }
            trust::pin(&dirs.config, id)?;
            s.push_str(&format!(
                "recorded in {}\n",
                dirs.config.join(trust::PINS).display()
            ));
            out(&s)?;
        }
        TrustCmd::List { json: as_json } => {
            let pins = trust::pins(&dirs.config)?;
            if as_json {
                json(&pins)?;
            } else if pins.is_empty() {
                out("no pinned agents (`cordon trust pin CMD` pins one)\n")?;
            } else {
                let mut s = String::new();
                for p in &pins {
                    s.push_str(&format!(
                        "{:<16} {} {}\n",
                        p.identity.command,
                        p.identity.exe.sha256,
                        p.identity.exe.path.display()
                    ));
                }
                out(&s)?;
            }
        }
        TrustCmd::Rm { command } => {
            if !trust::unpin(&dirs.config, &command)? {
                return Err(Error::NotFound(format!("{command} is not pinned")).into());
            }
            out(&format!("{command} is no longer pinned\n"))?;
        }
    }
    Ok(0)
}
