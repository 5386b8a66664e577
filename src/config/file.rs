//! The config file both ways: parse a TOML file into [`Options`] (naming the line of an unknown key or a bad
//! value), merge it under the flags key by key, and print a [`Config`] back as a file (`--print-config`).

use super::{Cluster, Config, ConfigError, NetworkSpec, Options};
use std::path::Path;

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
            busy_poll_us: Some(self.busy_poll_us),
            busy_poll_spin: Some(self.busy_poll_spin),
            worker_loops: Some(self.worker_loops),
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
