//! Command line and TOML configuration. Every option is one field of [`Options`]: that field is both the flag
//! (`--state-dir`) and the config-file key of the same name (`state-dir = "…"`). `--config FILE` is read first
//! and flags given on the command line win, key by key. Validation errors name the problem and the fix; they exit
//! with status 2.
//!
//! Adding an option: add the field to [`Options`] (`options.rs`: clap and serde attributes side by side), then
//! read and check it in [`Options::validate`] (`validate.rs`) into a field of [`Config`], and give it back in
//! [`Config::to_options`] (`file.rs`) so that `--print-config` shows it. Merging, unknown-key errors and the
//! round trip need no further change.

mod file;
mod options;
mod validate;

pub use file::{load_file, merge, parse_file};
pub use options::{Args, BusyPollSpin, LogFormat, Options, WorkerLoops};

use crate::netspec::NetworkSpec;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7947";
/// Outer UDP source ports per VTEP (DECISIONS: 64, so 16 flows land on at least 8 ports).
pub const DEFAULT_SRC_PORTS: usize = 64;
/// Upper bound for `--src-ports`: one socket (file descriptor) each.
pub const MAX_SRC_PORTS: usize = 1024;
/// `--busy-poll-us` default: off. Busy-polling only saves the wake-up of a vCPU that went idle in the middle of
/// a round trip; on a machine whose CPUs are busy anyway it finds no idle vCPU to save and takes CPU from the
/// threads doing the work. Measured on the project's shared 2-vCPU VM (README "Latency and busy-poll"): TCP
/// 1 stream median 2.04 Gbit/s at 0 µs, 1.14 at 50 µs, 0.83 at 200 µs (load 11-19); ping inconclusive. An
/// operator of a dedicated, mostly idle host who wants lower latency turns it on.
pub const DEFAULT_BUSY_POLL_US: u32 = 0;
/// Upper bound for `--busy-poll-us` (10 ms): beyond it a loop is simply spinning, not bridging a round trip.
pub const MAX_BUSY_POLL_US: u32 = 10_000;
/// The default `--workers` is the number of CPUs, but at most this many.
pub const DEFAULT_MAX_WORKERS: usize = 8;
/// Upper bound for `--workers`: two threads, one TAP queue per network and one UDP socket each.
pub const MAX_WORKERS: usize = 64;

/// The default `--workers`: the CPUs this process may run on (online CPUs, less any affinity or cgroup limit),
/// at most [`DEFAULT_MAX_WORKERS`].
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, DEFAULT_MAX_WORKERS)
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub peers: Vec<IpAddr>,
    pub local: Option<IpAddr>,
    /// Every network served, the legacy `default` one (if any) first.
    pub networks: Vec<NetworkSpec>,
    /// Whether the legacy flags define the network `default` (then `vni`, `bridge`, `tap` are its own).
    pub legacy: bool,
    pub vni: dataplane::wire::Vni,
    pub port: u16,
    pub bridge: String,
    pub tap: String,
    pub mtu: Option<u32>,
    pub admin: SocketAddr,
    pub admin_socket: PathBuf,
    pub ageing_s: u64,
    /// `--block-grace` in seconds.
    pub block_grace_s: u64,
    pub fdb_max: usize,
    /// `--max-local-macs`.
    pub max_local_macs: usize,
    /// `--bum-pps` (0 = unlimited).
    pub bum_pps: u32,
    /// Number of outer UDP source ports (send sockets) for flow entropy.
    pub src_ports: usize,
    /// `--busy-poll-us` (0 = off).
    pub busy_poll_us: u32,
    /// `--busy-poll-spin`: who spins.
    pub busy_poll_spin: BusyPollSpin,
    /// `--worker-loops`: one thread per worker and direction, or one per worker.
    pub worker_loops: WorkerLoops,
    /// `--workers`: forwarding threads per direction, TAP queues per network, receive sockets.
    pub workers: usize,
    pub offload: bool,
    pub learn_any_source: bool,
    pub cluster: Cluster,
    /// Where the join token came from, if from a file (`--print-config` names the file, not the secret).
    pub token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub gossip_port: u16,
    pub log_format: LogFormat,
    /// `--admitter --ca-key-file PATH`: the CA key file this node admits with (besides the init node).
    pub admitter_key: Option<PathBuf>,
    /// `--docker-plugin ADDR` (off when `None`).
    pub docker_plugin: Option<crate::docker::DockerAddr>,
}

