//! `overlayd`: parse the configuration and run the daemon. Exit 2 on usage errors, 1 on runtime failures.

use clap::Parser;
use overlayd::config::LogFormat;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = overlayd::config::Args::parse();
    let cfg = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("overlayd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        return match cfg.to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("overlayd: {e}");
                ExitCode::from(1)
            }
        };
    }
    overlayd::logging::init(cfg.log_format);
    let json = cfg.log_format == LogFormat::Json;
    match overlayd::daemon::run(cfg, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // In JSON mode stderr stays one JSON object per line.
            if json {
                tracing::error!("{e}");
            } else {
                eprintln!("overlayd: {e}");
            }
            ExitCode::from(1)
        }
    }
}
