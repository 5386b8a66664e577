//! For examples that include the testbed: build `overlayd` and `overlayctl` with the running example's cargo
//! and profile, without the package variables `cargo run` sets (they would rebuild the workspace).

use std::path::PathBuf;
use std::process::Command;

/// Variables `cargo run` sets for the program it runs that describe *this* package. A nested `cargo build`
/// must not inherit them: build scripts (ring's) track e.g. `CARGO_MANIFEST_DIR` with `rerun-if-env-changed`,
/// so a value that differs from a plain `cargo build` reruns them and rebuilds ring, rustls, quinn, rcgen and
/// the workspace — on every example run, and again on the next plain build (issue 12 §8).
pub fn is_inherited_cargo_var(name: &str) -> bool {
    const PREFIXES: &[&str] = &["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_"];
    const NAMES: &[&str] = &[
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// For examples: builds `overlayd` and `overlayctl` with the same cargo and profile as the running example
/// (`$CARGO build --manifest-path … [--release]`, a no-op of about a second when nothing changed) and returns
/// the directory holding them. Progress goes to stderr, so `--json` output on stdout stays parseable.
pub fn build_binaries() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    // <target>/<profile>/examples/<name> → <target>/<profile>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| format!("unexpected executable location {}", exe.display()))?
        .to_path_buf();
    let mut cmd = Command::new(&cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_inherited_cargo_var) {
            cmd.env_remove(&name);
        }
    }
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    cmd.args(["build", "--manifest-path", manifest]);
    cmd.args(["--bin", "overlayd", "--bin", "overlayctl"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!("• building overlayd and overlayctl ({})", dir.display());
    let st = cmd.status().map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !st.success() {
        return Err(format!("`{cargo} build` failed ({st})"));
    }
    for b in ["overlayd", "overlayctl"] {
        if !dir.join(b).is_file() {
            return Err(format!("{} was not built", dir.join(b).display()));
        }
    }
    Ok(dir)
}
