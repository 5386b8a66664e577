//! Log output on stderr: human-readable text or one JSON object per line (`--log-format`). ANSI colours only
//! when stderr is a terminal (and `NO_COLOR` is unset), so files and journald never see escape codes. The
//! filter is `RUST_LOG` (default `info`). Logs are for state changes; the data path counts instead.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Whether text logs may carry ANSI colour codes: only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>).
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.map_or(true, |v| v.is_empty())
}

/// Install the global subscriber. Call once, after the configuration is known.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    match format {
        LogFormat::Text => fmt.with_ansi(colour).init(),
        LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
