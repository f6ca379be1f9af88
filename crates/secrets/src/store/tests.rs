use super::*;

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec())
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: PathBuf,
    key: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state/secrets.store");
    let key = dir.path().join("config/secrets.key");
    Fixture {
        _dir: dir,
        store,
        key,
    }
}

impl Fixture {
    fn keyed(&self) -> Store {
        Store::new(&self.store, Unlock::KeyFile(self.key.clone()))
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn set_get_list_and_remove_with_a_key_file() {
    let f = fixture();
    let s = f.keyed();
    assert!(s.list().unwrap().is_empty());
    assert!(!f.store.exists(), "reading must not create the store");
    assert!(!f.key.exists(), "reading must not create a key");
    assert!(!s.set("GITHUB_TOKEN", secret("ghp_first-value")).unwrap());
    assert!(!s.set("anthropic", secret("sk-ant-second")).unwrap());
    assert_eq!(mode(&f.store), 0o600);
    assert_eq!(mode(&f.key), 0o600);
    assert_eq!(mode(f.store.parent().unwrap()), 0o700);
    assert_eq!(s.get("GITHUB_TOKEN").unwrap().expose(), b"ghp_first-value");
    let names: Vec<String> = s.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["GITHUB_TOKEN", "anthropic"]);
    // Nothing readable on disk.
    let raw = fs::read(&f.store).unwrap();
    for needle in [&b"ghp_first-value"[..], b"sk-ant-second", b"GITHUB_TOKEN"] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle));
    }
    // Replacing keeps the creation time.
    let before = s.list().unwrap()[0].clone();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(s.set("GITHUB_TOKEN", secret("ghp_second-value")).unwrap());
    let after = s.list().unwrap()[0].clone();
    assert_eq!(after.created_ms, before.created_ms);
    assert!(after.updated_ms > before.updated_ms);
    assert_eq!(s.get("GITHUB_TOKEN").unwrap().expose(), b"ghp_second-value");
    s.remove("GITHUB_TOKEN").unwrap();
    assert!(matches!(s.get("GITHUB_TOKEN"), Err(Error::NotFound(_))));
    assert!(matches!(s.remove("GITHUB_TOKEN"), Err(Error::NotFound(_))));
    assert_eq!(s.get("anthropic").unwrap().expose(), b"sk-ant-second");
    // Each write is under a fresh nonce: the same contents encrypt anew.
    let a = fs::read(&f.store).unwrap();
    s.set("anthropic", secret("sk-ant-second")).unwrap();
    assert_ne!(a[60..84], fs::read(&f.store).unwrap()[60..84]);
}

#[test]
fn another_key_or_no_key_is_told_apart_from_damage() {
    let f = fixture();
    f.keyed().set("a", secret("value-a")).unwrap();
    let other = f.key.with_file_name("other.key");
    fs::write(&other, format!("{}\n", "ab".repeat(32))).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
    let e = Store::new(&f.store, Unlock::KeyFile(other))
        .get("a")
        .unwrap_err();
    assert!(matches!(e, Error::WrongKey(_)), "{e}");
    assert!(e.to_string().contains("another key"), "{e}");
    fs::remove_file(&f.key).unwrap();
    let e = f.keyed().list().unwrap_err();
    assert!(matches!(e, Error::KeyFile(..)), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");
    // A write does not make a new key for an existing store either.
    assert!(f.keyed().set("b", secret("value-b")).is_err());
    assert!(!f.key.exists());
}

#[test]
fn every_damaged_byte_is_detected_and_nothing_is_written_over_it() {
    let f = fixture();
    let s = f.keyed();
    s.set("one", secret("value-one")).unwrap();
    s.set("two", secret("value-two")).unwrap();
    let good = fs::read(&f.store).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        fs::write(&f.store, &bad).unwrap();
        let e = s.list().unwrap_err();
        // The key id is compared first: damage there reads as another key.
        if (16..32).contains(&i) {
            assert!(matches!(e, Error::WrongKey(_)), "byte {i}: {e}");
        } else {
            assert!(matches!(e, Error::Corrupt(..)), "byte {i}: {e}");
        }
        assert!(s.set("three", secret("value-three")).is_err());
        assert_eq!(fs::read(&f.store).unwrap(), bad, "byte {i}: written over");
    }
    for len in [0, 10, HEADER, HEADER + TAG - 1, good.len() - 1] {
        fs::write(&f.store, &good[..len]).unwrap();
        let e = s.list().unwrap_err();
        assert!(matches!(e, Error::Corrupt(..)), "cut at {len}: {e}");
    }
    let mut longer = good.clone();
    longer.push(0);
    fs::write(&f.store, &longer).unwrap();
    assert!(matches!(s.list(), Err(Error::Corrupt(..))));
    fs::write(&f.store, &good).unwrap();
    assert_eq!(s.list().unwrap().len(), 2);
}

