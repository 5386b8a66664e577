//! Cluster identity material: the cluster CA, node credentials, the join secret and join tokens, and
//! their persistence under the state dir (default `/var/lib/overlayd`).
//!
//! Layout (every file 0600, written atomically: a temp file created with `O_EXCL`, written, fsynced,
//! renamed over the old file, then the directory fsynced; a corrupt file is an error naming the file
//! and the fix, never a silent reset):
//! - `ca.crt`: the cluster CA certificate (ECDSA P-256), on every member.
//! - `ca.key` and `join.secret`: **admitters only** — the node started with `--init-cluster` and any node
//!   started with `--admitter --ca-key-file PATH`. A joiner never receives either: it sends a signing
//!   request and gets back its certificate and attestation (see [`crate::join`]).
//! - `node.crt` / `node.key` / `node.id`: this node's credential. The certificate's SAN carries `overlayd`,
//!   `node-<id>.overlayd` and the VTEP address(es) the node may use (IP entries).
//! - `node.attest`: the CA-signed [`Attestation`](crate::attest::Attestation) (postcard) of this node: id, VTEPs, admitter flag, key.
//! - `admitters`: gossip addresses of admitters learned at join, so a member can relay a joiner's request.
//! - `generation`: the last generation used (each start takes a larger one).
//! - `peers`: members' gossip addresses, so a restart re-joins with no `--peer` and no token.
//! - `revoked`: the CA-signed revocation list (postcard), enforced again at every start.
//!
//! Join token (one line): `OVL1-<sha256(ca.crt DER) hex>-<secret hex>`. The joiner pins the member's CA
//! by the fingerprint, and generates its key locally: only its public key leaves the host, with an HMAC
//! of the request under the secret. Must never: log key material or the secret, or write `ca.key` or
//! `join.secret` on a node that is not an admitter.

mod ca;
mod credential;
mod files;
mod records;
mod state_dir;
mod token;

pub use ca::ClusterCa;
pub use credential::{decode_attestation, node_id_from_cert, NodeCredential, PendingKey};
pub use state_dir::StateDir;
pub use token::{fingerprint, secrets_equal, JoinToken};

use std::path::{Path, PathBuf};

use crate::attest;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/overlayd";
/// DNS name every node certificate carries; the TLS server name used between members.
pub const CLUSTER_SERVER_NAME: &str = "overlayd";

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const NODE_CERT: &str = "node.crt";
const NODE_KEY: &str = "node.key";
const NODE_ID: &str = "node.id";
const NODE_ATTEST: &str = "node.attest";
const ADMITTERS: &str = "admitters";
const JOIN_SECRET: &str = "join.secret";
const GENERATION: &str = "generation";
const PEERS: &str = "peers";
const REVOKED: &str = "revoked";
const TOKEN_PREFIX: &str = "OVL1";

/// Why credentials could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot {what} {path}: {source} (check that the state dir exists and is writable by overlayd, usually root)")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} is already initialised; remove it to create a new cluster, or start without --init-cluster"
    )]
    AlreadyInitialised(PathBuf),
    #[error("no credential in {0}: run `overlayd --init-cluster` on the first host or join with `--peer ADDR --token TOKEN`")]
    NotInitialised(PathBuf),
    #[error(
        "{0} holds a CA key (ca.key) but no node credential, as an interrupted `--init-cluster` leaves it; \
         joining would keep that key beside another cluster's certificate: remove the directory, then join again"
    )]
    LeftoverCaKey(PathBuf),
    #[error("corrupt credential file {path}: {reason} (restore it from backup or re-join the node)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("corrupt state file {path}: {reason}; {fix}")]
    CorruptState {
        path: PathBuf,
        reason: String,
        fix: &'static str,
    },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("invalid join token: {0} (copy the whole line printed by `overlayctl token`)")]
    Token(&'static str),
    #[error("no randomness available from the OS: {0}")]
    Random(String),
    #[error("cannot sign: {0}")]
    Attest(#[from] attest::AttestError),
    #[error("{0} is not the private key of this cluster's CA (copy `ca.key` from the state dir of the node started with --init-cluster)")]
    WrongCaKey(PathBuf),
    #[error("this node is not an admitter (no CA key in {0}); run the command on an admitter: the --init-cluster node or one started with --admitter --ca-key-file")]
    NotAdmitter(PathBuf),
    #[error("{path} does not vouch for this node ({reason}); the VTEP address changed or the file is stale: re-join the node with a new token and an empty state dir")]
    AttestationMismatch { path: PathBuf, reason: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AuthError + 'a {
    move |source| AuthError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
pub(crate) mod tests;
