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
//! - `node.attest`: the CA-signed [`Attestation`] (postcard) of this node: id, VTEPs, admitter flag, key.
//! - `admitters`: gossip addresses of admitters learned at join, so a member can relay a joiner's request.
//! - `generation`: the last generation used (each start takes a larger one).
//! - `peers`: members' gossip addresses, so a restart re-joins with no `--peer` and no token.
//! - `revoked`: the CA-signed revocation list (postcard), enforced again at every start.
//!
//! Join token (one line): `OVL1-<sha256(ca.crt DER) hex>-<secret hex>`. The joiner pins the member's CA
//! by the fingerprint, and generates its key locally: only its public key leaves the host, with an HMAC
//! of the request under the secret. Must never: log key material or the secret, or write `ca.key` or
//! `join.secret` on a node that is not an admitter.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::net::{IpAddr, SocketAddr};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::attest::{self, Attestation, Signer};
use crate::membership::NodeId;
use crate::revocation::RevocationList;

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

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Constant-time equality for secrets.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a joiner needs: which CA to trust and the secret that proves it was invited.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_fingerprint: [u8; 32],
    pub secret: [u8; 32],
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JoinToken {{ ca_fingerprint: {}, secret: <redacted> }}",
            hex(&self.ca_fingerprint)
        )
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-{}-{}",
            hex(&self.ca_fingerprint),
            hex(&self.secret)
        )
    }
}

impl std::str::FromStr for JoinToken {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        let mut parts = s.trim().split('-');
        if parts.next() != Some(TOKEN_PREFIX) {
            return Err(AuthError::Token(
                "missing OVL1 prefix (token from another version?)",
            ));
        }
        let fp = parts
            .next()
            .and_then(unhex::<32>)
            .ok_or(AuthError::Token("bad CA fingerprint"))?;
        let secret = parts
            .next()
            .and_then(unhex::<32>)
            .ok_or(AuthError::Token("bad secret"))?;
        if parts.next().is_some() {
            return Err(AuthError::Token("trailing data"));
        }
        Ok(JoinToken {
            ca_fingerprint: fp,
            secret,
        })
    }
}

/// The cluster CA, able to issue node certificates.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterCa {{ fingerprint: {} }}", hex(&self.fingerprint()))
    }
}

impl ClusterCa {
    pub fn generate() -> Result<Self, AuthError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "overlayd cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Self::from_pem(&cert_pem, &key_pem, Path::new("<generated>"))
    }

    /// The CA from its certificate and private key (PEM); `path` names the key in errors.
    pub fn from_pem(cert_pem: &str, key_pem: &str, path: &Path) -> Result<Self, AuthError> {
        let corrupt = |reason: String| AuthError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let key = KeyPair::from_pem(key_pem).map_err(|e| corrupt(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| corrupt(e.to_string()))?;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| corrupt(e.to_string()))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
            key_pem: key_pem.to_string(),
        })
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert_der)
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key as an attestation [`Signer`].
    pub fn signer(&self) -> Result<Signer, AuthError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| AuthError::Corrupt {
            path: PathBuf::from(CA_KEY),
            reason: e.to_string(),
        })?;
        Ok(Signer::from_pkcs8(&key.serialize_der())?)
    }

    /// Sign a node certificate for `node` over the joiner's public key (SubjectPublicKeyInfo DER), naming
    /// the VTEP addresses it may use as SAN IP entries.
    pub fn issue(&self, node: NodeId, spki_der: &[u8], vteps: &[IpAddr]) -> Result<String, AuthError> {
        let spki = SubjectPublicKeyInfo::from_der(spki_der)?;
        let mut params = CertificateParams::new(vec![
            CLUSTER_SERVER_NAME.to_string(),
            format!("node-{node}.overlayd"),
        ])?;
        params
            .subject_alt_names
            .extend(vteps.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("overlayd node {node}"));
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        Ok(params.signed_by(&spki, &self.issuer)?.pem())
    }
}

