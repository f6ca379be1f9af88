//! `cordon secret`: the embedded secrets store. Values go in through a
//! prompt that does not echo, or stdin; they never come out.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::Subcommand;
use cordon_secrets::{Protection, Secret, Store, Unlock, MAX_VALUE};
use cordon_session::Dirs;

use crate::{json, notice, out, Fail};

/// The variable a passphrase-protected store's passphrase may come from,
/// for scripts (a terminal prompt is asked otherwise).
pub const PASSPHRASE_ENV: &str = cordon_session::inspect::PASSPHRASE_ENV;

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Store a secret (replacing one of the same name).
    ///
    /// The value is asked for on the terminal without echo, or read from
    /// stdin with --from-stdin (one trailing newline is dropped). It is
    /// never printed, logged or passed to a sandbox.
    Set {
        /// Its name: letters, digits, '_', '.' and '-' (e.g. ANTHROPIC_API_KEY).
        name: String,
        /// Read the value from stdin instead of asking.
        #[arg(long)]
        from_stdin: bool,
    },
    /// List the stored secrets' names and when they were set (never values).
    #[command(alias = "ls")]
    List {
        /// One JSON array of {name, created_ms, updated_ms}.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    #[command(alias = "remove")]
    Rm {
        /// Its name.
        name: String,
    },
    /// Print the public key Vault's or OpenBao's JWT auth method must trust.
    ///
    /// With `[vault] auth = "jwt"`, cordon signs each session's login JWT
    /// with this host's key (the audit key, Ed25519; made on first use);
    /// the auth method's jwt_validation_pubkeys must hold it. Example:
    ///
    ///   bao write auth/jwt/config jwt_validation_pubkeys="$(cordon secret jwt-key)"
    #[command(verbatim_doc_comment)]
    JwtKey,
    /// Create an empty store, protected by the key file (the default) or
    /// by a passphrase.
    ///
    /// A store is also created by the first `cordon secret set`, protected
    /// by the key file unless CORDON_SECRETS_PASSPHRASE is set.
    Init {
        /// Protect it with a passphrase (asked twice, or taken from
        /// CORDON_SECRETS_PASSPHRASE; at least 8 characters), derived with
        /// Argon2id. Every later use asks for it.
        #[arg(long)]
        passphrase: bool,
    },
}

pub const HELP: &str = "\
Files:
  $XDG_STATE_HOME/cordon/secrets.store   every secret, encrypted as a whole
                                         (XChaCha20-Poly1305), 0600
  $XDG_CONFIG_HOME/cordon/secrets.key    its key (0600), unless the store
                                         is protected by a passphrase
Keep them apart in backups: either alone opens nothing. Format and
recovery: docs/secrets.md.

Environment:
  CORDON_SECRETS_PASSPHRASE   the passphrase, for scripts (otherwise asked
                              on the terminal); never passed to a sandbox";

fn store_path(dirs: &Dirs) -> PathBuf {
    cordon_session::inspect::StoreAccess::of(dirs).path
}

fn key_path(dirs: &Dirs) -> PathBuf {
    cordon_session::inspect::StoreAccess::of(dirs).key
}

fn fail(e: cordon_secrets::Error) -> Fail {
    use cordon_secrets::Error as E;
    let code = match e {
        E::Name(..) | E::Value(_) | E::Protection(_) => 2,
        _ => 1,
    };
    Fail(code, e.into())
}

/// The passphrase from the environment, or asked for on the terminal.
fn passphrase(prompt: &str, confirm: bool) -> Result<Secret, Fail> {
    if let Some(v) = std::env::var_os(PASSPHRASE_ENV) {
        use std::os::unix::ffi::OsStringExt;
        return Ok(Secret::new(v.into_vec()));
    }
    let first = ask_hidden(prompt)?.ok_or_else(|| {
        Fail(
            2,
            anyhow::anyhow!(
                "the secrets store needs its passphrase: run on a terminal, or set {PASSPHRASE_ENV}"
            ),
        )
    })?;
    if confirm {
        let again =
            ask_hidden("the same passphrase again: ")?.unwrap_or_else(|| Secret::new(Vec::new()));
        if again != first {
            return Err(Fail(2, anyhow::anyhow!("the two passphrases differ")));
        }
    }
    Ok(first)
}

/// The store, opened the way it is protected.
fn open(dirs: &Dirs) -> Result<Store, Fail> {
    let path = store_path(dirs);
    let env_pass = std::env::var_os(PASSPHRASE_ENV).is_some();
    let unlock = match Store::protection(&path).map_err(fail)? {
        Some(Protection::Passphrase) => Unlock::Passphrase(passphrase(
            &format!("passphrase for {}: ", path.display()),
            false,
        )?),
        Some(Protection::KeyFile) if env_pass => {
            return Err(Fail(
                2,
                anyhow::anyhow!(
                    "{PASSPHRASE_ENV} is set, but {} is protected by the key file {}, not a \
                     passphrase: unset it",
                    path.display(),
                    key_path(dirs).display()
                ),
            ))
        }
        Some(Protection::KeyFile) => Unlock::KeyFile(key_path(dirs)),
        None if env_pass => Unlock::Passphrase(passphrase("", false)?),
        None => Unlock::KeyFile(key_path(dirs)),
    };
    Ok(Store::new(path, unlock))
}

