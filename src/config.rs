//! Command line and TOML configuration. Every option can come from `--config FILE` (same names, TOML); flags
//! given on the command line win. Validation errors name the problem and the fix; they exit with status 2.

use clap::Parser;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7947";

#[derive(Parser, Debug, Default, Clone)]
#[command(
    name = "overlayd",
    version,
    about = "Userspace VXLAN overlay daemon (RFC 7348, interoperable with Linux VXLAN)"
)]
pub struct Args {
    /// Underlay address of another host's VTEP (repeatable).
    #[arg(long = "peer", value_name = "IP")]
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
    /// TOML file with any of these options (command-line flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds before a learned MAC is forgotten [default: 300, as Linux].
    #[arg(long, value_name = "SECONDS")]
    pub ageing: Option<u64>,
    /// Maximum FDB entries; learning stops (and is counted) beyond it [default: 65536].
    #[arg(long, value_name = "N")]
    pub fdb_max: Option<usize>,
    /// Disable TAP/UDP offloads (TSO, GSO, GRO): one frame per datagram, for debugging.
    #[arg(long)]
    pub no_offload: bool,
    /// Static mode: accept VXLAN from any source and learn from it, as Linux VXLAN does (default: only from
    /// the --peer addresses).
    #[arg(long)]
    pub learn_any_source: bool,
    /// Create a new cluster (CA + this node's credential in --state-dir) and become its first member.
    #[arg(long, conflicts_with = "token")]
    pub init_cluster: bool,
    /// Join token printed by `overlayctl --admin-socket PATH token` on any member; use with --peer <ADDR-OF-ANY-MEMBER>.
    /// Visible to every local user in `ps`: prefer --token-file.
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
    /// Run as an additional admitter (keeps the CA key and the join secret, admits joiners); needs
    /// --ca-key-file, and a join token (--token) the first time, which also carries the join secret.
    #[arg(long, requires = "ca_key_file", conflicts_with = "init_cluster")]
    pub admitter: bool,
    /// The cluster CA's private key for --admitter: `ca.key` copied from the --init-cluster node's state dir.
    #[arg(long, value_name = "PATH", requires = "admitter")]
    pub ca_key_file: Option<PathBuf>,
}

/// The same options as a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    #[serde(default)]
    peer: Vec<IpAddr>,
    local: Option<IpAddr>,
    vni: Option<u32>,
    port: Option<u16>,
    bridge: Option<String>,
    tap: Option<String>,
    mtu: Option<u32>,
    admin: Option<SocketAddr>,
    admin_socket: Option<PathBuf>,
    token_file: Option<PathBuf>,
    ageing: Option<u64>,
    fdb_max: Option<usize>,
    no_offload: Option<bool>,
    learn_any_source: Option<bool>,
    state_dir: Option<PathBuf>,
    gossip_port: Option<u16>,
    admitter: Option<bool>,
    ca_key_file: Option<PathBuf>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub peers: Vec<IpAddr>,
    pub local: Option<IpAddr>,
    pub vni: dataplane::wire::Vni,
    pub port: u16,
    pub bridge: String,
    pub tap: String,
    pub mtu: Option<u32>,
    pub admin: SocketAddr,
    pub admin_socket: PathBuf,
    pub ageing_s: u64,
    pub fdb_max: usize,
    pub offload: bool,
    /// Static mode: accept VXLAN from any source, not only the peers.
    pub learn_any_source: bool,
    pub cluster: Cluster,
    pub state_dir: PathBuf,
    pub gossip_port: u16,
    /// `--admitter --ca-key-file PATH`: the CA key file this node admits with (besides the init node).
    pub admitter_key: Option<PathBuf>,
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
    #[error("--ageing 0 would forget every MAC at once: use a number of seconds such as 300")]
    Ageing,
    #[error("--fdb-max 0 would make learning impossible: use a positive number such as 65536")]
    FdbMax,
    #[error("cannot read config file {path}: {source} (check the path given to --config)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid join token (--token or --token-file): {0} (copy the single line printed by `overlayctl --admin-socket … token` on a cluster member)")]
    Token(String),
    #[error("--token needs --peer <ADDR-OF-ANY-MEMBER>: the address of a host already in the cluster")]
    TokenWithoutPeer,
    #[error("--gossip-port 0 is not usable: use 7948 (the default) or another free UDP port")]
    GossipPort,
    #[error("--admitter needs --ca-key-file PATH (the `ca.key` of the --init-cluster node)")]
    AdmitterWithoutKey,
    #[error("--admitter needs a cluster: join with --peer <member> --token <TOKEN> (the token also carries the join secret), or restart a node that already joined")]
    AdmitterNotMember,
    #[error("--admin-socket {path} is {len} bytes; a Unix socket path is at most 107 bytes: choose a shorter path")]
    AdminSocketTooLong { path: PathBuf, len: usize },
    #[error("cannot read the token file {path}: {source} (check --token-file / token-file)")]
    TokenFile { path: PathBuf, source: std::io::Error },
    #[error("token file {path} has mode {mode:03o}: group or others may access it and the token grants cluster membership; run `chmod 600 {path}`")]
    TokenFileMode { path: PathBuf, mode: u32 },
    #[error("token-file in the config file conflicts with --init-cluster: the first node creates the cluster, only joiners need a token")]
    InitWithTokenFile,
    #[error("--learn-any-source applies to static mode only: a cluster member accepts VXLAN from members only (drop the option, or run in static mode with --peer and no --init-cluster/--token/cluster state dir)")]
    LearnAnySourceInCluster,
    #[error("--admin {0} is not a loopback address: the admin endpoint is unauthenticated, keep it on 127.0.0.1 or ::1")]
    AdminNotLoopback(SocketAddr),
}

