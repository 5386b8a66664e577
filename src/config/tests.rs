//! Unit tests of `config.rs`: the shared helpers here; the config file (merging, unknown keys and bad values,
//! `--print-config` round trip, the shipped `dist/overlayd.toml`) in `tests/file.rs`; defaults, errors and
//! each option's flag and key in `tests/validate.rs`.

use super::*;
use clap::CommandFactory;
use clap::Parser;
use std::path::Path;

const STATE: &str = "/nonexistent/overlayd-test";

fn args(a: &[&str]) -> Args {
    let mut v = vec!["overlayd", "--state-dir", STATE];
    v.extend_from_slice(a);
    Args::try_parse_from(v).expect("clap accepts")
}

fn parse(a: &[&str]) -> Result<Config, ConfigError> {
    args(a).resolve()
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "overlayd-cfg-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn round_trip(a: &[&str]) {
    let original = parse(a).unwrap_or_else(|e| panic!("{a:?}: {e}"));
    let printed = original.to_toml().unwrap();
    let d = Scratch::new("rt");
    let p = d.write("printed.toml", &printed);
    // Read back with nothing else on the command line (not even --state-dir: it is in the file).
    let back = Args::try_parse_from(["overlayd", "--config", p.to_str().unwrap()])
        .unwrap()
        .resolve()
        .unwrap_or_else(|e| panic!("{a:?}: printed config does not load: {e}\n{printed}"));
    assert_eq!(back, original, "{a:?} printed as:\n{printed}");
    // And printing it again gives the same text.
    assert_eq!(back.to_toml().unwrap(), printed);
}

mod file;
mod validate;
