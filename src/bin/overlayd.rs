//! `overlayd`: parse the configuration and run the daemon. Exit 2 on usage errors, 1 on runtime failures.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = overlayd::config::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("overlayd: {e}");
            return ExitCode::from(2);
        }
    };
    match overlayd::daemon::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlayd: {e}");
            ExitCode::from(1)
        }
    }
}
