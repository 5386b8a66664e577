//! Cluster identity material: the cluster CA, node credentials, the join secret and join tokens, and
//! their persistence under the state dir (default `/var/lib/overlayd`).
//!
//! Layout (every file 0600, written atomically via a temp file + rename):
//! - `ca.crt` / `ca.key`: the cluster CA (ECDSA P-256). Every member keeps the CA key so that a joiner
//!   can be admitted through *any* member (the issue's `--peer <ANY-MEMBER>`); the trade-off is that a
//!   compromised member can mint credentials. Keeping the key on a subset ("managers") is future work.
//! - `node.crt` / `node.key`: this node's credential, SAN = `overlayd` + `node-<id>.overlayd`.
//! - `join.secret`: 32 random bytes; together with the CA fingerprint it forms the join token.
//! - `generation`: the last generation used (each start takes a larger one).
//! - `peers`: members' gossip addresses, so a restart re-joins with no `--peer` and no token.
//! - `node.attest`: this node's CA-signed [`Attestation`] (postcard): node id, VTEP addresses, admitter
//!   flag, node public key. It rides inside every gossiped identity.
//! - `revoked`: the CA-signed revocation list (postcard), enforced again at every start.
//!
//! Join token (one line): `OVL1-<sha256(ca.crt DER) hex>-<secret hex>`. The joiner pins the member's CA
//! by the fingerprint before revealing the secret, and generates its key locally: only its public key
//! is sent to the member, which signs it. Must never: log key material or the secret.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SubjectPublicKeyInfo,
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
const JOIN_SECRET: &str = "join.secret";
const GENERATION: &str = "generation";
const PEERS: &str = "peers";
const NODE_ATTEST: &str = "node.attest";
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
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("invalid join token: {0} (copy the whole line printed by `overlayctl token`)")]
    Token(&'static str),
    #[error("no randomness available from the OS: {0}")]
    Random(String),
    #[error("cannot attest this node: {0}")]
    Attest(#[from] attest::AttestError),
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

    fn from_pem(cert_pem: &str, key_pem: &str, path: &Path) -> Result<Self, AuthError> {
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

    /// PEM of the CA key, handed to an admitted joiner (see the module doc for the trade-off).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Sign a node certificate for `node` over the joiner's public key (SubjectPublicKeyInfo DER).
    pub fn issue(&self, node: NodeId, spki_der: &[u8]) -> Result<String, AuthError> {
        let spki = SubjectPublicKeyInfo::from_der(spki_der)?;
        let mut params = CertificateParams::new(vec![
            CLUSTER_SERVER_NAME.to_string(),
            format!("node-{node}.overlayd"),
        ])?;
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
    /// The CA's attestation of this node (see [`crate::attest`]); persisted as `node.attest`.
    pub attestation: Attestation,
    /// [node certificate, CA certificate]: the CA travels in the chain so a joiner can pin it by fingerprint.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca: CertificateDer<'static>,
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
            attestation: self.attestation.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
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
    /// The VTEP (and gossip) addresses this node claims, written into its attestation when one is issued
    /// here. Interim: the admission branch moves issuing to the admitter (the joiner sends its VTEPs).
    vteps: Vec<std::net::IpAddr>,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateDir {
            path: path.into(),
            vteps: Vec::new(),
        }
    }

    /// The addresses this node will claim (its VTEP first); needed to create or check `node.attest`.
    pub fn with_vteps(mut self, vteps: Vec<std::net::IpAddr>) -> Self {
        self.vteps = vteps;
        self
    }

    /// The CA key as a signer, on a node that holds it (an admitter); `None` elsewhere.
    pub fn ca_signer(&self) -> Result<Option<Signer>, AuthError> {
        let pem = match self.read(CA_KEY) {
            Ok(p) => p,
            Err(AuthError::NotInitialised(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = KeyPair::from_pem(&pem).map_err(|e| AuthError::Corrupt {
            path: self.file(CA_KEY),
            reason: e.to_string(),
        })?;
        Ok(Some(Signer::from_pkcs8(&key.serialize_der())?))
    }

    /// Issue and store this node's attestation with the CA key held here.
    fn attest_self(&self, node: NodeId, admitter: bool) -> Result<(), AuthError> {
        let ca = self
            .ca_signer()?
            .ok_or(AuthError::NotInitialised(self.path.clone()))?;
        let key_pem = self.read(NODE_KEY)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| AuthError::Corrupt {
            path: self.file(NODE_KEY),
            reason: e.to_string(),
        })?;
        let public = Signer::from_pkcs8(&key.serialize_der())?.public_key();
        let mut vteps = self.vteps.clone();
        vteps.dedup();
        let a = Attestation::issue(&ca, node, vteps, admitter, public)?;
        self.write(NODE_ATTEST, &postcard::to_allocvec(&a).unwrap_or_default())
    }

    /// Persist the revocation list.
    pub fn save_revocations(&self, list: &RevocationList) -> Result<(), AuthError> {
        self.write(REVOKED, &list.to_bytes())
    }

    /// The persisted revocations that verify under `ca_public_key` (empty if none).
    pub fn load_revocations(&self, ca_public_key: &[u8]) -> RevocationList {
        fs::read(self.file(REVOKED))
            .ok()
            .and_then(|b| RevocationList::from_bytes(&b, ca_public_key).ok())
            .unwrap_or_default()
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

    /// `overlayd --init-cluster`: create the CA, the join secret and this node's credential.
    pub fn init_cluster(&self) -> Result<NodeCredential, AuthError> {
        if self.is_initialised() || self.file(CA_KEY).exists() {
            return Err(AuthError::AlreadyInitialised(self.path.clone()));
        }
        self.ensure_dir()?;
        let ca = ClusterCa::generate()?;
        let secret: [u8; 32] = random()?;
        let node = NodeId(u64::from_le_bytes(random()?));
        let pending = PendingKey::generate()?;
        let cert_pem = ca.issue(node, &pending.spki_der())?;
        self.write(CA_CERT, ca.cert_pem().as_bytes())?;
        self.write(CA_KEY, ca.key_pem().as_bytes())?;
        self.write(JOIN_SECRET, hex(&secret).as_bytes())?;
        self.write(NODE_KEY, pending.key.serialize_pem().as_bytes())?;
        self.attest_self(node, true)?;
        self.store_node(node, &pending, &cert_pem)?;
        self.load_credential()
    }

    /// After a successful join: persist what the member handed over. Restarts then need no token.
    pub fn store_joined(
        &self,
        node: NodeId,
        pending: &PendingKey,
        node_cert_pem: &str,
        ca_cert_pem: &str,
        ca_key_pem: &str,
        secret: &[u8; 32],
    ) -> Result<NodeCredential, AuthError> {
        self.ensure_dir()?;
        // Validate before writing anything.
        ClusterCa::from_pem(ca_cert_pem, ca_key_pem, &self.file(CA_KEY))?;
        self.write(CA_CERT, ca_cert_pem.as_bytes())?;
        self.write(CA_KEY, ca_key_pem.as_bytes())?;
        self.write(JOIN_SECRET, hex(secret).as_bytes())?;
        self.write(NODE_KEY, pending.key.serialize_pem().as_bytes())?;
        self.attest_self(node, false)?;
        self.store_node(node, pending, node_cert_pem)?;
        self.load_credential()
    }

    fn store_node(&self, node: NodeId, pending: &PendingKey, cert_pem: &str) -> Result<(), AuthError> {
        self.write(NODE_KEY, pending.key.serialize_pem().as_bytes())?;
        self.write(NODE_ID, node.to_string().as_bytes())?;
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
        let signer = Signer::from_pkcs8(&key.serialize_der())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let attestation = self.load_attestation(node_id, &signer)?;
        Ok(NodeCredential {
            node_id,
            attestation,
            chain: vec![cert, ca.clone()],
            key,
            ca,
        })
    }

    /// `node.attest`, checked against this node's id, key and claimed VTEPs. A state dir from before
    /// attestations existed, or whose VTEP changed, gets a new one if the CA key is here.
    fn load_attestation(&self, node: NodeId, signer: &Signer) -> Result<Attestation, AuthError> {
        let path = self.file(NODE_ATTEST);
        let check = |a: &Attestation| -> Result<(), String> {
            if a.node != node {
                return Err(format!("it names node {}", a.node));
            }
            if a.key != signer.public_key() {
                return Err("it names another key".into());
            }
            match self.vteps.iter().find(|v| !a.allows_vtep(**v)) {
                Some(v) => Err(format!("it does not list address {v}")),
                None => Ok(()),
            }
        };
        let current = match fs::read(&path) {
            Ok(b) => Some(
                postcard::from_bytes::<Attestation>(&b).map_err(|e| AuthError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            ),
            Err(_) => None,
        };
        let reason = match &current {
            Some(a) => match check(a) {
                Ok(()) => return Ok(a.clone()),
                Err(r) => r,
            },
            None => "it is missing".into(),
        };
        if !self.vteps.is_empty() && self.ca_signer()?.is_some() {
            // A state dir from before attestations: every member then held the CA key and the join
            // secret, i.e. could admit, so it stays an admitter (the admission work narrows this).
            let admitter = current
                .as_ref()
                .map_or(self.file(JOIN_SECRET).exists(), |a| a.admitter);
            self.attest_self(node, admitter)?;
            let b = fs::read(&path).map_err(io_err("read", &path))?;
            return postcard::from_bytes(&b).map_err(|e| AuthError::Corrupt {
                path,
                reason: e.to_string(),
            });
        }
        Err(AuthError::AttestationMismatch { path, reason })
    }

    pub fn load_ca(&self) -> Result<ClusterCa, AuthError> {
        let cert = self.read(CA_CERT)?;
        let key = self.read(CA_KEY)?;
        ClusterCa::from_pem(&cert, &key, &self.file(CA_KEY))
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
        let previous = match fs::read_to_string(self.file(GENERATION)) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(_) => 0,
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

    /// Addresses saved by [`Self::save_peers`]; empty if none. Unparsable lines are skipped.
    pub fn load_peers(&self) -> Vec<std::net::SocketAddr> {
        fs::read_to_string(self.file(PEERS))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
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

    fn write(&self, name: &str, data: &[u8]) -> Result<(), AuthError> {
        let p = self.file(name);
        let tmp = self.file(&format!(".{name}.tmp"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, &p).map_err(io_err("rename into", &p))
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
        let cred = dir.init_cluster().unwrap();
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
        let dir = StateDir::new(dir.path()).with_vteps(vec![vtep]);
        // Revocations persist and reload only if CA-signed.
        let mut list = RevocationList::default();
        let ca = dir.ca_signer().unwrap().unwrap();
        assert!(list.insert_verified(
            crate::revocation::Revocation::issue(&ca, NodeId(9)).unwrap(),
            &ca_key
        ));
        dir.save_revocations(&list).unwrap();
        assert!(dir.load_revocations(&ca_key).contains(NodeId(9)));
        assert!(matches!(
            dir.init_cluster(),
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
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "state dir");
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
}
