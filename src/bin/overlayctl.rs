//! `overlayctl`: show a running overlayd's FDB, counters and peers.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "overlayctl", version, about = "Inspect a running overlayd")]
struct Cli {
    /// overlayd's admin endpoint.
    #[arg(long, global = true, default_value = overlayd::config::DEFAULT_ADMIN)]
    admin: SocketAddr,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// MAC → VTEP forwarding table.
    Fdb {
        #[arg(long)]
        json: bool,
    },
    /// Traffic and per-reason drop counters.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Peer VTEPs (cluster members with their state, or the static peers).
    Peers {
        #[arg(long)]
        json: bool,
    },
    /// Print the cluster join token (one line) for `overlayd --peer <any member> --token <TOKEN>`.
    /// Runs on an admitter (the --init-cluster node or an --admitter); elsewhere it names one.
    Token {
        /// Issue a new join secret: the previous token is refused from now on. Prints the new token.
        #[arg(long)]
        rotate: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (kind, method, path, json) = match cli.cmd {
        Cmd::Fdb { json } => ("fdb", "GET", "/v1/fdb", json),
        Cmd::Stats { json } => ("stats", "GET", "/v1/stats", json),
        Cmd::Peers { json } => ("peers", "GET", "/v1/peers", json),
        Cmd::Token { rotate: false } => ("token", "GET", "/v1/token", false),
        Cmd::Token { rotate: true } => ("token", "POST", "/v1/token/rotate", false),
    };
    let body = match overlayd::ctl::request(cli.admin, method, path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("overlayctl: {e}");
            return ExitCode::from(1);
        }
    };
    if kind == "token" {
        let v: Result<serde_json::Value, _> = serde_json::from_str(&body);
        return match v.as_ref().ok().and_then(|v| v["token"].as_str()) {
            Some(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("overlayctl: overlayd sent no token: {body}");
                ExitCode::from(1)
            }
        };
    }
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    match overlayd::ctl::render(kind, &body) {
        Ok(t) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("overlayctl: overlayd sent JSON this overlayctl cannot read ({e}): versions differ?");
            ExitCode::from(1)
        }
    }
}
