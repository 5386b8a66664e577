//! Checking [`Options`] into a [`Config`]: every value range, name and combination of flags, with the defaults
//! filled in. Errors name the problem and the fix.

use super::*;
use std::path::Path;

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
        let busy_poll_us = self.busy_poll_us.unwrap_or(DEFAULT_BUSY_POLL_US);
        if busy_poll_us > MAX_BUSY_POLL_US {
            return Err(ConfigError::BusyPollUs(busy_poll_us));
        }
        let busy_poll_spin = self.busy_poll_spin.unwrap_or_default();
        let worker_loops = self.worker_loops.unwrap_or_default();
        if busy_poll_us > 0 && worker_loops == WorkerLoops::Combined {
            match busy_poll_spin {
                BusyPollSpin::Keepers => {}
                BusyPollSpin::Loops => return Err(ConfigError::BusyPollSpinCombined("loops")),
                BusyPollSpin::Both => return Err(ConfigError::BusyPollSpinCombined("both")),
            }
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
            busy_poll_us,
            busy_poll_spin,
            worker_loops,
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