/// This node's credential, ready for rustls.
pub struct NodeCredential {
    pub node_id: NodeId,
    /// [node certificate, CA certificate]: the CA travels in the chain so a joiner can pin it by fingerprint.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca: CertificateDer<'static>,
    /// The CA's statement about this node (id, VTEPs, admitter flag, public key).
    pub attestation: Attestation,
}

impl fmt::Debug for NodeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodeCredential {{ node_id: {}, ca: {} }}",
            self.node_id,
            hex(&fingerprint(&self.ca))
        )
    }
}

impl Clone for NodeCredential {
    fn clone(&self) -> Self {
        NodeCredential {
            node_id: self.node_id,
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
            attestation: self.attestation.clone(),
        }
    }
}

/// A fresh node key pair; the public half goes to the issuing member.
#[derive(Debug)]
pub struct PendingKey {
    key: KeyPair,
}

impl PendingKey {
    pub fn generate() -> Result<Self, AuthError> {
        Ok(PendingKey {
            key: KeyPair::generate()?,
        })
    }
    pub fn spki_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.key)
    }
    /// The uncompressed P-256 point (what an [`Attestation`] names).
    pub fn public_key_raw(&self) -> Vec<u8> {
        self.key.public_key_raw().to_vec()
    }
}

impl NodeCredential {
    /// This node's own key as a signer of its gossip claims.
    pub fn signer(&self) -> Result<Signer, AuthError> {
        Ok(Signer::from_pkcs8(self.key.secret_der())?)
    }

    /// The cluster CA's public key (what every attestation and revocation is checked against).
    pub fn ca_public_key(&self) -> Result<Vec<u8>, AuthError> {
        attest::certificate_public_key(&self.ca).ok_or_else(|| AuthError::Corrupt {
            path: PathBuf::from(CA_CERT),
            reason: "the CA certificate's key is not an ECDSA P-256 key".into(),
        })
    }
}

