//! What the daemon can be asked to do to its networks and containers, in one place shared by every front
//! end: the admin API (`overlayctl`, `overlayd-cni`) and the Docker driver ([`crate::docker`]). Each
//! operation has exactly one implementation here; the front ends only translate requests and errors.
//!
//! - `networks.rs`: create, remove and list networks (cluster mode: through the control plane, which every
//!   member follows; static mode: declared by `--network`, so create/rm are refused naming the flag).
//! - `attach.rs`: attach and detach namespaces, list attachments, allocate and release addresses from this
//!   host's IPAM blocks (shared by attach and Docker's IPAM driver), egress.
//!
//! Everything that blocks (netlink, setns, nft, state files) runs in `spawn_blocking`; callers are async.

pub mod networks;

use crate::attach::Attachments;

mod attach;
use crate::networks::Networks;
pub use attach::{AttachRequest, DetachRequest, Reservations, RESERVATIONS_FILE};
use control::transport::GossipClient;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Shared by the admin API, the Docker driver and the cluster glue.
#[derive(Debug)]
pub struct Ops {
    /// The networks this host serves (devices, FDB, flood sets).
    pub networks: Arc<Networks>,
    /// Namespaces attached to them (persisted in the state dir).
    pub attachments: Arc<Attachments>,
    /// The control plane, set once it runs; never set in static mode.
    pub control: OnceLock<GossipClient>,
    pub cluster_mode: bool,
    /// This host's IPAM blocks per network name, as the control plane granted them (`BlockGranted` /
    /// `BlockReleased`, kept by the cluster glue); empty in static mode.
    pub blocks: Mutex<BTreeMap<String, Vec<IpNet>>>,
    /// Addresses handed out without an attachment (Docker's IPAM driver), persisted in the state dir; its
    /// lock also serialises every address allocation of this host.
    pub reservations: Mutex<Reservations>,
}

impl Ops {
    /// This host's blocks of `network`.
    pub fn blocks_of(&self, network: &str) -> Vec<IpNet> {
        let b = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
        b.get(network).cloned().unwrap_or_default()
    }

    pub fn new(networks: Arc<Networks>, attachments: Arc<Attachments>, cluster_mode: bool) -> Ops {
        let reservations = Reservations::open(attachments.state_dir());
        Ops {
            networks,
            attachments,
            reservations: Mutex::new(reservations),
            control: OnceLock::new(),
            cluster_mode,
            blocks: Mutex::default(),
        }
    }

    /// The control plane, or `Unavailable` (cluster mode, still starting) / `Conflict` (static mode) naming
    /// what to do.
    pub fn control(&self) -> Result<&GossipClient, OpsError> {
        match (self.control.get(), self.cluster_mode) {
            (Some(c), _) => Ok(c),
            (None, true) => Err(OpsError::Unavailable(
                "the control plane is still starting: retry in a moment".into(),
            )),
            (None, false) => Err(OpsError::Conflict(
                "this overlayd runs in static mode: networks are declared with --network NAME:VNI[:SUBNET] (or [[network]] in the config); start it in cluster mode (--init-cluster / --token-file) to create them at run time".into(),
            )),
        }
    }
}

/// Why an operation failed; every message says what to do. Maps onto HTTP statuses for the admin API and
/// onto Docker's and CNI's error forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Retry later (no admitter reachable for a block, control plane starting).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl OpsError {
    pub fn http_status(&self) -> u16 {
        match self {
            OpsError::BadRequest(_) => 400,
            OpsError::NotFound(_) => 404,
            OpsError::Conflict(_) => 409,
            OpsError::Unavailable(_) => 503,
            OpsError::Internal(_) => 500,
        }
    }
}
