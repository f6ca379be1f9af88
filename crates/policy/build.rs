//! Converts the built-in profiles (`profiles/*.toml`) to JSON at build time:
//! `cordon run` then deserializes them with serde_json, several times faster
//! than parsing TOML at every start. The TOML files stay the source of truth
//! (and what `cordon profile show` prints); a test checks both forms resolve
//! to the same profile.

use std::path::Path;

fn main() {
    // Read when the script runs, not baked in when it was compiled: a
    // build script compiled for another checkout sharing the target
    // directory would read that checkout's profiles.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
    let dir = Path::new(&manifest).join("../../profiles");
    println!("cargo:rerun-if-changed={}", dir.display());
    let out = Path::new(&std::env::var_os("OUT_DIR").unwrap_or_default()).join("builtin");
    if let Err(e) = convert(&dir, &out) {
        eprintln!("cordon-policy build: {e}");
        std::process::exit(1);
    }
}

fn convert(dir: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let value: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let json = serde_json::to_string(&value).map_err(|e| e.to_string())?;
        let name = path.with_extension("json");
        let dest = out.join(name.file_name().unwrap_or_default());
        std::fs::write(&dest, json).map_err(|e| format!("write {}: {e}", dest.display()))?;
    }
    Ok(())
}
