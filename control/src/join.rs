//! Admission (ALPN `overlayd-join/1`, relayed over `overlayd-relay/1`): how a host without a credential
//! becomes a member without anyone but an admitter holding the CA key or the join secret.
//!
//! This file: the wire format and the joiner's side; the member's side (admit or relay) is
//! [`crate::admission`].
//!
//! Joiner: connects to any member, accepts it only if its chain contains a CA whose SHA-256 equals the
//! token's fingerprint and the leaf is valid under that CA, generates its key locally and sends a
//! [`SigningRequest`] (node id, public key, requested VTEPs) with a proof: HMAC-SHA256 under the join
//! secret of exactly the request bytes ([`JoinRequest`]). The secret itself never travels.
//! Admitter (holds the CA key and the secret): checks the proof in constant time, returns a certificate
//! naming the node id and VTEPs (SAN IP entries), the CA-signed [`Attestation`] and the admitters'
//! addresses. Member without the CA key: forwards the request bytes verbatim, with the joiner's proof, to
//! an admitter over a mutually authenticated connection (so it never learns the secret and cannot alter
//! the request), and passes the answer back; with no admitter reachable it says so.
//! Must never: store anything on the joiner before the CA check passed, admit on a wrong proof, relay a
//! request twice (a relayed request is never relayed again), or wait on any step without a timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::attest::{self, Attestation};
use crate::auth::{self, AuthError, JoinToken, NodeCredential, PendingKey, StateDir, CLUSTER_SERVER_NAME};
use crate::membership::NodeId;
use crate::transport::{provider, tls, TransportError, ALPN_JOIN, CONNECT_TIMEOUT};

/// Version 2: signing request + proof (version 1 sent the secret itself and received the CA key).
pub const JOIN_VERSION: u8 = 2;
/// HMAC domain of the join proof, so the secret's MAC for this purpose is useless for any other.
pub const DOMAIN_JOIN_PROOF: &[u8] = b"overlayd-join-proof/1";
/// Largest encoded [`JoinRequest`] accepted (a real one is ~150 bytes).
pub const MAX_REQUEST: usize = 1024;
/// Largest encoded [`JoinResponse`] accepted by a joiner or a relay.
pub const MAX_RESPONSE: usize = 16 * 1024;
/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of 66 bytes);
/// the 65-byte uncompressed point follows. The only key type admitted.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// Joiner: how long it waits for the answer once the request is sent (covers a relay's budget).
pub(crate) const JOIN_REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Joiner: the longest its join endpoint lingers (in the background) after the close, for QUIC's
/// closing period.
const JOIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Verifies a member during join: its chain must contain a CA whose SHA-256 matches the token, and the
/// leaf must be valid under that CA for the cluster server name.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| auth::fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the member's cluster CA does not match the token's fingerprint (a token from another cluster?)"
                        .into(),
                )
            })?;
        let mut r = RootCertStore::empty();
        r.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(r), Arc::clone(&self.provider))
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is disabled on this config; refuse outright.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client config of a joiner: TLS 1.3, ALPN `overlayd-join/1`, the member's CA pinned by the token.
pub fn join_client_config(token: &JoinToken) -> Result<quinn::ClientConfig, TransportError> {
    let verifier = Arc::new(PinnedCaVerifier {
        fingerprint: token.ca_fingerprint,
        provider: provider(),
    });
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous() // custom verifier: pins the CA by fingerprint, then full WebPKI validation
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    c.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    c.enable_early_data = false;
    Ok(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(c).map_err(tls)?,
    )))
}

/// What the joiner asks the admitter to certify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningRequest {
    pub node_id: NodeId,
    /// P-256 SubjectPublicKeyInfo DER of the joiner's freshly generated key.
    pub spki_der: Vec<u8>,
    /// VTEP addresses the joiner will use (1 to [`attest::MAX_VTEPS`]).
    pub vteps: Vec<IpAddr>,
}

impl SigningRequest {
    /// The uncompressed P-256 point inside `spki_der`, if it is exactly a P-256 SPKI.
    pub fn public_key(&self) -> Option<&[u8]> {
        let key = self.spki_der.strip_prefix(&P256_SPKI_PREFIX[..])?;
        (key.len() == attest::PUBLIC_KEY_LEN && key.first() == Some(&0x04)).then_some(key)
    }
}

/// On the wire: the encoded [`SigningRequest`] and HMAC-SHA256(secret, domain || those bytes). A relay
/// forwards this verbatim; any change to the request breaks the proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub version: u8,
    pub csr: Vec<u8>,
    pub proof: [u8; 32],
}

/// Why a join request was not accepted (the admitter's answer names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("join request larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("malformed join request")]
    Malformed,
    #[error("join protocol {0} not supported (this overlayd speaks {JOIN_VERSION}; upgrade the older host)")]
    Version(u8),
    #[error("the request must name 1 to 4 VTEP addresses")]
    Vteps,
    #[error("the request's key is not a P-256 public key")]
    Key,
    #[error("invalid join token secret (get a fresh token with `overlayctl token` on an admitter)")]
    BadProof,
}

