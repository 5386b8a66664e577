//! The join exchange (ALPN `overlayd-join/1`): how a host without a credential becomes a member.
//!
//! Joiner: connects to any member, accepts the member only if its chain contains a CA whose SHA-256
//! equals the token's fingerprint and the leaf is valid under that CA (so the secret is never shown to
//! an impostor), then sends {secret, node id, public key} on one bidirectional stream. The private key
//! never leaves the joiner. Member: compares the secret in constant time, signs a node certificate
//! for the public key, and returns it with the CA (certificate and key, see [`crate::auth`]).
//! Must never: store anything on the joiner before the CA check passed, or admit on a wrong secret.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::auth::{
    self, AuthError, ClusterCa, JoinToken, NodeCredential, PendingKey, StateDir, CLUSTER_SERVER_NAME,
};
use crate::membership::NodeId;
use crate::transport::{provider, tls, TransportError, ALPN_JOIN, CONNECT_TIMEOUT};

const JOIN_VERSION: u8 = 1;

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

fn join_client_config(token: &JoinToken) -> Result<quinn::ClientConfig, TransportError> {
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

#[derive(Debug, Serialize, Deserialize)]
struct JoinRequest {
    version: u8,
    secret: [u8; 32],
    node_id: NodeId,
    spki_der: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
enum JoinResponse {
    Granted {
        node_cert_pem: String,
        ca_cert_pem: String,
        ca_key_pem: String,
    },
    Refused(String),
}

/// `overlayd --peer ADDR --token TOKEN`: obtain a node credential from the member at `peer` and store it
/// (with the CA and secret) under `state`. Restarts then use [`StateDir::load_credential`].
pub async fn join_cluster(
    peer: SocketAddr,
    token: &JoinToken,
    state: &StateDir,
) -> Result<NodeCredential, TransportError> {
    let bind: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|source| TransportError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(join_client_config(token)?);
    let connect_err = |reason: String| TransportError::Connect { addr: peer, reason };
    let connecting = endpoint
        .connect(peer, CLUSTER_SERVER_NAME)
        .map_err(|e| connect_err(e.to_string()))?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let pending = PendingKey::generate()?;
    let node_id = NodeId(u64::from_le_bytes(random8()?));
    let req = JoinRequest {
        version: JOIN_VERSION,
        secret: token.secret,
        node_id,
        spki_der: pending.spki_der(),
    };
    let proto = |reason: String| TransportError::Protocol { addr: peer, reason };
    let body = postcard::to_allocvec(&req).map_err(|e| proto(e.to_string()))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connect_err(e.to_string()))?;
    send.write_all(&body).await.map_err(|e| proto(e.to_string()))?;
    send.finish().map_err(|e| proto(e.to_string()))?;
    let reply = tokio::time::timeout(CONNECT_TIMEOUT, recv.read_to_end(64 * 1024))
        .await
        .map_err(|_| proto("no answer".into()))?
        .map_err(|e| proto(e.to_string()))?;
    conn.close(0u32.into(), b"joined");
    endpoint.wait_idle().await;
    match postcard::from_bytes::<JoinResponse>(&reply).map_err(|e| proto(e.to_string()))? {
        JoinResponse::Granted {
            node_cert_pem,
            ca_cert_pem,
            ca_key_pem,
        } => {
            let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca_cert_pem.as_bytes())
                .map_err(|e: rustls::pki_types::pem::Error| proto(e.to_string()))?;
            let ca_der: CertificateDer<'static> = ca_der;
            if auth::fingerprint(&ca_der) != token.ca_fingerprint {
                return Err(proto("member sent a CA that does not match the token".into()));
            }
            Ok(state.store_joined(
                node_id,
                &pending,
                &node_cert_pem,
                &ca_cert_pem,
                &ca_key_pem,
                &token.secret,
            )?)
        }
        JoinResponse::Refused(reason) => Err(TransportError::Refused { addr: peer, reason }),
    }
}

fn random8() -> Result<[u8; 8], TransportError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(b)
}

/// Member side of a join: check the secret, sign the joiner's key.
pub(crate) async fn admit(conn: quinn::Connection, admission: Arc<Admission>) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let Ok(body) = recv.read_to_end(16 * 1024).await else {
        return;
    };
    let resp = match postcard::from_bytes::<JoinRequest>(&body) {
        Err(_) => JoinResponse::Refused("malformed join request".into()),
        Ok(r) if r.version != JOIN_VERSION => {
            JoinResponse::Refused(format!("join protocol {} not supported", r.version))
        }
        Ok(r) if !auth::secrets_equal(&r.secret, &admission.secret) => {
            tracing::warn!(peer = %conn.remote_address(), "join refused: wrong secret");
            JoinResponse::Refused(
                "invalid join token secret (get a fresh token with `overlayctl token`)".into(),
            )
        }
        Ok(r) => match admission.ca.issue(r.node_id, &r.spki_der) {
            Ok(node_cert_pem) => {
                tracing::info!(peer = %conn.remote_address(), node = %r.node_id, "admitted new node");
                JoinResponse::Granted {
                    node_cert_pem,
                    ca_cert_pem: admission.ca.cert_pem().to_string(),
                    ca_key_pem: admission.ca.key_pem().to_string(),
                }
            }
            Err(e) => JoinResponse::Refused(format!("cannot issue certificate: {e}")),
        },
    };
    if let Ok(bytes) = postcard::to_allocvec(&resp) {
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
        let _ = send.stopped().await;
    }
}

/// What a member needs to admit joiners.
#[derive(Debug)]
pub struct Admission {
    pub ca: ClusterCa,
    pub secret: [u8; 32],
}