pub fn cmd(c: SecretCmd) -> Result<u8, Fail> {
    let dirs = Dirs::from_env()?;
    match c {
        SecretCmd::Set { name, from_stdin } => {
            let store = open(&dirs)?;
            let value = if from_stdin && !std::io::stdin().is_terminal() {
                read_stdin()?
            } else {
                ask_hidden(&format!("value of {name} (not shown): "))?.ok_or_else(|| {
                    Fail(
                        2,
                        anyhow::anyhow!(
                            "no terminal to ask for the value of {name} on: pipe it in with \
                             --from-stdin"
                        ),
                    )
                })?
            };
            let replaced = store.set(&name, value).map_err(fail)?;
            notice(&format!(
                "secret {name} {} in {}",
                if replaced { "replaced" } else { "stored" },
                store.path().display()
            ));
            Ok(0)
        }
        SecretCmd::List { json: as_json } => {
            let entries = open(&dirs)?.list().map_err(fail)?;
            if as_json {
                let v: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "name": e.name,
                            "created_ms": e.created_ms,
                            "updated_ms": e.updated_ms,
                        })
                    })
                    .collect();
                json(&v)?;
            } else if entries.is_empty() {
                notice("no secrets stored (add one with `cordon secret set NAME`)");
            } else {
                let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
                let mut text = String::new();
                for e in &entries {
                    text.push_str(&format!("{:width$}  set {}\n", e.name, utc(e.updated_ms)));
                }
                out(&text)?;
            }
            Ok(0)
        }
        SecretCmd::Rm { name } => {
            let store = open(&dirs)?;
            store.remove(&name).map_err(fail)?;
            notice(&format!("secret {name} removed"));
            Ok(0)
        }
        SecretCmd::JwtKey => {
            dirs.ensure_state()?;
            let key = cordon_session::audit::host_key(&dirs.state)?;
            out(&cordon_session::vault::public_key_pem(&key))?;
            Ok(0)
        }
        SecretCmd::Init { passphrase: with } => {
            let path = store_path(&dirs);
            let unlock = if with {
                Unlock::Passphrase(passphrase(
                    &format!("new passphrase for {}: ", path.display()),
                    true,
                )?)
            } else {
                Unlock::KeyFile(key_path(&dirs))
            };
            let store = Store::new(&path, unlock);
            store.create().map_err(fail)?;
            notice(&format!(
                "created {}, protected by {}",
                path.display(),
                if with {
                    "a passphrase".to_string()
                } else {
                    format!("the key file {}", key_path(&dirs).display())
                }
            ));
            Ok(0)
        }
    }
}

pub(crate) fn utc(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = cordon_types::civil_from_unix(ms / 1000);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// All of stdin, one trailing newline dropped.
fn read_stdin() -> Result<Secret, Fail> {
    let mut buf = Vec::with_capacity(4096);
    std::io::stdin()
        .lock()
        .take(MAX_VALUE as u64 + 2)
        .read_to_end(&mut buf)?;
    let mut value = Secret::new(buf);
    let v = value.expose();
    let cut = if v.ends_with(b"\r\n") {
        2
    } else if v.ends_with(b"\n") {
        1
    } else {
        0
    };
    if cut > 0 {
        value = Secret::new(v[..v.len() - cut].to_vec());
    }
    Ok(value)
}

/// Asks on the controlling terminal with echo off; `None` when there is no
/// terminal.
fn ask_hidden(prompt: &str) -> Result<Option<Secret>, Fail> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let Ok(mut tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return Ok(None);
    };
    let Ok(saved) = tcgetattr(&tty) else {
        return Ok(None);
    };
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    // Echo off before the prompt shows: whatever is typed (or pasted) once
    // it is visible must not appear. `Drain`, not `Flush`: input already
    // typed stays.
    tcsetattr(&tty, OptionalActions::Drain, &quiet).map_err(std::io::Error::from)?;
    if let Err(e) = tty.write_all(prompt.as_bytes()) {
        let _ = tcsetattr(&tty, OptionalActions::Drain, &saved);
        return Err(e.into());
    }
    // One line, read a byte at a time so that nothing past it is taken.
    let mut line = Vec::with_capacity(4096);
    let mut byte = [0u8; 1];
    let read = loop {
        match tty.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) if line.len() > MAX_VALUE => break Ok(()),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let restored = tcsetattr(&tty, OptionalActions::Drain, &saved);
    read?;
    restored.map_err(std::io::Error::from)?;
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(Secret::new(line)))
}
