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
    /// Print the cluster join token (one line) for `overlayd --peer <this host> --token <TOKEN>`.
    Token,
    /// Remove a node from the cluster for good (NODE_ID is the `id` of `peers --json`). Works on any
    /// member: an admitter signs the revocation, other members forward the request to one.
    Revoke { node_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Revoke { node_id } = &cli.cmd {
        let body = match overlayd::ctl::post(cli.admin, &format!("/v1/revoke/{}", node_id.trim())) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("overlayctl: {e}");
                return ExitCode::from(1);
            }
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        println!("{}: {}", node_id.trim(), v["outcome"].as_str().unwrap_or(&body));
        return ExitCode::SUCCESS;
    }
    let (kind, path, json) = match cli.cmd {
        Cmd::Fdb { json } => ("fdb", "/v1/fdb", json),
        Cmd::Stats { json } => ("stats", "/v1/stats", json),
        Cmd::Peers { json } => ("peers", "/v1/peers", json),
        Cmd::Token => ("token", "/v1/token", false),
        Cmd::Revoke { .. } => return ExitCode::from(2),
    };
    let body = match overlayd::ctl::get(cli.admin, path) {
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