/// HMAC-SHA256 under the join secret of `domain || csr`.
pub fn prove(secret: &[u8; 32], csr: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(DOMAIN_JOIN_PROOF);
    ctx.update(csr);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, RequestError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        _ => Err(RequestError::Malformed),
    }
}

impl JoinRequest {
    /// The request for `csr`, proven with `secret`.
    pub fn new(secret: &[u8; 32], csr: &SigningRequest) -> Self {
        // postcard of plain fields cannot fail on a Vec sink.
        let csr = postcard::to_allocvec(csr).unwrap_or_default();
        let proof = prove(secret, &csr);
        JoinRequest {
            version: JOIN_VERSION,
            csr,
            proof,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Parse and check the structure (size, version, VTEP count, key type). Says nothing about the proof:
    /// a relay calls this to drop garbage early, the admitter then calls [`Self::proof_valid`].
    pub fn decode(bytes: &[u8]) -> Result<(JoinRequest, SigningRequest), RequestError> {
        if bytes.len() > MAX_REQUEST {
            return Err(RequestError::TooLarge);
        }
        let req: JoinRequest = decode_exact(bytes)?;
        if req.version != JOIN_VERSION {
            return Err(RequestError::Version(req.version));
        }
        let csr: SigningRequest = decode_exact(&req.csr)?;
        if csr.vteps.is_empty() || csr.vteps.len() > attest::MAX_VTEPS {
            return Err(RequestError::Vteps);
        }
        if csr.public_key().is_none() {
            return Err(RequestError::Key);
        }
        Ok((req, csr))
    }

    /// Constant-time check of the proof against `secret` (ring's HMAC verify).
    pub fn proof_valid(&self, secret: &[u8; 32]) -> bool {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let mut msg = Vec::with_capacity(DOMAIN_JOIN_PROOF.len() + self.csr.len());
        msg.extend_from_slice(DOMAIN_JOIN_PROOF);
        msg.extend_from_slice(&self.csr);
        ring::hmac::verify(&key, &msg, &self.proof).is_ok()
    }
}

/// The admitter's answer, forwarded unchanged by a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinResponse {
    Granted {
        node_cert_pem: String,
        ca_cert_pem: String,
        attestation: Attestation,
        /// Gossip addresses of the admitters known to the issuer (itself first).
        admitters: Vec<SocketAddr>,
    },
    Refused(String),
    /// The member is not an admitter and could not reach one.
    NoAdmitter(String),
}

impl JoinResponse {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_RESPONSE {
            return None;
        }
        decode_exact(bytes).ok()
    }
}

/// `overlayd --peer ADDR --token TOKEN`: obtain a credential for VTEP `vtep` (and the state dir's other
/// claimed addresses, [`StateDir::claimed_vteps`]) through the member at `peer`
/// (an admitter, or a member that relays to one) and store it under `state` (on tokio's blocking pool:
/// its 8 fsyncs never stall an async worker), before returning it: the caller starts gossip, which
/// announces the node, only with a credential that a crash can no longer lose. Restarts then use
/// [`StateDir::load_credential`].
pub async fn join_cluster(
    peer: SocketAddr,
    token: &JoinToken,
    state: &StateDir,
    vtep: IpAddr,
) -> Result<NodeCredential, TransportError> {
    let grant = request_grant(peer, token, state, vtep).await?;
    let state = state.clone();
    match tokio::task::spawn_blocking(move || grant.store(&state)).await {
        Ok(stored) => Ok(stored?),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime shuts down under us.
            Err(_) => Err(TransportError::Stopped),
        },
    }
}

/// A grant the joiner has checked ([`check_grant`]) but not stored yet. The credential it makes is
/// handed out only by [`Grant::store`], once it is durable: a node that announced an identity a crash
/// then lost would be a member the cluster knows and that cannot restart without a new token.
struct Grant {
    peer: SocketAddr,
    node_id: NodeId,
    pending: PendingKey,
    node_cert_pem: String,
    ca_cert_pem: String,
    attestation: Attestation,
    admitters: Vec<SocketAddr>,
    /// When the join began (for the debug log's timings).
    began: std::time::Instant,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "Grant {{ node_id: {}, peer: {} }}", self.node_id, self.peer)
    }
}

impl Grant {
    /// Persist the credential under `state` ([`StateDir::store_joined`]: key, id, attestation, CA
    /// certificate and admitters, then `node.crt`, each group durable before the next) and return it
    /// as read back from there. Blocking (fsyncs): call it from a blocking thread. On an error nothing
    /// names the dir initialised (`node.crt` goes last) and no temp file is left.
    fn store(self, state: &StateDir) -> Result<NodeCredential, AuthError> {
        let cred = state.store_joined(
            self.node_id,
            &self.pending,
            &self.node_cert_pem,
            &self.ca_cert_pem,
            &self.attestation,
            &self.admitters,
        )?;
        let ms = self.began.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(peer = %self.peer, ms, "join: credential stored");
        Ok(cred)
    }
}