#[test]
fn a_passphrase_store_opens_only_with_its_passphrase() {
    let f = fixture();
    let pass = Store::new(&f.store, Unlock::Passphrase(secret("correct horse")));
    assert!(matches!(
        Store::new(&f.store, Unlock::Passphrase(secret("short"))).set("a", secret("x")),
        Err(Error::Protection(_))
    ));
    pass.create().unwrap();
    assert!(matches!(pass.create(), Err(Error::Protection(_))));
    assert_eq!(
        Store::protection(&f.store).unwrap(),
        Some(Protection::Passphrase)
    );
    pass.set("token", secret("t0ken-value")).unwrap();
    assert_eq!(pass.get("token").unwrap().expose(), b"t0ken-value");
    let e = Store::new(&f.store, Unlock::Passphrase(secret("wrong horse")))
        .get("token")
        .unwrap_err();
    assert!(matches!(e, Error::WrongKey(_)), "{e}");
    let e = f.keyed().get("token").unwrap_err();
    assert!(matches!(e, Error::Protection(_)), "{e}");
    assert!(!f.key.exists());
    // And the other way round.
    let g = fixture();
    g.keyed().set("a", secret("value-a")).unwrap();
    assert_eq!(
        Store::protection(&g.store).unwrap(),
        Some(Protection::KeyFile)
    );
    let e = Store::new(&g.store, Unlock::Passphrase(secret("correct horse")))
        .list()
        .unwrap_err();
    assert!(matches!(e, Error::Protection(_)), "{e}");
    assert_eq!(
        Store::protection(&g.store.with_file_name("none")).unwrap(),
        None
    );
}

#[test]
fn a_crashed_writers_temporary_file_is_cleared_and_the_store_kept() {
    let f = fixture();
    let s = f.keyed();
    s.set("a", secret("value-a")).unwrap();
    let stale = f
        .store
        .with_file_name(".secrets.store.0011223344556677.tmp");
    fs::write(&stale, b"half a store").unwrap();
    assert_eq!(s.list().unwrap().len(), 1);
    s.set("b", secret("value-b")).unwrap();
    assert!(!stale.exists());
    assert_eq!(s.list().unwrap().len(), 2);
}

#[test]
fn unsafe_files_are_refused() {
    let f = fixture();
    let s = f.keyed();
    s.set("a", secret("value-a")).unwrap();
    fs::set_permissions(&f.store, fs::Permissions::from_mode(0o644)).unwrap();
    let e = s.list().unwrap_err();
    assert!(matches!(e, Error::Unsafe(..)), "{e}");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    fs::set_permissions(&f.store, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&f.key, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(s.list(), Err(Error::Unsafe(..))));
    fs::set_permissions(&f.key, fs::Permissions::from_mode(0o600)).unwrap();
    let link = f.store.with_file_name("link.store");
    std::os::unix::fs::symlink(&f.store, &link).unwrap();
    let e = Store::new(&link, Unlock::KeyFile(f.key.clone()))
        .list()
        .unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    fs::write(&f.key, "not hex\n").unwrap();
    assert!(matches!(s.list(), Err(Error::KeyFile(..))));
}

#[test]
fn names_and_values_are_checked() {
    let f = fixture();
    let s = f.keyed();
    let long = "x".repeat(129);
    for bad in ["", "-x", ".x", "a b", "a/b", "ä", long.as_str()] {
        assert!(
            matches!(s.set(bad, secret("v")), Err(Error::Name(..))),
            "{bad:?}"
        );
    }
    let longest = "x".repeat(128);
    for good in [
        "A",
        "_x",
        "ANTHROPIC_API_KEY",
        "github.token",
        "a-b",
        longest.as_str(),
    ] {
        s.set(good, secret("v")).unwrap();
    }
    assert!(matches!(s.set("e", secret("")), Err(Error::Value(_))));
    let e = s
        .set("big", Secret::new(vec![7u8; MAX_VALUE + 1]))
        .unwrap_err();
    assert!(matches!(e, Error::Value(_)), "{e}");
    s.set("max", Secret::new(vec![0u8; MAX_VALUE])).unwrap();
    assert_eq!(s.get("max").unwrap().len(), MAX_VALUE);
}

#[test]
fn concurrent_writers_lose_nothing() {
    let f = fixture();
    f.keyed().set("first", secret("v")).unwrap();
    std::thread::scope(|scope| {
        for t in 0..6 {
            let s = f.keyed();
            scope.spawn(move || {
                for i in 0..10 {
                    s.set(&format!("t{t}-{i}"), secret("value")).unwrap();
                }
            });
        }
    });
    assert_eq!(f.keyed().list().unwrap().len(), 61);
}

#[test]
fn a_secret_never_prints_its_value() {
    let s = secret("sk-live-1234567890");
    let shown = format!("{s:?}");
    assert!(!shown.contains("1234"), "{shown}");
    assert!(shown.contains("18 bytes"), "{shown}");
}
