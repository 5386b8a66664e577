//! The state directory and this node's identity in it: creating a cluster, storing a joined credential,
//! promotion to admitter, loading (and checking) the credential, the CA and the join secret.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use rcgen::KeyPair;

use super::ca::ClusterCa;
use super::credential::{decode_attestation, encode_attestation, NodeCredential, PendingKey};
use super::records::addr_lines;
use super::token::{fingerprint, hex, random, unhex, JoinToken};
use super::{
    io_err, AuthError, ADMITTERS, CA_CERT, CA_KEY, JOIN_SECRET, NODE_ATTEST, NODE_CERT, NODE_ID, NODE_KEY,
};
use crate::attest::{self, Attestation, Signer};
use crate::membership::NodeId;

/// The state directory and everything stored in it.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub(super) path: PathBuf,
    /// The VTEP addresses this node is configured with: [`Self::load_credential`] checks that its
    /// attestation lists them (peers drop claims from an address the attestation does not name).
    vteps: Vec<IpAddr>,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateDir {
            path: path.into(),
            vteps: Vec::new(),
        }
    }

    /// The addresses this node will claim (its VTEP first, then its gossip address's IP if that
    /// differs); requested at join or init and checked against `node.attest` at load.
    pub fn with_vteps(mut self, vteps: Vec<IpAddr>) -> Self {
        self.vteps = vteps;
        self
    }

    /// What this node asks to be attested for: `vtep`, then the [`Self::with_vteps`] addresses, without
    /// repeats, at most [`attest::MAX_VTEPS`].
    pub fn claimed_vteps(&self, vtep: IpAddr) -> Vec<IpAddr> {
        let mut v = vec![vtep];
        for a in &self.vteps {
            if !v.contains(a) {
                v.push(*a);
            }
        }
        v.truncate(attest::MAX_VTEPS);
        v
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn is_initialised(&self) -> bool {
        self.file(NODE_CERT).exists()
    }

    /// Before a join: refuse a dir that holds a CA key but no credential (what an interrupted
    /// `--init-cluster` leaves). Joining would store the joined cluster's certificate beside that key,
    /// and the next start would take the node for an admitter whose key signs nothing the cluster accepts.
    pub fn check_joinable(&self) -> Result<(), AuthError> {
        if self.file(CA_KEY).exists() {
            return Err(AuthError::LeftoverCaKey(self.path.clone()));
        }
        Ok(())
    }

    /// `overlayd --init-cluster`: create the CA, the join secret and this node's credential. The first node
    /// is an admitter: its attestation says so, and it keeps `ca.key` and `join.secret`.
    pub fn init_cluster(&self, vtep: IpAddr) -> Result<NodeCredential, AuthError> {
        if self.is_initialised() || self.file(CA_KEY).exists() {
            return Err(AuthError::AlreadyInitialised(self.path.clone()));
        }
        self.ensure_dir()?;
        let ca = ClusterCa::generate()?;
        let secret: [u8; 32] = random()?;
        let node = NodeId(u64::from_le_bytes(random()?));
        let pending = PendingKey::generate()?;
        let vteps = self.claimed_vteps(vtep);
        let cert_pem = ca.issue(node, &pending.spki_der(), &vteps)?;
        let attestation = Attestation::issue(&ca.signer()?, node, vteps, true, pending.public_key_raw())?;
        let secret_hex = hex(&secret);
        self.store_node(
            node,
            &pending,
            &cert_pem,
            &attestation,
            &[
                (CA_CERT, ca.cert_pem().as_bytes()),
                (CA_KEY, ca.key_pem.as_bytes()),
                (JOIN_SECRET, secret_hex.as_bytes()),
            ],
        )?;
        self.load_credential()
    }

    /// After a successful join: persist this node's key, the certificate and attestation the admitter
    /// issued, the CA certificate and the admitters named in the grant (see
    /// [`Self::save_admitters`]) — nothing else. Restarts then need no token.
    pub fn store_joined(
        &self,
        node: NodeId,
        pending: &PendingKey,
        node_cert_pem: &str,
        ca_cert_pem: &str,
        attestation: &Attestation,
        admitters: &[SocketAddr],
    ) -> Result<NodeCredential, AuthError> {
        self.ensure_dir()?;
        // Validate before writing anything.
        CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(|e| AuthError::Corrupt {
            path: self.file(CA_CERT),
            reason: e.to_string(),
        })?;
        let admitters = addr_lines(admitters);
        self.store_node(
            node,
            pending,
            node_cert_pem,
            attestation,
            &[
                (CA_CERT, ca_cert_pem.as_bytes()),
                (ADMITTERS, admitters.as_bytes()),
            ],
        )?;
        self.load_credential()
    }

    /// `overlayd --admitter --ca-key-file PATH`: make this member an admitter. The key must be this
    /// cluster's CA key (its public half equals `ca.crt`'s). The join secret comes from `secret` (the
    /// token's, when given) or an existing `join.secret`. The attestation is re-issued with
    /// `admitter: true`, signed with that key.
    pub fn promote_admitter(
        &self,
        ca_key_pem: &str,
        key_path: &Path,
        secret: Option<[u8; 32]>,
    ) -> Result<NodeCredential, AuthError> {
        let cred = self.load_credential()?;
        let ca = ClusterCa::from_pem(&self.read(CA_CERT)?, ca_key_pem, key_path)?;
        let signer = ca.signer()?;
        if attest::certificate_public_key(ca.cert_der()).as_deref() != Some(&signer.public_key()[..]) {
            return Err(AuthError::WrongCaKey(key_path.to_path_buf()));
        }
        let secret = match secret {
            Some(s) => s,
            None => self.join_secret()?,
        };
        let a = &cred.attestation;
        let attestation = Attestation::issue(&signer, a.node, a.vteps.clone(), true, a.key.clone())?;
        self.write(CA_KEY, ca_key_pem.as_bytes())?;
        self.write(JOIN_SECRET, hex(&secret).as_bytes())?;
        self.write(NODE_ATTEST, &encode_attestation(&attestation))?;
        self.load_credential()
    }

    /// This node's key, id and attestation, with `others` (CA certificate, ...), in one batch; then
    /// `node.crt` in its own: its presence marks the state dir as initialised, so it becomes durable
    /// only after everything else is.
    fn store_node(
        &self,
        node: NodeId,
        pending: &PendingKey,
        cert_pem: &str,
        attestation: &Attestation,
        others: &[(&str, &[u8])],
    ) -> Result<(), AuthError> {
        let key = pending.key.serialize_pem();
        let id = node.to_string();
        let attest = encode_attestation(attestation);
        let mut batch = others.to_vec();
        batch.extend_from_slice(&[
            (NODE_KEY, key.as_bytes()),
            (NODE_ID, id.as_bytes()),
            (NODE_ATTEST, &attest[..]),
        ]);
        self.write_batch(&batch)?;
        self.write(NODE_CERT, cert_pem.as_bytes())
    }

    pub fn load_credential(&self) -> Result<NodeCredential, AuthError> {
        if !self.is_initialised() {
            return Err(AuthError::NotInitialised(self.path.clone()));
        }
        let node_id_path = self.file(NODE_ID);
        let id_text = self.read(NODE_ID)?;
        let node_id =
            u64::from_str_radix(id_text.trim(), 16)
                .map(NodeId)
                .map_err(|e| AuthError::Corrupt {
                    path: node_id_path,
                    reason: e.to_string(),
                })?;
        let cert = self.read_cert(NODE_CERT)?;
        let ca = self.read_cert(CA_CERT)?;
        let key_path = self.file(NODE_KEY);
        let key_pem = self.read(NODE_KEY)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| AuthError::Corrupt {
            path: key_path,
            reason: e.to_string(),
        })?;
        let attest_path = self.file(NODE_ATTEST);
        let bytes = fs::read(&attest_path).map_err(io_err("read", &attest_path))?;
        let attestation = decode_attestation(&bytes).ok_or_else(|| AuthError::Corrupt {
            path: attest_path.clone(),
            reason: "not an attestation".into(),
        })?;
        let ca_key = attest::certificate_public_key(&ca);
        let valid = ca_key.is_some_and(|k| attestation.verify(&k).is_ok());
        if !valid || attestation.node != node_id || attestation.key != key.public_key_raw() {
            return Err(AuthError::Corrupt {
                path: attest_path,
                reason: format!(
                    "the attestation does not match this node's id ({NODE_ID}), key ({NODE_KEY}) or CA ({CA_CERT}); one of them is damaged or from another node"
                ),
            });
        }
        let attestation = self.check_vteps(attestation)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(NodeCredential {
            node_id,
            chain: vec![cert, ca.clone()],
            key,
            ca,
            attestation,
        })
    }

    /// `attestation` if it lists every configured VTEP ([`Self::with_vteps`]). Otherwise an admitter
    /// (CA key here) re-issues it for the new addresses, keeping its admitter flag; any other member
    /// must re-join (only an admitter can vouch for a new address).
    fn check_vteps(&self, attestation: Attestation) -> Result<Attestation, AuthError> {
        let Some(missing) = self.vteps.iter().find(|v| !attestation.allows_vtep(**v)) else {
            return Ok(attestation);
        };
        let path = self.file(NODE_ATTEST);
        let Some(ca) = self.ca_signer()? else {
            return Err(AuthError::AttestationMismatch {
                path,
                reason: format!("it does not list address {missing}"),
            });
        };
        let vteps = self.claimed_vteps(self.vteps[0]);
        let a = &attestation;
        let reissued = Attestation::issue(&ca, a.node, vteps, a.admitter, a.key.clone())?;
        self.write(NODE_ATTEST, &encode_attestation(&reissued))?;
        Ok(reissued)
    }

    /// The CA (certificate and key). Only admitters have the key: elsewhere this is `NotAdmitter`.
    pub fn load_ca(&self) -> Result<ClusterCa, AuthError> {
        if !self.file(CA_KEY).exists() {
            return Err(AuthError::NotAdmitter(self.path.clone()));
        }
        let cert = self.read(CA_CERT)?;
        let key = self.read(CA_KEY)?;
        ClusterCa::from_pem(&cert, &key, &self.file(CA_KEY))
    }

    /// The CA key as a signer on an admitter (CA key present), `None` on every other member.
    pub fn ca_signer(&self) -> Result<Option<Signer>, AuthError> {
        match self.load_ca() {
            Ok(ca) => Ok(Some(ca.signer()?)),
            Err(AuthError::NotAdmitter(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `overlayctl token --rotate`: persist a new join secret (admitters only) and return it. The caller
    /// swaps it into the running admission only after this returned, so a crash never loses it.
    pub fn rotate_join_secret(&self) -> Result<[u8; 32], AuthError> {
        if !self.file(CA_KEY).exists() {
            return Err(AuthError::NotAdmitter(self.path.clone()));
        }
        let secret: [u8; 32] = random()?;
        self.write(JOIN_SECRET, hex(&secret).as_bytes())?;
        Ok(secret)
    }

    pub fn join_secret(&self) -> Result<[u8; 32], AuthError> {
        let path = self.file(JOIN_SECRET);
        let text = self.read(JOIN_SECRET)?;
        unhex::<32>(text.trim()).ok_or(AuthError::Corrupt {
            path,
            reason: "expected 64 hex digits".into(),
        })
    }

    /// `overlayctl token`: the one-line join token of this cluster.
    pub fn join_token(&self) -> Result<JoinToken, AuthError> {
        let ca = self.read_cert(CA_CERT)?;
        Ok(JoinToken {
            ca_fingerprint: fingerprint(&ca),
            secret: self.join_secret()?,
        })
    }
}