/// The state directory and everything stored in it.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
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

    /// Persist the revocation list.
    pub fn save_revocations(&self, list: &RevocationList) -> Result<(), AuthError> {
        self.write(REVOKED, &list.to_bytes())
    }

    /// The persisted revocations, each verified under `ca_public_key` (empty if the file does not
    /// exist). A file that does not decode or verify is an error: silently forgetting revocations
    /// would let revoked nodes back in.
    pub fn load_revocations(&self, ca_public_key: &[u8]) -> Result<RevocationList, AuthError> {
        let Some(bytes) = self.read_optional(REVOKED)? else {
            return Ok(RevocationList::default());
        };
        let corrupt = |reason: String| {
            AuthError::CorruptState {
            path: self.file(REVOKED),
            reason,
            fix: "restore it from backup or copy `revoked` from another member's state dir (deleting it forgets every revocation)",
        }
        };
        let entries: Vec<crate::revocation::Revocation> =
            postcard::from_bytes(&bytes).map_err(|e| corrupt(format!("does not decode ({e})")))?;
        let mut list = RevocationList::default();
        for (i, r) in entries.into_iter().enumerate() {
            if !list.contains(r.node) && !list.insert_verified(r, ca_public_key) {
                return Err(corrupt(format!(
                    "entry {} is not signed by this cluster's CA",
                    i + 1
                )));
            }
        }
        Ok(list)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn is_initialised(&self) -> bool {
        self.file(NODE_CERT).exists()
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
        self.write(CA_CERT, ca.cert_pem().as_bytes())?;
        self.write(CA_KEY, ca.key_pem.as_bytes())?;
        self.write(JOIN_SECRET, hex(&secret).as_bytes())?;
        self.store_node(node, &pending, &cert_pem, &attestation)?;
        self.load_credential()
    }

    /// After a successful join: persist this node's key, the certificate and attestation the admitter
    /// issued, and the CA certificate — nothing else. Restarts then need no token.
    pub fn store_joined(
        &self,
        node: NodeId,
        pending: &PendingKey,
        node_cert_pem: &str,
        ca_cert_pem: &str,
        attestation: &Attestation,
    ) -> Result<NodeCredential, AuthError> {
        self.ensure_dir()?;
        // Validate before writing anything.
        CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(|e| AuthError::Corrupt {
            path: self.file(CA_CERT),
            reason: e.to_string(),
        })?;
        self.write(CA_CERT, ca_cert_pem.as_bytes())?;
        self.store_node(node, pending, node_cert_pem, attestation)?;
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

    fn store_node(
        &self,
        node: NodeId,
        pending: &PendingKey,
        cert_pem: &str,
        attestation: &Attestation,
    ) -> Result<(), AuthError> {
        self.write(NODE_KEY, pending.key.serialize_pem().as_bytes())?;
        self.write(NODE_ID, node.to_string().as_bytes())?;
        self.write(NODE_ATTEST, &encode_attestation(attestation))?;
        // node.crt last: its presence marks the state dir as initialised.
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

    /// Remember admitters' gossip addresses (learned at join) for relaying joiners' requests.
    pub fn save_admitters(&self, admitters: &[SocketAddr]) -> Result<(), AuthError> {
        self.ensure_dir()?;
        let text: String = admitters.iter().map(|p| format!("{p}\n")).collect();
        self.write(ADMITTERS, text.as_bytes())
    }

    /// Addresses saved by [`Self::save_admitters`]; empty if none. A line that is not an address is
    /// an error naming the file.
    pub fn load_admitters(&self) -> Result<Vec<SocketAddr>, AuthError> {
        self.load_addrs(
            ADMITTERS,
            "fix or delete the file (it only lists admitters' gossip addresses for relaying joins; it is rewritten at the next join)",
        )
    }

    fn load_addrs(&self, name: &str, fix: &'static str) -> Result<Vec<SocketAddr>, AuthError> {
        let Some(bytes) = self.read_optional(name)? else {
            return Ok(Vec::new());
        };
        let corrupt = |reason: String| AuthError::CorruptState {
            path: self.file(name),
            reason,
            fix,
        };
        let text = String::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text".into()))?;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, l)| {
                l.parse()
                    .map_err(|_| corrupt(format!("entry {} ({l:?}) is not an IP:port address", i + 1)))
            })
            .collect()
    }

    pub fn join_secret(&self) -> Result<[u8; 32], AuthError> {
        let path = self.file(JOIN_SECRET);
        let text = self.read(JOIN_SECRET)?;
        unhex::<32>(text.trim()).ok_or(AuthError::Corrupt {
            path,
            reason: "expected 64 hex digits".into(),
        })
    }

    /// A new generation for this daemon start: greater than any previous one from this state dir even if
    /// the wall clock stepped back (max(previous + 1, Unix time in ms)), persisted before use.
    pub fn next_generation(&self) -> Result<u64, AuthError> {
        self.ensure_dir()?;
        let previous = match self.read_optional(GENERATION)? {
            None => 0,
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| AuthError::CorruptState {
                    path: self.file(GENERATION),
                    reason: "expected one decimal number".into(),
                    fix: "delete it: the next start then takes the current time in milliseconds, which is newer than any generation used unless the clock stepped back",
                })?,
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let next = now_ms.max(previous.saturating_add(1));
        self.write(GENERATION, next.to_string().as_bytes())?;
        Ok(next)
    }

    /// Remember members' gossip addresses (one per line) so a restart can re-join without `--peer`.
    pub fn save_peers(&self, peers: &[std::net::SocketAddr]) -> Result<(), AuthError> {
        let text: String = peers.iter().map(|p| format!("{p}\n")).collect();
        self.write(PEERS, text.as_bytes())
    }

    /// Addresses saved by [`Self::save_peers`]; empty if none. A line that is not an address is an
    /// error naming the file.
    pub fn load_peers(&self) -> Result<Vec<std::net::SocketAddr>, AuthError> {
        self.load_addrs(
            PEERS,
            "fix or delete the file (it only lists members to re-join at start; without it, start with --peer ADDR)",
        )
    }

    /// `overlayctl token`: the one-line join token of this cluster.
    pub fn join_token(&self) -> Result<JoinToken, AuthError> {
        let ca = self.read_cert(CA_CERT)?;
        Ok(JoinToken {
            ca_fingerprint: fingerprint(&ca),
            secret: self.join_secret()?,
        })
    }

    fn ensure_dir(&self) -> Result<(), AuthError> {
        fs::create_dir_all(&self.path).map_err(io_err("create", &self.path))?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &self.path))
    }

    fn read(&self, name: &str) -> Result<String, AuthError> {
        let p = self.file(name);
        match fs::read_to_string(&p) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(AuthError::NotInitialised(self.path.clone()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(AuthError::Corrupt {
                path: p,
                reason: "not UTF-8 text".into(),
            }),
            Err(e) => Err(AuthError::Io {
                what: "read",
                path: p,
                source: e,
            }),
        }
    }

    /// The file's bytes, or None if it does not exist (any other read error is an error).
    fn read_optional(&self, name: &str) -> Result<Option<Vec<u8>>, AuthError> {
        let p = self.file(name);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AuthError::Io {
                what: "read",
                path: p,
                source: e,
            }),
        }
    }

    fn read_cert(&self, name: &str) -> Result<CertificateDer<'static>, AuthError> {
        let pem = self.read(name)?;
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| AuthError::Corrupt {
            path: self.file(name),
            reason: e.to_string(),
        })
    }

    /// Atomic replace: a temp file created with `O_EXCL` and mode 0600 (a leftover from a crash is
    /// removed first; `O_EXCL` refuses to follow a planted symlink), written and fsynced, renamed over
    /// `name`, then the directory fsynced so the rename itself survives a crash.
    fn write(&self, name: &str, data: &[u8]) -> Result<(), AuthError> {
        let p = self.file(name);
        let tmp = self.file(&format!(".{name}.tmp"));
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove stale", &tmp)(e)),
        }
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            // The mode above is filtered by the umask; make it exact.
            f.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io_err("chmod", &tmp))?;
            f.write_all(data).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("sync", &tmp))?;
            fs::rename(&tmp, &p).map_err(io_err("rename into", &p))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        fs::File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory", &self.path))
    }
}

