//! The schema: [`Args`] (the command line) and [`Options`], whose every field is both a flag and a config-file
//! key of the same name. Unset options stay `None`/empty/`false`, which is what merging relies on.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The command line: every [`Options`] field as a flag, plus the flags that only make sense there.
#[derive(Parser, Debug, Default, Clone)]
#[command(
    name = "overlayd",
    version,
    about = "Userspace VXLAN overlay daemon (RFC 7348, interoperable with Linux VXLAN)"
)]
pub struct Args {
    #[command(flatten)]
    pub options: Options,
    /// TOML file with any of these options, keys named as the flags without `--` (command-line flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML (usable as --config) and exit; touches nothing on the host.
    #[arg(long)]
    pub print_config: bool,
}

/// Every option of overlayd; each is a flag and a config-file key of the same (kebab-case) name. Unset options
/// are `None`/empty/`false`, so that merging a file under the flags is "the flag if given, else the file".
#[derive(clap::Args, Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// Underlay address of another host's VTEP (repeatable).
    #[arg(long = "peer", value_name = "IP")]
    #[serde(rename = "peer", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<IpAddr>,
    /// Underlay source address [default: the kernel's source for the route to the first peer].
    #[arg(long, value_name = "IP")]
    pub local: Option<IpAddr>,
    /// VXLAN network identifier, 0..=16777215 [default: 1].
    #[arg(long, value_name = "N")]
    pub vni: Option<u32>,
    /// VXLAN UDP port [default: 4789, IANA].
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Linux bridge the TAP is attached to; created if missing [default: ovl0].
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,
    /// TAP device name [default: ovl<VNI>].
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,
    /// A network NAME:VNI[:SUBNET] on bridge ovbr<VNI> and TAP ovl<VNI> (repeatable; in the config file
    /// `[[network]]` tables with keys name, vni, subnet, mtu, egress). With any network given, the legacy
    /// network `default` (--vni, --bridge, --tap) exists only if --vni is given too.
    #[arg(long = "network", value_name = "NAME:VNI[:SUBNET]")]
    #[serde(rename = "network", skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<crate::netspec::NetworkOpt>,
    /// Overlay MTU [default: underlay MTU - 50, i.e. 1450 on a 1500 underlay].
    #[arg(long, value_name = "N")]
    pub mtu: Option<u32>,
    /// Local HTTP endpoint for overlayctl, read-only (fdb, stats, peers) [default: 127.0.0.1:7947].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Root-only Unix socket serving the whole admin API: the join token and every change
    /// [default: /run/overlayd/admin.sock].
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Seconds before a learned MAC is forgotten [default: 300, as Linux].
    #[arg(long, value_name = "SECONDS")]
    pub ageing: Option<u64>,
    /// Cluster mode: seconds after a member left or was revoked before the IPAM address blocks it held are
    /// given back (a silent member keeps them) [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub block_grace: Option<u64>,
    /// Maximum FDB entries; when full, the least recently seen learned entry makes room (never a local or
    /// control one) [default: 65536].
    #[arg(long, value_name = "N")]
    pub fdb_max: Option<usize>,
    /// Most MACs behind this host's bridge that are learned (and advertised) as local; new ones beyond it are
    /// refused and counted as `local_mac_cap` [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_local_macs: Option<usize>,
    /// Broadcast and multicast frames per second accepted from the TAP per source MAC, in bursts of up to
    /// max(N/10, 10); 0 = unlimited. Drops are counted as `bum_rate_limited` [default: 1000].
    #[arg(long, value_name = "N")]
    pub bum_pps: Option<u32>,
    /// Outer UDP source ports (one send socket each) that inner flows are hashed over, 1..=1024 [default: 64].
    #[arg(long, value_name = "N")]
    pub src_ports: Option<usize>,
    /// Microseconds overlayd's idle-priority keeper threads keep the CPUs busy after each batch of packets
    /// (adaptive busy-poll: lower latency for CPU time while traffic flows; an idle daemon never spins),
    /// 0..=10000; 0 = off [default: 0].
    #[arg(long, value_name = "US")]
    pub busy_poll_us: Option<u32>,
    /// Who spins for --busy-poll-us: `keepers` (idle-priority threads, one per CPU; the forwarding loops
    /// block as without busy-poll), `loops` (the forwarding loops themselves, arming each other) or
    /// `both`; with --worker-loops combined only `keepers` (combined workers never spin themselves)
    /// [default: keepers].
    #[arg(long, value_name = "WHO")]
    pub busy_poll_spin: Option<BusyPollSpin>,
    /// Threads per forwarding worker: `split` (a TX and an RX thread, the two directions in parallel) or
    /// `combined` (one thread for both: one wake-up fewer per request/response round trip, see README
    /// "Latency and busy-poll") [default: split].
    #[arg(long, value_name = "HOW")]
    pub worker_loops: Option<WorkerLoops>,
    /// Forwarding workers, 1..=64: each is a TX thread on its own queue of every network's TAP and an RX
    /// thread on its own UDP socket on the VXLAN port (SO_REUSEPORT), so flows spread over cores (one
    /// `ovl-wk<i>` thread with `--worker-loops combined`) [default: the number of CPUs, at most 8].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Disable TAP/UDP offloads (TSO, GSO, GRO): one frame per datagram, for debugging.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub no_offload: bool,
    /// Static mode: accept VXLAN from any source and learn from it, as Linux VXLAN does (default: only from
    /// the --peer addresses).
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub learn_any_source: bool,
    /// Create a new cluster (CA + this node's credential in --state-dir) and become its first member.
    #[arg(long, conflicts_with = "token")]
    #[serde(skip_serializing_if = "is_false")]
    pub init_cluster: bool,
    /// Join token printed by `overlayctl --admin-socket PATH token` on an admitter; use with
    /// --peer <ADDR-OF-ANY-MEMBER>. Visible to every local user in `ps`: prefer --token-file.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the join token from this file (mode 0600 or stricter; refused if group or others may access it).
    #[arg(long, value_name = "PATH", conflicts_with = "init_cluster")]
    pub token_file: Option<PathBuf>,
    /// Where cluster credentials and state live [default: /var/lib/overlayd].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// UDP port of the QUIC gossip endpoint [default: 7948].
    #[arg(long, value_name = "N")]
    pub gossip_port: Option<u16>,
    /// Log line format on stderr [default: text; colours only when stderr is a terminal].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Run as an additional admitter (keeps the CA key and the join secret, admits joiners); needs
    /// --ca-key-file, and the first time a join token (which also carries the join secret).
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub admitter: bool,
    /// The cluster CA's private key for --admitter: `ca.key` copied from the --init-cluster node's state dir.
    #[arg(long, value_name = "PATH")]
    pub ca_key_file: Option<PathBuf>,
    /// Serve Docker's remote network and IPAM driver here: `unix:PATH` (root-only; dockerd discovers
    /// `/run/docker/plugins/overlayd.sock`) or `tcp:127.0.0.1:PORT` (with a `.spec` file; unsafe on
    /// multi-user hosts: any local user can call it) [default: off; `--docker-plugin` alone:
    /// unix:/run/docker/plugins/overlayd.sock].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::docker::DEFAULT_DOCKER_PLUGIN)]
    pub docker_plugin: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Who spins for `--busy-poll-us` (`dataplane::worker::Spin`).
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BusyPollSpin {
    /// `SCHED_IDLE` keeper threads, one per CPU the daemon may use (at most one per forwarding loop).
    #[default]
    Keepers,
    /// The forwarding loops themselves (own spin and cross-loop arming).
    Loops,
    /// Both.
    Both,
}

impl From<BusyPollSpin> for dataplane::worker::Spin {
    fn from(s: BusyPollSpin) -> Self {
        match s {
            BusyPollSpin::Keepers => Self::Keepers,
            BusyPollSpin::Loops => Self::Loops,
            BusyPollSpin::Both => Self::Both,
        }
    }
}

/// Threads per forwarding worker (`--worker-loops`).
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerLoops {
    /// A TX thread and an RX thread per worker.
    #[default]
    Split,
    /// One thread per worker for both directions (`dataplane::worker::run_combined`).
    Combined,
}

/// How log lines are written to stderr.
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line (for journald/log shippers).
    Json,
}