/// The network half of [`join_cluster`]: dial `peer`, send the signing request, check the grant
/// ([`check_grant`]). Nothing is written; store the result with [`Grant::store`].
async fn request_grant(
    peer: SocketAddr,
    token: &JoinToken,
    state: &StateDir,
    vtep: IpAddr,
) -> Result<Grant, TransportError> {
    // Before the admitter spends a grant on us.
    state.check_joinable()?;
    let bind: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let t0 = std::time::Instant::now();
    let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(%peer, "join: dialling");
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|source| TransportError::Bind { addr: bind, source })?;
    // The token this member sends on the join connection lets our first gossip dial to it skip the Retry.
    endpoint.set_default_client_config(crate::transport::tokens::client_config_for(
        &join_client_config(token)?,
        peer,
    ));
    let connect_err = |reason: String| TransportError::Connect { addr: peer, reason };
    let connecting = endpoint
        .connect(peer, CLUSTER_SERVER_NAME)
        .map_err(|e| connect_err(e.to_string()))?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    tracing::debug!(%peer, ms = ms(t0), "join: handshake done");
    let pending = PendingKey::generate()?;
    let node_id = NodeId(u64::from_le_bytes(random8()?));
    let csr = SigningRequest {
        node_id,
        spki_der: pending.spki_der(),
        vteps: state.claimed_vteps(vtep),
    };
    let body = JoinRequest::new(&token.secret, &csr).encode();
    let proto = |reason: String| TransportError::Protocol { addr: peer, reason };
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connect_err(e.to_string()))?;
        send.write_all(&body).await.map_err(|e| proto(e.to_string()))?;
        send.finish().map_err(|e| proto(e.to_string()))?;
        tracing::debug!(%peer, ms = ms(t0), "join: request sent");
        recv.read_to_end(MAX_RESPONSE)
            .await
            .map_err(|e| proto(e.to_string()))
    };
    let reply = tokio::time::timeout(JOIN_REPLY_TIMEOUT, exchange)
        .await
        .map_err(|_| proto("no answer".into()))??;
    tracing::debug!(%peer, ms = ms(t0), "join: answer received");
    conn.close(0u32.into(), b"joined");
    // The close goes out at once; what follows is QUIC's closing period (RFC 9000 §10.2: 3 PTOs, ~0.1-0.2 s), in
    // which nothing more is exchanged. Let it run out in the background instead of in the joiner's
    // start-up: the task owns the endpoint, so its socket stays open until the member has the close.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(JOIN_DRAIN_TIMEOUT, endpoint.wait_idle()).await;
    });
    match JoinResponse::decode(&reply).ok_or_else(|| proto("malformed answer".into()))? {
        JoinResponse::Granted {
            node_cert_pem,
            ca_cert_pem,
            attestation,
            admitters,
        } => {
            check_grant(token, &csr, &pending, &node_cert_pem, &ca_cert_pem, &attestation)
                .map_err(|r| proto(r.into()))?;
            tracing::debug!(%peer, ms = ms(t0), "join: grant checked");
            Ok(Grant {
                peer,
                node_id,
                pending,
                node_cert_pem,
                ca_cert_pem,
                attestation,
                admitters,
                began: t0,
            })
        }
        JoinResponse::Refused(reason) => Err(TransportError::Refused { addr: peer, reason }),
        JoinResponse::NoAdmitter(reason) => Err(TransportError::NoAdmitter { addr: peer, reason }),
    }
}

/// Everything a joiner checks in a grant before storing it: the CA is the token's, the attestation is
/// the CA's and names exactly what was asked (our id, our key, our VTEPs, not an admitter), and the
/// certificate carries our key and id.
pub(crate) fn check_grant(
    token: &JoinToken,
    csr: &SigningRequest,
    pending: &PendingKey,
    node_cert_pem: &str,
    ca_cert_pem: &str,
    attestation: &Attestation,
) -> Result<(), &'static str> {
    use rustls::pki_types::pem::PemObject;
    let ca_der =
        CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(|_| "CA certificate unreadable")?;
    if auth::fingerprint(&ca_der) != token.ca_fingerprint {
        return Err("the admitter sent a CA that does not match the token");
    }
    let ca_key = attest::certificate_public_key(&ca_der).ok_or("CA key is not P-256")?;
    let ours = pending.public_key_raw();
    if attestation.verify(&ca_key).is_err()
        || attestation.node != csr.node_id
        || attestation.key != ours
        || attestation.vteps != csr.vteps
        || attestation.admitter
    {
        return Err("the attestation does not match the request");
    }
    let cert =
        CertificateDer::from_pem_slice(node_cert_pem.as_bytes()).map_err(|_| "certificate unreadable")?;
    if auth::node_id_from_cert(&cert) != Some(csr.node_id)
        || attest::certificate_public_key(&cert) != Some(ours)
    {
        return Err("the certificate does not match the request");
    }
    Ok(())
}

fn random8() -> Result<[u8; 8], TransportError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(b)
}

#[cfg(test)]
mod tests;