fn encode_attestation(a: &Attestation) -> Vec<u8> {
    // postcard of plain fields cannot fail on a Vec sink.
    postcard::to_allocvec(a).unwrap_or_default()
}

/// Decode a stored attestation; `None` on garbage or trailing bytes. Never panics.
pub fn decode_attestation(bytes: &[u8]) -> Option<Attestation> {
    match postcard::take_from_bytes::<Attestation>(bytes) {
        Ok((a, [])) => Some(a),
        _ => None,
    }
}

/// Read the node id out of a node certificate's SAN (`node-<id>.overlayd`). None if the certificate
/// does not parse or carries no such name.
pub fn node_id_from_cert(der: &[u8]) -> Option<NodeId> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(name) => name
            .strip_prefix("node-")
            .and_then(|r| r.strip_suffix(".overlayd"))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .map(NodeId),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tempdir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "overlayd-auth-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn init_token_reload() {
        let vtep = std::net::IpAddr::from([10, 0, 0, 1]);
        let dir = StateDir::new(tempdir("init")).with_vteps(vec![vtep]);
        let cred = dir.init_cluster(vtep).unwrap();
        assert!(cred.attestation.admitter && cred.attestation.allows_vtep(vtep));
        assert_eq!(cred.attestation.node, cred.node_id);
        let ca_key = cred.ca_public_key().unwrap();
        assert_eq!(cred.attestation.verify(&ca_key), Ok(()));
        assert_eq!(cred.attestation.key, cred.signer().unwrap().public_key());
        assert!(dir.ca_signer().unwrap().is_some());
        // Another VTEP than the attested one: re-attested here (this node holds the CA key).
        let moved = StateDir::new(dir.path()).with_vteps(vec![std::net::IpAddr::from([10, 0, 0, 9])]);
        let c2 = moved.load_credential().unwrap();
        assert!(c2.attestation.allows_vtep(std::net::IpAddr::from([10, 0, 0, 9])));
        assert!(c2.attestation.admitter, "re-issuing keeps the admitter flag");
        let dir = StateDir::new(dir.path()).with_vteps(vec![vtep]);
        // Revocations persist and reload only if CA-signed.
        let mut list = RevocationList::default();
        let ca = dir.ca_signer().unwrap().unwrap();
        assert!(list.insert_verified(
            crate::revocation::Revocation::issue(&ca, NodeId(9)).unwrap(),
            &ca_key
        ));
        dir.save_revocations(&list).unwrap();
        assert!(dir.load_revocations(&ca_key).unwrap().contains(NodeId(9)));
        assert!(matches!(
            dir.init_cluster(vtep),
            Err(AuthError::AlreadyInitialised(_))
        ));
        let again = dir.load_credential().unwrap();
        assert_eq!(cred.node_id, again.node_id);
        assert_eq!(node_id_from_cert(&cred.chain[0]), Some(cred.node_id));
        let token = dir.join_token().unwrap();
        let line = token.to_string();
        assert!(!line.contains('\n'));
        assert_eq!(line.parse::<JoinToken>().unwrap(), token);
        assert_eq!(token.ca_fingerprint, fingerprint(&cred.ca));
        let dir_mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700, "state dir");
        for name in [CA_KEY, NODE_KEY, JOIN_SECRET, NODE_CERT, NODE_ATTEST, REVOKED] {
            let mode = fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        let _ = fs::remove_dir_all(dir.path());
    }

    #[test]
    fn generations_increase() {
        let dir = StateDir::new(tempdir("gen"));
        let a = dir.next_generation().unwrap();
        let b = dir.next_generation().unwrap();
        assert!(b > a);
        fs::write(dir.path().join(GENERATION), (u64::MAX / 2).to_string()).unwrap();
        assert_eq!(
            dir.next_generation().unwrap(),
            u64::MAX / 2 + 1,
            "clock behind the stored value"
        );
        let _ = fs::remove_dir_all(dir.path());
    }

    /// Every state file that fails to parse (garbage, truncated, empty where a value is needed) is an
    /// error that names the file and says what to do; nothing is silently reset.
    #[test]
    fn corrupt_state_files_are_clear_errors() {
        let vtep = std::net::IpAddr::from([10, 0, 0, 1]);
        let dir = StateDir::new(tempdir("corrupt")).with_vteps(vec![vtep]);
        let cred = dir.init_cluster(vtep).unwrap();
        let ca_key = cred.ca_public_key().unwrap();
        let ca = dir.ca_signer().unwrap().unwrap();
        let peer: SocketAddr = "10.0.0.2:7948".parse().unwrap();
        dir.save_peers(&[peer]).unwrap();
        dir.save_admitters(&[peer]).unwrap();
        let mut list = RevocationList::default();
        list.insert_verified(
            crate::revocation::Revocation::issue(&ca, NodeId(9)).unwrap(),
            &ca_key,
        );
        dir.save_revocations(&list).unwrap();
        let generation = dir.next_generation().unwrap();
        let path = |n: &str| dir.path().join(n);
        let pristine: Vec<(&str, Vec<u8>)> = [
            NODE_ID,
            NODE_CERT,
            NODE_KEY,
            NODE_ATTEST,
            CA_CERT,
            CA_KEY,
            JOIN_SECRET,
            GENERATION,
            PEERS,
            ADMITTERS,
            REVOKED,
        ]
        .into_iter()
        .map(|n| (n, fs::read(path(n)).unwrap()))
        .collect();
        // What loading each file means, as the daemon does at start.
        let load = |name: &str| -> Result<(), AuthError> {
            match name {
                GENERATION => dir.next_generation().map(drop),
                PEERS => dir.load_peers().map(drop),
                ADMITTERS => dir.load_admitters().map(drop),
                REVOKED => dir.load_revocations(&ca_key).map(drop),
                JOIN_SECRET => dir.join_token().map(drop),
                CA_KEY => dir.load_ca().map(drop),
                _ => dir.load_credential().map(drop),
            }
        };
        for (name, good) in &pristine {
            let truncated = good[..good.len() / 2].to_vec();
            let mut flipped = good.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x5a;
            let garbage = b"\xff\xfe not a state file \x00".to_vec();
            for (how, bytes) in [
                ("truncated", truncated),
                ("flipped", flipped),
                ("garbage", garbage),
            ] {
                fs::write(path(name), &bytes).unwrap();
                match load(name) {
                    Err(e @ (AuthError::Corrupt { .. } | AuthError::CorruptState { .. })) => {
                        let msg = e.to_string();
                        assert!(msg.contains(name), "{name} {how}: names the file: {msg}");
                        assert!(
                            msg.contains("restore") || msg.contains("delete") || msg.contains("re-join"),
                            "{name} {how}: says what to do: {msg}"
                        );
                    }
                    // A flipped byte inside base64/hex text may still decode to another valid value
                    // (then the signature/fingerprint checks catch it) or leave a PEM parsable.
                    Ok(())
                        if how == "flipped"
                            && [
                                NODE_CERT,
                                CA_CERT,
                                NODE_KEY,
                                CA_KEY,
                                PEERS,
                                ADMITTERS,
                                GENERATION,
                                JOIN_SECRET,
                            ]
                            .contains(name) => {}
                    // Half a decimal number is a smaller number: harmless, the next generation is
                    // max(previous + 1, now in ms).
                    Ok(()) if how == "truncated" && *name == GENERATION => {}
                    // A bad certificate may surface as a mismatch with the attestation or key.
                    Err(AuthError::WrongCaKey(_)) if *name == CA_KEY || *name == CA_CERT => {}
                    other => panic!("{name} {how}: expected a corrupt-file error, got {other:?}"),
                }
            }
            fs::write(path(name), good).unwrap();
        }
        // Restored: everything loads again, and the generation kept increasing.
        assert!(dir.next_generation().unwrap() > generation);
        assert_eq!(dir.load_peers().unwrap(), vec![peer]);
        assert!(dir.load_revocations(&ca_key).unwrap().contains(NodeId(9)));
        dir.load_credential().unwrap();
        // A revocation that does not verify is not silently dropped.
        let rogue = crate::identity::tests::signer();
        let forged = postcard::to_allocvec(&vec![
            crate::revocation::Revocation::issue(&rogue, NodeId(7)).unwrap()
        ])
        .unwrap();
        fs::write(path(REVOKED), forged).unwrap();
        let e = dir.load_revocations(&ca_key).unwrap_err().to_string();
        assert!(e.contains("not signed by this cluster's CA"), "{e}");
        // Missing optional files are fine (a fresh node has none).
        for n in [PEERS, ADMITTERS, REVOKED] {
            fs::remove_file(path(n)).unwrap();
        }
        assert!(dir.load_peers().unwrap().is_empty() && dir.load_admitters().unwrap().is_empty());
        assert!(dir.load_revocations(&ca_key).unwrap().is_empty());
        let _ = fs::remove_dir_all(dir.path());
    }

    /// Writes are atomic and private: mode 0600 even under a permissive umask and over a file that
    /// was 0644, no temp file left behind, a stale temp file (crash) or a symlink planted at the temp
    /// path does not redirect the write.
    #[test]
    fn writes_are_atomic_and_private() {
        let dir = StateDir::new(tempdir("write"));
        dir.ensure_dir().unwrap();
        let target = dir.path().join(PEERS);
        fs::write(&target, "old\n").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        let outside = dir.path().with_extension("outside");
        fs::write(&outside, "untouched").unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join(format!(".{PEERS}.tmp"))).unwrap();
        let peer: SocketAddr = "10.0.0.3:7948".parse().unwrap();
        dir.save_peers(&[peer]).unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "untouched");
        assert_eq!(dir.load_peers().unwrap(), vec![peer]);
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let _ = fs::remove_file(&outside);
        let _ = fs::remove_dir_all(dir.path());
    }

    #[test]
    fn bad_tokens_rejected() {
        for t in [
            "",
            "OVL1",
            "OVL2-00-00",
            &format!("OVL1-{}-{}", "0".repeat(64), "z".repeat(64)),
        ] {
            assert!(t.parse::<JoinToken>().is_err(), "{t}");
        }
    }

    #[test]
    fn uninitialised_dir_says_what_to_do() {
        let dir = StateDir::new(tempdir("none"));
        let e = dir.load_credential().unwrap_err().to_string();
        assert!(e.contains("--init-cluster"), "{e}");
    }

    #[test]
    fn admitter_state_and_promotion() {
        let vtep = std::net::IpAddr::from([10, 0, 0, 1]);
        let a = StateDir::new(tempdir("adm-a"));
        let cred = a.init_cluster(vtep).unwrap();
        assert!(cred.attestation.admitter);
        assert_eq!(cred.attestation.vteps, vec![vtep]);
        assert!(a.ca_signer().unwrap().is_some());
        // A member's state dir: same CA certificate, its own key and attestation, no CA key, no secret.
        let b = StateDir::new(tempdir("adm-b"));
        let ca = a.load_ca().unwrap();
        let pending = PendingKey::generate().unwrap();
        let bvtep = std::net::IpAddr::from([10, 0, 0, 2]);
        let cert = ca.issue(NodeId(2), &pending.spki_der(), &[bvtep]).unwrap();
        let att = Attestation::issue(
            &ca.signer().unwrap(),
            NodeId(2),
            vec![bvtep],
            false,
            pending.public_key_raw(),
        )
        .unwrap();
        let cb = b
            .store_joined(NodeId(2), &pending, &cert, ca.cert_pem(), &att)
            .unwrap();
        assert!(!cb.attestation.admitter);
        assert!(b.ca_signer().unwrap().is_none());
        assert!(matches!(b.load_ca(), Err(AuthError::NotAdmitter(_))));
        assert!(matches!(b.rotate_join_secret(), Err(AuthError::NotAdmitter(_))));
        assert!(!b.path().join(CA_KEY).exists() && !b.path().join(JOIN_SECRET).exists());
        // A member cannot vouch for a new VTEP itself: it must re-join.
        let moved = StateDir::new(b.path()).with_vteps(vec![std::net::IpAddr::from([10, 0, 0, 7])]);
        assert!(matches!(
            moved.load_credential(),
            Err(AuthError::AttestationMismatch { .. })
        ));
        assert!(StateDir::new(b.path())
            .with_vteps(vec![bvtep])
            .load_credential()
            .is_ok());
        // Another cluster's key is refused; the right key promotes, with the token's secret.
        let foreign = ClusterCa::generate().unwrap();
        let e = b
            .promote_admitter(&foreign.key_pem, Path::new("/k"), Some([5; 32]))
            .unwrap_err();
        assert!(
            matches!(e, AuthError::WrongCaKey(_) | AuthError::Corrupt { .. }),
            "{e}"
        );
        assert!(!b.path().join(CA_KEY).exists(), "nothing written on a wrong key");
        let promoted = b
            .promote_admitter(&ca.key_pem, Path::new("/k"), Some([5; 32]))
            .unwrap();
        assert!(promoted.attestation.admitter);
        assert_eq!(promoted.attestation.vteps, vec![bvtep]);
        assert_eq!(b.join_secret().unwrap(), [5; 32]);
        assert!(b.ca_signer().unwrap().is_some());
        // A tampered attestation file makes the credential unloadable rather than trusted.
        let mut bytes = fs::read(b.path().join(NODE_ATTEST)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(b.path().join(NODE_ATTEST), &bytes).unwrap();
        assert!(matches!(b.load_credential(), Err(AuthError::Corrupt { .. })));
        assert_eq!(decode_attestation(&[]), None);
        for d in [&a, &b] {
            let _ = fs::remove_dir_all(d.path());
        }
    }
}
