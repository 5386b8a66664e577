//! Command line and TOML configuration. Every option is one field of [`Options`]: that field is both the flag
//! (`--state-dir`) and the config-file key of the same name (`state-dir = "…"`). `--config FILE` is read first
//! and flags given on the command line win, key by key. Validation errors name the problem and the fix; they exit
//! with status 2.
//!
//! Adding an option: add the field to [`Options`] (clap and serde attributes side by side), then read and
//! check it in [`Options::validate`] into a field of [`Config`], and give it back in [`Config::to_options`] so
//! that `--print-config` shows it. Merging, unknown-key errors and the round trip need no further change.

use crate::netspec::NetworkSpec;
use clap::Parser;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7947";
/// Outer UDP source ports per VTEP (DECISIONS: 64, so 16 flows land on at least 8 ports).
pub const DEFAULT_SRC_PORTS: usize = 64;
/// Upper bound for `--src-ports`: one socket (file descriptor) each.
pub const MAX_SRC_PORTS: usize = 1024;
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
    /// Forwarding workers, 1..=64: each is a TX thread on its own queue of every network's TAP and an RX
    /// thread on its own UDP socket on the VXLAN port (SO_REUSEPORT), so flows spread over cores
    /// [default: the number of CPUs, at most 8].
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

/// Parse a config file; an unknown key or a bad value names its line.
pub fn load_file(path: &Path) -> Result<Options, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text)
}

/// [`load_file`] on text already read (`path` is only used in messages).
pub fn parse_file(path: &Path, text: &str) -> Result<Options, ConfigError> {
    toml::from_str::<Options>(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let line = text
            .get(..span.start)
            .map_or(1, |before| before.matches('\n').count() + 1);
        let message = e.message().trim().to_string();
        if message.starts_with("unknown field") {
            let key = text.get(span).unwrap_or("").trim().trim_matches(['"', '\'']);
            ConfigError::UnknownKey {
                path: path.to_path_buf(),
                line,
                key: key.to_string(),
            }
        } else {
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                message,
            }
        }
    })
}

/// `file` overridden by every option set in `flags`. Generic over the fields: both sides go through TOML
/// tables, where unset options are absent, so a new field needs no code here.
pub fn merge(file: &Options, flags: &Options) -> Result<Options, ConfigError> {
    let table = |o: &Options| match toml::Value::try_from(o) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(other) => Err(ConfigError::Merge(format!("options became {}", other.type_str()))),
        Err(e) => Err(ConfigError::Merge(e.to_string())),
    };
    let mut merged = table(file)?;
    merged.extend(table(flags)?);
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Merge(e.to_string()))
}