impl Args {
    /// Merge the config file (if any) under the flags and validate.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let peers = if self.peers.is_empty() {
            file.peer
        } else {
            self.peers
        };
        let state_dir = self
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(control::auth::DEFAULT_STATE_DIR));
        let token_file = self.token_file.or(file.token_file);
        let token = match (&self.token, &token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(read_token_file(path)?),
            (None, None) => None,
        };
        if self.init_cluster && token_file.is_some() {
            return Err(ConfigError::InitWithTokenFile);
        }
        let cluster = if self.init_cluster {
            Cluster::Init
        } else if let Some(t) = &token {
            if peers.is_empty() {
                return Err(ConfigError::TokenWithoutPeer);
            }
            Cluster::Join(
                t.trim()
                    .parse()
                    .map_err(|e: control::auth::AuthError| ConfigError::Token(e.to_string()))?,
            )
        } else if control::auth::StateDir::new(&state_dir).is_initialised() {
            Cluster::Member
        } else {
            Cluster::Static
        };
        if cluster == Cluster::Static && peers.is_empty() {
            return Err(ConfigError::NoPeers);
        }
        let admitter_key = if self.admitter || file.admitter.unwrap_or(false) {
            let key = self
                .ca_key_file
                .or(file.ca_key_file)
                .ok_or(ConfigError::AdmitterWithoutKey)?;
            if matches!(cluster, Cluster::Static | Cluster::Init) {
                return Err(ConfigError::AdmitterNotMember);
            }
            Some(key)
        } else {
            None
        };
        let learn_any_source = self.learn_any_source || file.learn_any_source.unwrap_or(false);
        if learn_any_source && cluster != Cluster::Static {
            return Err(ConfigError::LearnAnySourceInCluster);
        }
        let gossip_port = self
            .gossip_port
            .or(file.gossip_port)
            .unwrap_or(control::DEFAULT_GOSSIP_PORT);
        if gossip_port == 0 {
            return Err(ConfigError::GossipPort);
        }
        let vni_n = self.vni.or(file.vni).unwrap_or(1);
        let vni = dataplane::wire::Vni::new(vni_n).map_err(|_| ConfigError::Vni(vni_n))?;
        let port = self
            .port
            .or(file.port)
            .unwrap_or(dataplane::wire::vxlan::VXLAN_PORT);
        if port == 0 {
            return Err(ConfigError::Port);
        }
        let bridge = self.bridge.or(file.bridge).unwrap_or_else(|| "ovl0".to_string());
        check_ifname("bridge", &bridge)?;
        let tap = self.tap.or(file.tap).unwrap_or_else(|| format!("ovl{vni_n}"));
        check_ifname("tap", &tap)?;
        let mtu = self.mtu.or(file.mtu);
        if let Some(m) = mtu {
            if !(576..=65000).contains(&m) {
                return Err(ConfigError::Mtu(m));
            }
        }
        let admin = match self.admin.or(file.admin) {
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
            .or(file.admin_socket)
            .unwrap_or_else(|| PathBuf::from(crate::admin::DEFAULT_ADMIN_SOCKET));
        let len = admin_socket.as_os_str().len();
        if len == 0 || len > crate::admin::socket::MAX_SOCKET_PATH {
            return Err(ConfigError::AdminSocketTooLong {
                path: admin_socket,
                len,
            });
        }
        let ageing_s = self.ageing.or(file.ageing).unwrap_or(300);
        if ageing_s == 0 {
            return Err(ConfigError::Ageing);
        }
        let fdb_max = self
            .fdb_max
            .or(file.fdb_max)
            .unwrap_or(dataplane::fdb::Fdb::DEFAULT_CAPACITY);
        if fdb_max == 0 {
            return Err(ConfigError::FdbMax);
        }
        Ok(Config {
            peers,
            local: self.local.or(file.local),
            vni,
            port,
            bridge,
            tap,
            mtu,
            admin,
            admin_socket,
            ageing_s,
            fdb_max,
            offload: !(self.no_offload || file.no_offload.unwrap_or(false)),
            learn_any_source,
            cluster,
            state_dir,
            gossip_port,
            admitter_key,
        })
    }
}