/// How this daemon finds its peers.
#[derive(Debug, Clone, PartialEq)]
pub enum Cluster {
    /// No control plane: flood-and-learn among the static `--peer` VTEPs.
    Static,
    /// `--init-cluster`: create the cluster (or reuse it if the state dir already holds one).
    Init,
    /// `--token`: join through the `--peer` members with this token.
    Join(control::auth::JoinToken),
    /// Credentials already in the state dir: rejoin with no token.
    Member,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Network(#[from] crate::netspec::NetSpecError),
    #[error("--bridge and --tap name the devices of the network `default`, which exists with --network only if --vni is given too: add --vni N, or drop --bridge/--tap")]
    LegacyFlagsWithoutVni,
    #[error("VNI {0} is out of range: a VXLAN network identifier is 24 bits, use 0..=16777215")]
    Vni(u32),
    #[error("{what} name {name:?} is {len} bytes; Linux interface names are at most 15 bytes: choose a shorter --{what}")]
    NameTooLong {
        what: &'static str,
        name: String,
        len: usize,
    },
    #[error("{what} name {name:?} is not a valid interface name: use letters, digits, '-', '_' or '.'")]
    BadName { what: &'static str, name: String },
    #[error("no peer given: name at least one other host's VTEP, e.g. --peer 10.0.0.2 (or peer = [\"10.0.0.2\"] in --config), or start a cluster with --init-cluster")]
    NoPeers,
    #[error("--mtu {0} is out of range: use 576..=65000 (the default is the underlay MTU - 50)")]
    Mtu(u32),
    #[error("--port 0 is not a usable VXLAN port: use 4789 (IANA) or 8472 (Linux's legacy default)")]
    Port,
    #[error("--block-grace 0 would take the address blocks of a member away at its first hiccup: use a number of seconds such as 60")]
    BlockGrace,
    #[error("--ageing 0 would forget every MAC at once: use a number of seconds such as 300")]
    Ageing,
    #[error("--fdb-max 0 would make learning impossible: use a positive number such as 65536")]
    FdbMax,
    #[error("--max-local-macs 0 would refuse every local MAC (no spoofing protection, nothing advertised): use a positive number such as 4096")]
    MaxLocalMacs,
    #[error("--src-ports {0} is out of range: use 1..=1024 outer UDP source ports (default 64; 1 disables flow entropy)")]
    SrcPorts(usize),
    #[error("--busy-poll-us {0} is out of range: use 0..=10000 microseconds (0 turns busy-polling off)")]
    BusyPollUs(u32),
    #[error("--busy-poll-spin {0} does nothing with --worker-loops combined: a combined worker never spins itself (it blocks in poll), so only the keeper threads would spin; use --busy-poll-spin keepers (the default), or --worker-loops split")]
    BusyPollSpinCombined(&'static str),
    #[error("--workers {0} is out of range: use 1..=64 forwarding workers (default: the number of CPUs, at most 8)")]
    Workers(usize),
    #[error("cannot read config file {path}: {source} (check the path given to --config)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}, line {line}: unknown key `{key}` (keys are the long flag names without `--`, e.g. `state-dir`; `overlayd --print-config` lists the ones in effect)")]
    UnknownKey { path: PathBuf, line: usize, key: String },
    #[error("config file {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The token parser's message already says where a good token comes from.
    #[error("--token: {0}")]
    Token(#[source] control::auth::AuthError),
    #[error("init-cluster and token are both set: a node either creates the cluster or joins one, remove one of them")]
    InitAndToken,
    #[error("--token needs --peer <ADDR-OF-ANY-MEMBER>: the address of a host already in the cluster")]
    TokenWithoutPeer,
    #[error("--gossip-port 0 is not usable: use 7948 (the default) or another free UDP port")]
    GossipPort,
    #[error("--admitter needs --ca-key-file PATH (the `ca.key` of the --init-cluster node)")]
    AdmitterWithoutKey,
    #[error("--ca-key-file is only read with --admitter: add --admitter, or drop --ca-key-file")]
    CaKeyWithoutAdmitter,
    #[error("--admitter needs a cluster: join with --peer <member> --token <TOKEN> (the token also carries the join secret), or restart a node that already joined; the --init-cluster node is an admitter already")]
    AdmitterNotMember,
    #[error("--admin {0} is not a loopback address: the admin endpoint is unauthenticated, keep it on 127.0.0.1 or ::1")]
    AdminNotLoopback(SocketAddr),
    #[error("--admin-socket {path} is {len} bytes; a Unix socket path is at most 107 bytes: choose a shorter path")]
    AdminSocketTooLong { path: PathBuf, len: usize },
    #[error("cannot read the token file {path}: {source} (check --token-file / token-file)")]
    TokenFile { path: PathBuf, source: std::io::Error },
    #[error("token file {path} has mode {mode:03o}: group or others may access it and the token grants cluster membership; run `chmod 600 {path}`")]
    TokenFileMode { path: PathBuf, mode: u32 },
    #[error("token-file and init-cluster are both set: the first node creates the cluster, only joiners need a token")]
    InitWithTokenFile,
    #[error("token and token-file are both set: give the token one way, preferably token-file")]
    TokenAndTokenFile,
    #[error("--learn-any-source applies to static mode only: a cluster member accepts VXLAN from members only (drop the option, or run in static mode with --peer and no --init-cluster/--token/cluster state dir)")]
    LearnAnySourceInCluster,
    #[error(transparent)]
    DockerPlugin(#[from] crate::docker::listen::AddrError),
    /// Only if an option cannot be represented in TOML; a bug, not a user error.
    #[error("internal error while merging the configuration: {0}")]
    Merge(String),
}

impl Args {
    /// Merge the config file (if any) under the flags and validate. Reads the file again on every call, which
    /// is what a reload (SIGHUP) wants.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        self.effective_options()?.validate()
    }

    /// The options in force: the file's, overridden key by key by the flags.
    pub fn effective_options(&self) -> Result<Options, ConfigError> {
        match &self.config {
            Some(path) => merge(&load_file(path)?, &self.options),
            None => Ok(self.options.clone()),
        }
    }
}

#[cfg(test)]
mod tests;