impl Options {
    /// Check every option and fill in the defaults.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let peers = self.peers;
        let state_dir = self
            .state_dir
            .unwrap_or_else(|| PathBuf::from(control::auth::DEFAULT_STATE_DIR));
        let token_file = self.token_file;
        if self.init_cluster && token_file.is_some() {
            return Err(ConfigError::InitWithTokenFile);
        }
        let token = match (self.token, &token_file) {
            (Some(_), Some(_)) => return Err(ConfigError::TokenAndTokenFile),
            (Some(t), None) => Some(t),
            (None, Some(path)) => Some(read_token_file(path)?),
            (None, None) => None,
        };
        let cluster = if self.init_cluster {
            if token.is_some() {
                return Err(ConfigError::InitAndToken);
            }
            Cluster::Init
        } else if let Some(t) = &token {
            if peers.is_empty() {
                return Err(ConfigError::TokenWithoutPeer);
            }
            Cluster::Join(t.trim().parse().map_err(ConfigError::Token)?)
        } else if control::auth::StateDir::new(&state_dir).is_initialised() {
            Cluster::Member
        } else {
            Cluster::Static
        };
        if cluster == Cluster::Static && peers.is_empty() {
            return Err(ConfigError::NoPeers);
        }
        if self.learn_any_source && cluster != Cluster::Static {
            return Err(ConfigError::LearnAnySourceInCluster);
        }
        let admitter_key = match (self.admitter, self.ca_key_file) {
            (false, None) => None,
            (false, Some(_)) => return Err(ConfigError::CaKeyWithoutAdmitter),
            (true, None) => return Err(ConfigError::AdmitterWithoutKey),
            (true, Some(_)) if matches!(cluster, Cluster::Static | Cluster::Init) => {
                return Err(ConfigError::AdmitterNotMember)
            }
            (true, Some(key)) => Some(key),
        };
        let gossip_port = self.gossip_port.unwrap_or(control::DEFAULT_GOSSIP_PORT);
        if gossip_port == 0 {
            return Err(ConfigError::GossipPort);
        }
        let legacy = self.networks.is_empty() || self.vni.is_some();
        if !legacy && (self.bridge.is_some() || self.tap.is_some()) {
            return Err(ConfigError::LegacyFlagsWithoutVni);
        }
        let vni_n = self.vni.or(self.networks.first().map(|n| n.vni)).unwrap_or(1);
        let vni = dataplane::wire::Vni::new(vni_n).map_err(|_| ConfigError::Vni(vni_n))?;
        let port = self.port.unwrap_or(dataplane::wire::vxlan::VXLAN_PORT);
        if port == 0 {
            return Err(ConfigError::Port);
        }
        let bridge = self.bridge.unwrap_or_else(|| "ovl0".to_string());
        check_ifname("bridge", &bridge)?;
        let tap = self.tap.unwrap_or_else(|| format!("ovl{vni_n}"));
        check_ifname("tap", &tap)?;
        if let Some(m) = self.mtu {
            if !(576..=65000).contains(&m) {
                return Err(ConfigError::Mtu(m));
            }
        }
        let mut networks = Vec::new();
        if legacy {
            networks.push(NetworkSpec {
                name: crate::netspec::DEFAULT_NETWORK.to_string(),
                vni,
                subnet: None,
                mtu: None,
                egress: false,
                bridge: bridge.clone(),
                tap: tap.clone(),
            });
        }
        for o in &self.networks {
            let n = o.check()?;
            crate::netspec::check_collisions(&n, &networks)?;
            networks.push(n);
        }
        let admin = match self.admin {
            Some(a) => a,
            None => DEFAULT_ADMIN
                .parse()
                .map_err(|_| ConfigError::AdminNotLoopback(SocketAddr::from(([0; 4], 0))))?,
        };
        if !admin.ip().is_loopback() {
            return Err(ConfigError::AdminNotLoopback(admin));
        }
        let admin_socket = self
            .admin_socket
            .unwrap_or_else(|| PathBuf::from(crate::admin::DEFAULT_ADMIN_SOCKET));
        let len = admin_socket.as_os_str().len();
        if len == 0 || len > crate::admin::socket::MAX_SOCKET_PATH {
            return Err(ConfigError::AdminSocketTooLong {
                path: admin_socket,
                len,
            });
        }
        let ageing_s = self.ageing.unwrap_or(300);
        if ageing_s == 0 {
            return Err(ConfigError::Ageing);
        }
        let block_grace_s = self.block_grace.unwrap_or(60);
        if block_grace_s == 0 {
            return Err(ConfigError::BlockGrace);
        }
        let fdb_max = self.fdb_max.unwrap_or(dataplane::fdb::Fdb::DEFAULT_CAPACITY);
        if fdb_max == 0 {
            return Err(ConfigError::FdbMax);
        }
        let max_local_macs = self
            .max_local_macs
            .unwrap_or(dataplane::fdb::Fdb::DEFAULT_MAX_LOCAL);
        if max_local_macs == 0 {
            return Err(ConfigError::MaxLocalMacs);
        }
        let bum_pps = self.bum_pps.unwrap_or(dataplane::engine::bum::DEFAULT_BUM_PPS);
        let src_ports = self.src_ports.unwrap_or(DEFAULT_SRC_PORTS);
        if !(1..=MAX_SRC_PORTS).contains(&src_ports) {
            return Err(ConfigError::SrcPorts(src_ports));
        }
        let workers = self.workers.unwrap_or_else(default_workers);
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(ConfigError::Workers(workers));
        }
        Ok(Config {
            peers,
            local: self.local,
            networks,
            legacy,
            vni,
            port,
            bridge,
            tap,
            mtu: self.mtu,
            admin,
            admin_socket,
            ageing_s,
            block_grace_s,
            fdb_max,
            max_local_macs,
            bum_pps,
            src_ports,
            workers,
            offload: !self.no_offload,
            learn_any_source: self.learn_any_source,
            cluster,
            token_file,
            state_dir,
            gossip_port,
            log_format: self.log_format.unwrap_or_default(),
            admitter_key,
            docker_plugin: self.docker_plugin.as_deref().map(str::parse).transpose()?,
        })
    }
}

