//! `overlayctl`: show a running overlayd's FDB, counters and peers; print the join token (admin socket only).
//! Exit 0 on success, 1 when overlayd cannot be reached or refuses, 2 on usage errors (such as a command that
//! needs `--admin-socket` run without it).

use clap::{Parser, Subcommand};
use overlayd::admin::Method;
use overlayd::ctl::{self, CtlError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "overlayctl", version, about = "Inspect and manage a running overlayd")]
struct Cli {
    /// overlayd's read-only TCP admin address (fdb, stats, peers).
    #[arg(long, global = true, default_value = overlayd::config::DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// Use overlayd's root-only admin socket instead of the TCP address. Needed for `token` and every
    /// command that changes state [overlayd's default: /run/overlayd/admin.sock].
    #[arg(long, global = true, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// MAC → VTEP forwarding table.
    Fdb {
        /// Only this network (name or VNI).
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        json: bool,
        /// Print the table, then every change as it happens (add/update/remove, with the time of the change)
        /// until interrupted; with --json, one JSON object per line.
        #[arg(long)]
        watch: bool,
    },
    /// Traffic and per-reason drop counters.
    Stats {
        /// Only this network (name or VNI).
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Peer VTEPs (cluster members with their state, or the static peers).
    Peers {
        /// Only this network (name or VNI).
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The networks this overlayd serves.
    Network {
        #[command(subcommand)]
        cmd: NetworkCmd,
    },
    /// Prometheus metrics, as served on GET /metrics.
    Metrics,
    /// Where a frame to this destination would go: network, FDB entry, VTEP, origin, path MTU, or flooding.
    Trace {
        /// Destination MAC (02:00:00:00:00:01) or IP (resolved through the bridge's neighbour table).
        dst: String,
        /// Network name or VNI [default: the daemon's network].
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check the host plumbing, MTUs, every peer's VXLAN port (probe), path MTU, clocks and liveness. Exits 1
    /// if any check fails.
    Diag {
        #[arg(long)]
        json: bool,
    },
    /// Print the cluster join token (one line); needs --admin-socket (root). Save it to a file (chmod 600)
    /// for `overlayd --peer <any member> --token-file <FILE>`. Runs on an admitter (the --init-cluster node
    /// or an --admitter); elsewhere it names one.
    Token {
        /// Issue a new join secret: the previous token is refused from now on. Prints the new token.
        #[arg(long)]
        rotate: bool,
    },
    /// Remove a node from the cluster for good (NODE_ID is the `id` of `peers --json`); needs --admin-socket
    /// (root). Works on any member: an admitter signs the revocation, other members forward the request.
    Revoke { node_id: String },
    /// Wire a network namespace into a network: veth pair, MTU, address (from this host's block without
    /// --ip; static mode needs --ip), default route via the gateway (egress networks), bridge port. Needs
    /// --admin-socket (root).
    Attach {
        /// `ip netns` name, PID (e.g. `docker inspect -f '{{.State.Pid}}'`) or path of an nsfs file.
        #[arg(long, value_name = "NAME|PID|PATH")]
        netns: String,
        #[arg(long)]
        network: String,
        /// Address with the subnet's prefix, e.g. 10.20.0.5/16.
        #[arg(long, value_name = "CIDR")]
        ip: Option<String>,
        /// MAC of the interface in the namespace [default: random, locally administered].
        #[arg(long)]
        mac: Option<String>,
        /// Interface name inside the namespace.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        #[arg(long)]
        json: bool,
    },
    /// Undo `attach` (veth, address, route, bridge port; the address is released). Succeeds when nothing is
    /// attached. Needs --admin-socket (root).
    Detach {
        #[arg(long, value_name = "NAME|PID|PATH")]
        netns: String,
        #[arg(long)]
        network: String,
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
    /// The namespaces attached by this overlayd. Needs --admin-socket (root).
    Attachments {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum NetworkCmd {
    /// Name, VNI, subnet, MTU, bridge, TAP, egress, gateway and this host's address blocks of each network.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Define a network on every member (cluster mode; needs --admin-socket). Every member creates its bridge
    /// ovbr<VNI> and TAP ovl<VNI> within seconds; prints the network as `ls --json` does.
    Create {
        name: String,
        #[arg(long)]
        vni: u32,
        /// The network's address range, e.g. 10.30.0.0/16 (split into per-host blocks).
        #[arg(long)]
        subnet: String,
        /// Inner MTU [default: the underlay's minus the VXLAN overhead].
        #[arg(long)]
        mtu: Option<u32>,
        /// Give the network a gateway on every host and masquerade its traffic leaving the overlay.
        #[arg(long)]
        egress: bool,
        /// IPAM block size per host [default: 26 for IPv4, 122 for IPv6].
        #[arg(long)]
        block_prefix: Option<u8>,
    },
    /// Remove a network from every member (cluster mode; needs --admin-socket). Refused while namespaces
    /// are attached to it, unless --force (which detaches them).
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

/// `?network=NAME` for a filter.
fn network_query(network: Option<String>) -> String {
    network.map_or_else(String::new, |n| format!("?network={n}"))
}

/// `fdb --watch`: the stream of `/v1/fdb/watch`, as JSON lines or for a person, until overlayd closes it.
fn fdb_watch(admin: SocketAddr, socket: Option<PathBuf>, network: Option<String>, json: bool) -> ExitCode {
    let path = "/v1/fdb/watch";
    let target = match ctl::target_for("fdb --watch", Method::Get, path, admin, socket) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let mut out = std::io::stdout();
    let r = ctl::stream(&target, &format!("{path}{}", network_query(network)), |line| {
        use std::io::Write;
        let text = if json {
            line.to_string()
        } else if ctl::is_heartbeat(line) {
            return true;
        } else {
            ctl::render_watch_line(line).unwrap_or_else(|| format!("? {line}"))
        };
        writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
    });
    match r {
        Ok(()) => {
            eprintln!("overlayctl: overlayd at {target} closed the stream");
            ExitCode::from(1)
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &CtlError) -> ExitCode {
    eprintln!("overlayctl: {e}");
    ExitCode::from(match e {
        CtlError::NeedsSocket { .. } => 2,
        _ => 1,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Revoke { node_id } = &cli.cmd {
        let path = "/v1/revoke";
        let target = match ctl::target_for("revoke", Method::Post, path, cli.admin, cli.admin_socket) {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let body = serde_json::json!({ "node": node_id.trim() }).to_string();
        let answer = match ctl::request(&target, Method::Post, path, &body) {
            Ok(b) => b,
            Err(e) => return fail(&e),
        };
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        println!("{}: {}", node_id.trim(), v["outcome"].as_str().unwrap_or(&answer));
        return ExitCode::SUCCESS;
    }
    let posted = match &cli.cmd {
        Cmd::Attach {
            netns,
            network,
            ip,
            mac,
            ifname,
            json,
        } => {
            let mut b = serde_json::json!({ "netns": netns, "network": network, "ifname": ifname });
            if let Some(ip) = ip {
                b["ip"] = serde_json::json!(ip);
            }
            if let Some(mac) = mac {
                b["mac"] = serde_json::json!(mac);
            }
            Some(("attach", "/v1/attach", b, *json))
        }
        Cmd::Detach {
            netns,
            network,
            ifname,
        } => Some((
            "detach",
            "/v1/detach",
            serde_json::json!({ "netns": netns, "network": network, "ifname": ifname }),
            false,
        )),
        _ => None,
    };
    if let Some((kind, path, body, json)) = posted {
        let target = match ctl::target_for(kind, Method::Post, path, cli.admin, cli.admin_socket) {
            Ok(t) => t,
            Err(e) => return fail(&e),
        };
        let answer = match ctl::request(&target, Method::Post, path, &body.to_string()) {
            Ok(b) => b,
            Err(e) => return fail(&e),
        };
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        if json {
            println!("{answer}");
        } else if kind == "attach" {
            let s = |k: &str| v[k].as_str().map_or_else(|| "-".to_string(), str::to_string);
            println!(
                "{} {} attached to {} as {} ({}, mac {}, host side {})",
                s("netns"),
                s("ifname"),
                s("network"),
                s("ip"),
                v["mtu"]
                    .as_u64()
                    .map_or_else(|| "-".into(), |m| format!("mtu {m}")),
                s("mac"),
                s("host_ifname")
            );
        } else if v["detached"].as_bool() == Some(true) {
            println!("detached");
        } else {
            println!("nothing was attached (or the namespace is gone)");
        }
        return ExitCode::SUCCESS;
    }
    match &cli.cmd {
        Cmd::Network {
            cmd:
                NetworkCmd::Create {
                    name,
                    vni,
                    subnet,
                    mtu,
                    egress,
                    block_prefix,
                },
        } => {
            let path = "/v1/networks";
            let target =
                match ctl::target_for("network create", Method::Post, path, cli.admin, cli.admin_socket) {
                    Ok(t) => t,
                    Err(e) => return fail(&e),
                };
            let mut body =
                serde_json::json!({ "name": name, "vni": vni, "subnet": subnet, "egress": egress });
            if let Some(m) = mtu {
                body["mtu"] = serde_json::json!(m);
            }
            if let Some(b) = block_prefix {
                body["block_prefix"] = serde_json::json!(b);
            }
            return match ctl::request(&target, Method::Post, path, &body.to_string()) {
                Ok(b) => {
                    println!("{b}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            };
        }
        Cmd::Network {
            cmd: NetworkCmd::Rm { name, force },
        } => {
            // The route is `/v1/networks/*`; any name selects it.
            let target = match ctl::target_for(
                "network rm",
                Method::Delete,
                "/v1/networks/x",
                cli.admin,
                cli.admin_socket,
            ) {
                Ok(t) => t,
                Err(e) => return fail(&e),
            };
            if !overlayd::netspec::valid_name(name) {
                eprintln!(
                    "overlayctl: invalid network name {name:?}: use 1-15 characters of A-Z a-z 0-9 _ . -"
                );
                return ExitCode::from(2);
            }
            let path = format!("/v1/networks/{name}{}", if *force { "?force=true" } else { "" });
            return match ctl::request(&target, Method::Delete, &path, "") {
                Ok(_) => {
                    println!("network {name} removed");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            };
        }
        _ => {}
    }
    let mut query = String::new();
    let (kind, method, path, json) = match cli.cmd {
        Cmd::Metrics => ("metrics", Method::Get, "/metrics", false),
        Cmd::Trace { dst, network, json } => {
            query = format!("?dst={}", dst.replace(':', "%3A"));
            if let Some(n) = network {
                query.push_str(&format!("&network={n}"));
            }
            ("trace", Method::Get, "/v1/trace", json)
        }
        Cmd::Diag { json } => ("diag", Method::Get, "/v1/diag", json),
        Cmd::Fdb {
            network,
            json,
            watch: true,
        } => return fdb_watch(cli.admin, cli.admin_socket, network, json),
        Cmd::Fdb {
            network,
            json,
            watch: false,
        } => {
            query = network_query(network);
            ("fdb", Method::Get, "/v1/fdb", json)
        }
        Cmd::Stats { network, json } => {
            query = network_query(network);
            ("stats", Method::Get, "/v1/stats", json)
        }
        Cmd::Peers { network, json } => {
            query = network_query(network);
            ("peers", Method::Get, "/v1/peers", json)
        }
        Cmd::Network {
            cmd: NetworkCmd::Ls { json },
        } => ("networks", Method::Get, "/v1/networks", json),
        Cmd::Token { rotate: false } => ("token", Method::Get, "/v1/token", false),
        Cmd::Token { rotate: true } => ("token", Method::Post, "/v1/token/rotate", false),
        Cmd::Attachments { json } => ("attachments", Method::Get, "/v1/attachments", json),
        Cmd::Revoke { .. }
        | Cmd::Attach { .. }
        | Cmd::Detach { .. }
        | Cmd::Network {
            cmd: NetworkCmd::Create { .. } | NetworkCmd::Rm { .. },
        } => return ExitCode::from(2),
    };
    let target = match ctl::target_for(kind, method, path, cli.admin, cli.admin_socket) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let body = match ctl::request(&target, method, &format!("{path}{query}"), "") {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    if kind == "token" {
        let v: Result<serde_json::Value, _> = serde_json::from_str(&body);
        return match v.as_ref().ok().and_then(|v| v["token"].as_str()) {
            Some(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("overlayctl: overlayd at {target} answered without a token; versions differ?");
                ExitCode::from(1)
            }
        };
    }
    if kind == "metrics" {
        print!("{body}");
        return ExitCode::SUCCESS;
    }
    if kind == "diag" {
        return match ctl::render_diag(&body) {
            Ok((text, ok)) => {
                if json {
                    println!("{body}");
                } else {
                    print!("{text}");
                }
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!(
                    "overlayctl: overlayd sent JSON this overlayctl cannot read ({e}): versions differ?"
                );
                ExitCode::from(1)
            }
        };
    }
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    match ctl::render(kind, &body) {
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
