//! `cordon secret`: the encrypted store through the command line.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::both;
use crate::suite::harness::{cordon_bin, ok, stderr, stdout, Env};
use crate::suite::terminal::Term;

fn store(env: &Env) -> PathBuf {
    env.state.join("cordon/secrets.store")
}

fn key(env: &Env) -> PathBuf {
    env.config.join("cordon/secrets.key")
}

/// `cordon secret ARGS` with `input` on stdin.
fn secret(env: &Env, args: &[&str], input: &[u8], vars: &[(&str, &str)]) -> Output {
    let mut c = env.cordon(std::iter::once("secret").chain(args.iter().copied()));
    for (k, v) in vars {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// What the store holds under `name`, read with the library from copies
/// the test's own uid owns (the store refuses files of another user).
fn stored(env: &Env, name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &str| {
        let to = dir.path().join(to);
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        to
    };
    let s = cordon_secrets::Store::new(
        copy(&store(env), "secrets.store"),
        cordon_secrets::Unlock::KeyFile(copy(&key(env), "secrets.key")),
    );
    s.get(name).unwrap().expose().to_vec()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

both!(secrets_go_in_and_only_their_names_come_out, |env| {
    let value = "ghp_5Wq0rT8kZsV3nX1yB7uC9dE2fG4hJ6kL8mN0";
    let o = secret(
        env,
        &["set", "GITHUB_TOKEN", "--from-stdin"],
        format!("{value}\n").as_bytes(),
        &[],
    );
    ok(&o);
    assert!(stderr(&o).contains("GITHUB_TOKEN stored"), "{}", stderr(&o));
    ok(&secret(
        env,
        &["set", "anthropic.key", "--from-stdin"],
        b"sk-ant-api03-xyz",
        &[],
    ));
    // One trailing newline is dropped, nothing else.
    assert_eq!(stored(env, "GITHUB_TOKEN"), value.as_bytes());
    assert_eq!(stored(env, "anthropic.key"), b"sk-ant-api03-xyz");
    assert_eq!(mode(&store(env)), 0o600);
    assert_eq!(mode(&key(env)), 0o600);
    let raw = std::fs::read(store(env)).unwrap();
    assert!(!raw.windows(value.len()).any(|w| w == value.as_bytes()));
    // Names and times, never values, in either form.
    let o = env.cordon(["secret", "list"]).output().unwrap();
    let text = ok(&o);
    assert!(
        text.contains("GITHUB_TOKEN") && text.contains("anthropic.key"),
        "{text}"
    );
    assert!(!text.contains("ghp_") && !text.contains("sk-ant"), "{text}");
    let o = env.cordon(["secret", "list", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["name"], "GITHUB_TOKEN");
    assert!(!stdout(&o).contains("ghp_"));
    // Replace, remove, and the errors.
    let o = secret(
        env,
        &["set", "GITHUB_TOKEN", "--from-stdin"],
        b"ghp_new",
        &[],
    );
    assert!(stderr(&o).contains("replaced"), "{}", stderr(&o));
    assert_eq!(stored(env, "GITHUB_TOKEN"), b"ghp_new");
    ok(&env
        .cordon(["secret", "rm", "GITHUB_TOKEN"])
        .output()
        .unwrap());
    let o = env
        .cordon(["secret", "rm", "GITHUB_TOKEN"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no secret named"), "{}", stderr(&o));
    let o = secret(env, &["set", "bad name", "--from-stdin"], b"v", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("only letters"), "{}", stderr(&o));
    let o = secret(env, &["set", "EMPTY", "--from-stdin"], b"\n", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
    // No terminal to ask on, and no --from-stdin: refused, nothing waits.
    let o = env.cordon(["secret", "set", "X"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--from-stdin"), "{}", stderr(&o));
});

both!(the_prompt_does_not_echo_the_value, |env| {
    let mut t = Term::open(24, 80);
    let stdio = || Stdio::from(t.slave.try_clone().unwrap());
    let mut child = env
        .command("setsid", ["-c", cordon_bin(), "secret", "set", "TYPED"])
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .unwrap();
    t.expect("value of TYPED (not shown): ");
    t.send("typed-secret-4711\n");
    let shown = t.until("TYPED stored");
    assert!(!shown.contains("4711"), "{shown}");
    let st = child.wait().unwrap();
    assert!(st.success());
    assert_eq!(stored(env, "TYPED"), b"typed-secret-4711");
    // The terminal echoes again afterwards.
    let modes = rustix::termios::tcgetattr(&t.slave).unwrap();
    assert!(modes
        .local_modes
        .contains(rustix::termios::LocalModes::ECHO));
});

both!(a_passphrase_store_needs_its_passphrase, |env| {
    let pass = [("CORDON_SECRETS_PASSPHRASE", "a long passphrase")];
    let o = secret(env, &["init", "--passphrase"], b"", &pass);
    ok(&o);
    assert!(
        stderr(&o).contains("protected by a passphrase"),
        "{}",
        stderr(&o)
    );
    assert!(!key(env).exists(), "no key file for a passphrase store");
    ok(&secret(
        env,
        &["set", "T", "--from-stdin"],
        b"tok-123",
        &pass,
    ));
    let o = secret(env, &["list"], b"", &pass);
    assert!(ok(&o).contains('T'));
    // Without it, and no terminal: told how to give it.
    let o = env.cordon(["secret", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("CORDON_SECRETS_PASSPHRASE"),
        "{}",
        stderr(&o)
    );
    let o = secret(
        env,
        &["list"],
        b"",
        &[("CORDON_SECRETS_PASSPHRASE", "not the one")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    // A second init is refused; a short passphrase is refused.
    let o = secret(env, &["init", "--passphrase"], b"", &pass);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    std::fs::remove_file(store(env)).unwrap();
    let o = secret(
        env,
        &["init", "--passphrase"],
        b"",
        &[("CORDON_SECRETS_PASSPHRASE", "short")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("at least 8"), "{}", stderr(&o));
    assert!(!store(env).exists());
});

both!(a_damaged_store_is_reported_and_left_as_it_is, |env| {
    ok(&secret(env, &["set", "A", "--from-stdin"], b"value-a", &[]));
    let mut raw = std::fs::read(store(env)).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    std::fs::write(store(env), &raw).unwrap();
    let o = env.cordon(["secret", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is corrupt"), "{}", stderr(&o));
    let o = secret(env, &["set", "B", "--from-stdin"], b"value-b", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(store(env)).unwrap(), raw, "written over");
    // Readable by others: refused until it is private again.
    raw[last] ^= 1;
    std::fs::write(store(env), &raw).unwrap();
    std::fs::set_permissions(store(env), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = env.cordon(["secret", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    std::fs::set_permissions(store(env), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(ok(&env.cordon(["secret", "list"]).output().unwrap()).contains('A'));
});

both!(a_write_cut_short_by_a_crash_loses_nothing, |env| {
    ok(&secret(
        env,
        &["set", "KEEP", "--from-stdin"],
        b"keep-me",
        &[],
    ));
    let before = std::fs::read(store(env)).unwrap();
    // A file-size limit of 64 KiB: writing a 512 KiB secret kills cordon
    // with SIGXFSZ in the middle of writing the new store.
    let big = std::fs::File::create(env.home.join("big")).unwrap();
    big.set_len(512 * 1024).unwrap();
    env.own(&env.home.join("big"));
    let o = env
        .command(
            "sh",
            [
                "-c",
                &format!(
                    "ulimit -f 64; exec {} secret set BIG --from-stdin < {}",
                    cordon_bin(),
                    env.home.join("big").display()
                ),
            ],
        )
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(store(env)).unwrap(), before);
    let dir = store(env).parent().unwrap().to_path_buf();
    let leftovers = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count()
    };
    assert_eq!(leftovers(), 1, "the crashed write's temporary file");
    assert!(ok(&env.cordon(["secret", "list"]).output().unwrap()).contains("KEEP"));
    // The next write clears it.
    ok(&secret(env, &["set", "NEXT", "--from-stdin"], b"next", &[]));
    assert_eq!(leftovers(), 0);
    assert_eq!(stored(env, "KEEP"), b"keep-me");
});