impl Config {
    /// The options that give this configuration back, with every default spelled out (`local` and `mtu` stay
    /// unset when they are derived from the host at start).
    pub fn to_options(&self) -> Options {
        Options {
            peers: self.peers.clone(),
            local: self.local,
            vni: self.legacy.then(|| self.vni.get()),
            networks: self
                .networks
                .iter()
                .skip(usize::from(self.legacy))
                .map(NetworkSpec::to_opt)
                .collect(),
            port: Some(self.port),
            bridge: self.legacy.then(|| self.bridge.clone()),
            tap: self.legacy.then(|| self.tap.clone()),
            mtu: self.mtu,
            admin: Some(self.admin),
            admin_socket: Some(self.admin_socket.clone()),
            ageing: Some(self.ageing_s),
            block_grace: Some(self.block_grace_s),
            fdb_max: Some(self.fdb_max),
            max_local_macs: Some(self.max_local_macs),
            bum_pps: Some(self.bum_pps),
            src_ports: Some(self.src_ports),
            workers: Some(self.workers),
            no_offload: !self.offload,
            learn_any_source: self.learn_any_source,
            init_cluster: self.cluster == Cluster::Init,
            // A token read from a file stays there: print the file's name, never the secret.
            token: match (&self.cluster, &self.token_file) {
                (Cluster::Join(t), None) => Some(t.to_string()),
                _ => None,
            },
            token_file: self.token_file.clone(),
            state_dir: Some(self.state_dir.clone()),
            gossip_port: Some(self.gossip_port),
            log_format: Some(self.log_format),
            admitter: self.admitter_key.is_some(),
            ca_key_file: self.admitter_key.clone(),
            docker_plugin: self.docker_plugin.as_ref().map(ToString::to_string),
        }
    }

    /// `overlayd --print-config`: this configuration as a TOML file that `--config` reads back to the same.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let body = toml::to_string(&self.to_options()).map_err(|e| ConfigError::Merge(e.to_string()))?;
        let mut out = String::from("# overlayd effective configuration (overlayd --print-config)\n");
        if self.local.is_none() {
            out.push_str("# local: unset, taken at start from the route to the first peer\n");
        }
        if self.mtu.is_none() {
            out.push_str("# mtu: unset, taken at start as the underlay MTU - 50 (IPv4) or - 70 (IPv6)\n");
        }
        out.push_str(&body);
        Ok(out)
    }
}

/// The join token from a file that only its owner can access (the token grants membership).
fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| ConfigError::TokenFile {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::TokenFileMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(std::fs::read_to_string(path).map_err(err)?.trim().to_string())
}

fn check_ifname(what: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.len() > IFNAME_MAX {
        return Err(ConfigError::NameTooLong {
            what,
            name: name.to_string(),
            len: name.len(),
        });
    }
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(ConfigError::BadName {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