/// The join token from a file that only its owner can access (the token grants membership).
fn read_token_file(path: &std::path::Path) -> Result<String, ConfigError> {
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
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["overlayd", "--state-dir", "/nonexistent/overlayd-test"];
        v.extend_from_slice(args);
        Args::try_parse_from(v).expect("clap accepts").resolve()
    }

    #[test]
    fn defaults() {
        let c = parse(&["--peer", "10.0.0.2"]).unwrap();
        assert_eq!(c.vni.get(), 1);
        assert_eq!(c.port, 4789);
        assert_eq!(c.bridge, "ovl0");
        assert_eq!(c.tap, "ovl1");
        assert_eq!(c.admin.to_string(), "127.0.0.1:7947");
        assert_eq!(c.admin_socket, PathBuf::from("/run/overlayd/admin.sock"));
        assert_eq!(c.ageing_s, 300);
        assert!(c.offload);
        assert!(!c.learn_any_source, "only peers may send by default");
        assert_eq!(
            parse(&["--peer", "10.0.0.2", "--vni", "42"]).unwrap().tap,
            "ovl42"
        );
    }

    #[test]
    fn errors_name_the_fix() {
        let e = parse(&["--peer", "10.0.0.2", "--vni", "16777216"]).unwrap_err();
        assert!(e.to_string().contains("0..=16777215"), "{e}");
        let e = parse(&["--peer", "10.0.0.2", "--bridge", "a-very-long-bridge-name"]).unwrap_err();
        assert!(e.to_string().contains("at most 15 bytes"), "{e}");
        assert!(matches!(parse(&[]).unwrap_err(), ConfigError::NoPeers));
        assert!(matches!(
            parse(&["--peer", "10.0.0.2", "--tap", "a b"]).unwrap_err(),
            ConfigError::BadName { .. }
        ));
        assert!(matches!(
            parse(&["--peer", "10.0.0.2", "--admin", "0.0.0.0:7947"]).unwrap_err(),
            ConfigError::AdminNotLoopback(_)
        ));
        assert!(Args::try_parse_from(["overlayd", "--peer", "notanip"]).is_err());
        assert!(matches!(
            parse(&["--token", "OVL1-x"]).unwrap_err(),
            ConfigError::TokenWithoutPeer
        ));
        assert!(matches!(
            parse(&["--peer", "10.0.0.2", "--token", "garbage"]).unwrap_err(),
            ConfigError::Token(_)
        ));
        assert!(Args::try_parse_from(["overlayd", "--init-cluster", "--token", "t"]).is_err());
        assert!(
            Args::try_parse_from(["overlayd", "--admitter"]).is_err(),
            "needs --ca-key-file"
        );
        assert!(
            Args::try_parse_from(["overlayd", "--init-cluster", "--admitter", "--ca-key-file", "k"]).is_err(),
            "the init node already is an admitter"
        );
        assert!(matches!(
            parse(&["--peer", "10.0.0.2", "--admitter", "--ca-key-file", "/k"]).unwrap_err(),
            ConfigError::AdmitterNotMember
        ));
        assert!(matches!(
            parse(&["--init-cluster", "--learn-any-source"]).unwrap_err(),
            ConfigError::LearnAnySourceInCluster
        ));
    }

    #[test]
    fn learn_any_source_flag_and_key() {
        assert!(
            parse(&["--peer", "10.0.0.2", "--learn-any-source"])
                .unwrap()
                .learn_any_source
        );
        let dir = std::env::temp_dir().join(format!("overlayd-las-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("o.toml");
        std::fs::write(&p, "peer = [\"10.0.0.2\"]\nlearn-any-source = true\n").unwrap();
        assert!(
            parse(&["--config", p.to_str().unwrap()])
                .unwrap()
                .learn_any_source
        );
        std::fs::write(&p, "peer = [\"10.0.0.2\"]\nlearn-any-source = false\n").unwrap();
        assert!(
            !parse(&["--config", p.to_str().unwrap()])
                .unwrap()
                .learn_any_source
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cluster_modes() {
        assert_eq!(parse(&["--peer", "10.0.0.2"]).unwrap().cluster, Cluster::Static);
        let tok = format!("OVL1-{}-{}", "1".repeat(64), "2".repeat(64));
        let c = parse(&[
            "--peer",
            "10.0.0.2",
            "--token",
            &tok,
            "--admitter",
            "--ca-key-file",
            "/k",
        ])
        .unwrap();
        assert!(matches!(c.cluster, Cluster::Join(_)));
        assert_eq!(c.admitter_key, Some(PathBuf::from("/k")));
        // The same from the config file; without the key file it says what is missing.
        let dir = std::env::temp_dir().join(format!("overlayd-adm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("o.toml");
        std::fs::write(&p, "admitter = true\nca-key-file = \"/k2\"\n").unwrap();
        let c = parse(&[
            "--peer",
            "10.0.0.2",
            "--token",
            &tok,
            "--config",
            p.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(c.admitter_key, Some(PathBuf::from("/k2")));
        std::fs::write(&p, "admitter = true\n").unwrap();
        assert!(matches!(
            parse(&[
                "--peer",
                "10.0.0.2",
                "--token",
                &tok,
                "--config",
                p.to_str().unwrap()
            ])
            .unwrap_err(),
            ConfigError::AdmitterWithoutKey
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        let c = parse(&["--init-cluster"]).unwrap();
        assert_eq!(c.cluster, Cluster::Init);
        assert!(c.peers.is_empty());
        assert_eq!(c.gossip_port, 7948);
    }

    #[test]
    fn admin_socket_and_token_file() {
        use std::os::unix::fs::PermissionsExt;
        let c = parse(&["--peer", "10.0.0.2", "--admin-socket", "/tmp/x/a.sock"]).unwrap();
        assert_eq!(c.admin_socket, PathBuf::from("/tmp/x/a.sock"));
        let long = format!("/{}", "a".repeat(107));
        assert!(matches!(
            parse(&["--peer", "10.0.0.2", "--admin-socket", &long]).unwrap_err(),
            ConfigError::AdminSocketTooLong { .. }
        ));
        let dir = std::env::temp_dir().join(format!("overlayd-tokfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tf = dir.join("token");
        let garbage = dir.join("garbage");
        std::fs::write(&garbage, "not a token\n").unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
        let g = garbage.to_str().unwrap();
        // The file is read and parsed like --token (a garbage token is refused as such).
        assert!(matches!(
            parse(&["--peer", "10.0.0.2", "--token-file", g]).unwrap_err(),
            ConfigError::Token(_)
        ));
        std::fs::write(&tf, "x").unwrap();
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = parse(&["--peer", "10.0.0.2", "--token-file", tf.to_str().unwrap()]).unwrap_err();
            assert!(matches!(e, ConfigError::TokenFileMode { .. }), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        let e = parse(&["--peer", "10.0.0.2", "--token-file", "/nonexistent/tok"]).unwrap_err();
        assert!(matches!(e, ConfigError::TokenFile { .. }), "{e}");
        assert!(Args::try_parse_from(["overlayd", "--token", "t", "--token-file", "f"]).is_err());
        assert!(Args::try_parse_from(["overlayd", "--init-cluster", "--token-file", "f"]).is_err());
        // Config keys.
        let p = dir.join("o.toml");
        std::fs::write(
            &p,
            format!("peer = [\"10.0.0.2\"]\nadmin-socket = \"/tmp/y.sock\"\ntoken-file = \"{g}\"\n"),
        )
        .unwrap();
        let e = parse(&["--config", p.to_str().unwrap()]).unwrap_err();
        assert!(matches!(e, ConfigError::Token(_)), "token-file key is read: {e}");
        assert!(matches!(
            parse(&["--config", p.to_str().unwrap(), "--init-cluster"]).unwrap_err(),
            ConfigError::InitWithTokenFile
        ));
        std::fs::write(&p, "peer = [\"10.0.0.2\"]\nadmin-socket = \"/tmp/y.sock\"\n").unwrap();
        assert_eq!(
            parse(&["--config", p.to_str().unwrap()]).unwrap().admin_socket,
            PathBuf::from("/tmp/y.sock")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("overlayd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("o.toml");
        std::fs::write(
            &p,
            "peer = [\"10.0.0.2\", \"10.0.0.3\"]\nvni = 7\nbridge = \"br-x\"\n",
        )
        .unwrap();
        let c = parse(&["--config", p.to_str().unwrap(), "--vni", "9"]).unwrap();
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.vni.get(), 9, "flag wins");
        assert_eq!(c.bridge, "br-x");
        std::fs::write(&p, "peers = [\"10.0.0.2\"]\n").unwrap();
        let e = parse(&["--config", p.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
