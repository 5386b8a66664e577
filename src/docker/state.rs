//! The Docker driver's persistent state, `<state-dir>/docker.json`: which cluster network each Docker network
//! id stands for, and each endpoint's network, address, MAC and veth names. Docker calls CreateEndpoint, Join,
//! Leave and DeleteEndpoint across an overlayd restart, so this must survive one. Written atomically
//! (temporary file + rename) after every change; a file that does not parse is refused at start with the
//! path to fix rather than silently forgotten (its veths would leak).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name under the state dir.
pub const STATE_FILE: &str = "docker.json";
/// Bound on the file size read back.
const MAX_STATE: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read Docker driver state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("Docker driver state {path} is malformed ({what}): fix or remove it (its endpoints' veths must then be deleted by hand)")]
    Malformed { path: PathBuf, what: String },
    #[error("cannot write Docker driver state {path}: {source} (is the state dir writable?)")]
    Write { path: PathBuf, source: std::io::Error },
}

/// One Docker endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    /// The cluster network.
    pub network: String,
    /// Address with prefix length, as Docker gave it in CreateEndpoint.
    pub address: String,
    /// `02:…` MAC of the container interface.
    pub mac: String,
    pub host_ifname: String,
    pub peer_ifname: String,
    /// Whether the veth pair exists (between Join and Leave).
    pub joined: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Docker network id → cluster network name.
    pub networks: BTreeMap<String, String>,
    /// Docker endpoint id → endpoint.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Subnet → cluster network name, from `--ipam-opt network=NAME` (IPAM RequestPool comes before
    /// CreateNetwork, which does not see IPAM options).
    #[serde(default)]
    pub named_pools: BTreeMap<String, String>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

impl State {
    /// Load `<dir>/docker.json`, or an empty state (persisted there) if it does not exist.
    pub fn load(dir: &Path) -> Result<State, StateError> {
        let path = dir.join(STATE_FILE);
        let mut s = match std::fs::File::open(&path) {
            Ok(f) => {
                use std::io::Read;
                let mut text = String::new();
                f.take(MAX_STATE + 1)
                    .read_to_string(&mut text)
                    .map_err(|source| StateError::Read {
                        path: path.clone(),
                        source,
                    })?;
                if text.len() as u64 > MAX_STATE {
                    return Err(StateError::Malformed {
                        path,
                        what: "larger than 16 MiB".into(),
                    });
                }
                let s: State = serde_json::from_str(&text).map_err(|e| StateError::Malformed {
                    path: path.clone(),
                    what: e.to_string(),
                })?;
                s.validate().map_err(|what| StateError::Malformed {
                    path: path.clone(),
                    what,
                })?;
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        s.path = Some(path);
        Ok(s)
    }

    /// Fields that end up in netlink calls must still be valid names.
    fn validate(&self) -> Result<(), String> {
        for (id, e) in &self.endpoints {
            for n in [&e.host_ifname, &e.peer_ifname] {
                if !crate::cni::valid_ifname(n) {
                    return Err(format!("endpoint {id}: bad interface name {n:?}"));
                }
            }
            if !crate::cni::valid_network_name(&e.network) {
                return Err(format!("endpoint {id}: bad network name {:?}", e.network));
            }
        }
        Ok(())
    }

    /// Write the state (no-op for an in-memory state).
    pub fn save(&self) -> Result<(), StateError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("json.tmp");
        let w = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| w(std::io::Error::other(e)))?;
        std::fs::write(&tmp, text).map_err(w)?;
        std::fs::rename(&tmp, path).map_err(w)
    }
}
