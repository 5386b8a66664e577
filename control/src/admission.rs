//! The member's side of admission: an admitter ([`Admission`]: CA key + join secret) decides on signing
//! requests; a member without the CA key relays them verbatim to an admitter it finds through the
//! [`Directory`] (admitters learned at join, then alive members). Wire format and joiner: [`crate::join`].
//! Must never: relay a request twice (a relayed request is never relayed again), admit on a wrong proof,
//! log the secret, or wait on any step without a timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::attest::{Attestation, Signer};
use crate::auth::{AuthError, ClusterCa, JoinToken, StateDir, CLUSTER_SERVER_NAME};
use crate::exposure::QuicStats;
use crate::join::{JoinRequest, JoinResponse, RequestError, MAX_REQUEST, MAX_RESPONSE};
use crate::transport::persist::Persist;
use crate::transport::CONNECT_TIMEOUT;

/// Member: the whole server side of one join connection (request, relay, answer); the default of
/// [`crate::exposure::Limits::join_timeout`].
pub const JOIN_SERVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Relaying member: total time spent looking for an admitter for one request.
pub(crate) const RELAY_BUDGET: Duration = Duration::from_secs(10);
/// Relaying member: most admitter candidates tried for one request.
const RELAY_MAX_CANDIDATES: usize = 8;
/// Relaying member: relays in flight at once, and the least time between two relay starts. Together they
/// keep what one member's relays cost an admitter (at most 8 new connections/s, 4 at once) well inside
/// the admitter's per-source caps, so a join flood relayed by a member never crowds out that member's
/// own gossip connections to the admitter. Extra requests queue (FIFO) within their serve timeout.
pub(crate) const RELAY_CONCURRENCY: usize = 4;
const RELAY_INTERVAL: Duration = Duration::from_millis(125);

/// What an admitter needs: the CA (certificate, key, attestation signer) and the current join secret.
pub struct Admission {
    ca: ClusterCa,
    signer: Signer,
    secret: Mutex<[u8; 32]>,
    state: Option<StateDir>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// `state`, if given, is where [`Self::rotate`] persists a new secret.
    pub fn new(ca: ClusterCa, secret: [u8; 32], state: Option<StateDir>) -> Result<Self, AuthError> {
        let signer = ca.signer()?;
        Ok(Admission {
            ca,
            signer,
            secret: Mutex::new(secret),
            state,
        })
    }

    /// The admission of an admitter's state dir; `None` on a member without the CA key.
    pub fn from_state(state: &StateDir) -> Result<Option<Self>, AuthError> {
        match state.load_ca() {
            Ok(ca) => Ok(Some(Self::new(ca, state.join_secret()?, Some(state.clone()))?)),
            Err(AuthError::NotAdmitter(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn secret(&self) -> [u8; 32] {
        *self.secret.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current join token (`overlayctl token`).
    pub fn token(&self) -> JoinToken {
        JoinToken {
            ca_fingerprint: self.ca.fingerprint(),
            secret: self.secret(),
        }
    }

    /// `overlayctl token --rotate`: a new secret, persisted first, then in force; the old token's proofs
    /// fail from this call on.
    pub fn rotate(&self) -> Result<JoinToken, AuthError> {
        let new = match &self.state {
            Some(s) => s.rotate_join_secret()?,
            None => {
                let mut b = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                    .map_err(|e| AuthError::Random(e.to_string()))?;
                b
            }
        };
        *self.secret.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(self.token())
    }

    /// Decide on an encoded request: check it, and if the proof holds, issue certificate + attestation.
    pub fn decide(&self, body: &[u8], admitters: Vec<SocketAddr>) -> JoinResponse {
        let (req, csr) = match JoinRequest::decode(body) {
            Ok(v) => v,
            Err(e) => return JoinResponse::Refused(e.to_string()),
        };
        if !req.proof_valid(&self.secret()) {
            return JoinResponse::Refused(RequestError::BadProof.to_string());
        }
        let Some(key) = csr.public_key() else {
            return JoinResponse::Refused(RequestError::Key.to_string());
        };
        let issued = self
            .ca
            .issue(csr.node_id, &csr.spki_der, &csr.vteps)
            .and_then(|pem| {
                Attestation::issue(&self.signer, csr.node_id, csr.vteps.clone(), false, key.to_vec())
                    .map(|a| (pem, a))
                    .map_err(AuthError::from)
            });
        match issued {
            Ok((node_cert_pem, attestation)) => {
                tracing::info!(node = %csr.node_id, vteps = ?csr.vteps, "admitted new node");
                JoinResponse::Granted {
                    node_cert_pem,
                    ca_cert_pem: self.ca.cert_pem().to_string(),
                    attestation,
                    admitters,
                }
            }
            Err(e) => JoinResponse::Refused(format!("cannot issue certificate: {e}")),
        }
    }
}

/// Where a member looks for admitters to relay to: the admitters learned at join (state dir) or from
/// answers, then the alive members (an admitter among them answers, the others say they are not).
#[derive(Debug)]
pub(crate) struct Directory {
    pub me: SocketAddr,
    pub admitters: Mutex<Vec<SocketAddr>>,
    pub members: Mutex<Vec<SocketAddr>>,
    /// Where the admitters learned from answers are remembered (`admitters` in the state dir).
    pub admitters_file: Option<Persist<Vec<SocketAddr>>>,
}

impl Directory {
    /// Admitters to name in a grant: ourselves first if we admit, then the others we know.
    fn admitters_for_grant(&self, self_admits: bool) -> Vec<SocketAddr> {
        let known = self.admitters.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut v: Vec<SocketAddr> = if self_admits { vec![self.me] } else { Vec::new() };
        v.extend(known.into_iter().filter(|a| *a != self.me));
        v.truncate(16);
        v
    }

    fn candidates(&self) -> Vec<SocketAddr> {
        let mut v = self.admitters.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for m in members {
            if !v.contains(&m) {
                v.push(m);
            }
        }
        v.retain(|a| *a != self.me);
        v.truncate(RELAY_MAX_CANDIDATES);
        v
    }

    fn learned_admitter(&self, a: SocketAddr) {
        let mut list = self.admitters.lock().unwrap_or_else(|e| e.into_inner());
        if list.first() == Some(&a) {
            return;
        }
        list.retain(|x| *x != a);
        list.insert(0, a);
        list.truncate(16);
        if let Some(file) = &self.admitters_file {
            file.store(list.clone());
        }
    }
}

/// Shared by every join/relay connection a member serves.
#[derive(Debug)]
pub(crate) struct JoinService {
    pub admission: Option<Arc<Admission>>,
    pub directory: Arc<Directory>,
    pub endpoint: quinn::Endpoint,
    /// mTLS client config with ALPN `overlayd-relay/1` (this member's credential).
    pub relay_client: quinn::ClientConfig,
    pub stats: Arc<QuicStats>,
    /// [`RELAY_CONCURRENCY`] permits.
    pub relay_slots: Arc<tokio::sync::Semaphore>,
    /// Earliest start of the next relay ([`RELAY_INTERVAL`] pacing).
    pub relay_next: Mutex<Instant>,
    /// Bound on one connection's whole join ([`JOIN_SERVE_TIMEOUT`] by default).
    pub serve_timeout: Duration,
    /// A relay refused at its first packet (QUIC CONNECTION_REFUSED) is asked again once after this.
    /// Relays go out from the gossip endpoint, and an admitter with the lower address refuses a new
    /// connection from us while its own young gossip dial to us is under way (see "The QUIC port");
    /// after the young window ([`crate::transport::YOUNG_DIAL`] by default) it no longer does.
    pub refused_retry: Duration,
}

impl JoinService {
    /// Serve one join (`may_relay`) or relay (`!may_relay`) connection: one request, one answer, all
    /// within `serve_timeout`.
    pub(crate) async fn serve(self: Arc<Self>, conn: quinn::Connection, may_relay: bool) {
        let peer = conn.remote_address();
        let t0 = Instant::now();
        let work = async {
            let (mut send, mut recv) = conn.accept_bi().await.ok()?;
            let body = recv.read_to_end(MAX_REQUEST).await.ok()?;
            self.stats.count_join_request();
            let read_ms = t0.elapsed().as_secs_f64() * 1e3;
            let resp = self.answer(&body, may_relay).await;
            tracing::debug!(%peer, read_ms, decided_ms = t0.elapsed().as_secs_f64() * 1e3, "join served: request decided");
            match &resp {
                JoinResponse::Granted { .. } => self.stats.count_join_granted(),
                JoinResponse::Refused(r) => {
                    self.stats.count_join_refused();
                    tracing::warn!(%peer, reason = %r, "join refused");
                }
                JoinResponse::NoAdmitter(_) => self.stats.count_join_refused(),
            }
            send.write_all(&resp.encode()).await.ok()?;
            send.finish().ok()?;
            let _ = send.stopped().await;
            tracing::debug!(%peer, ms = t0.elapsed().as_secs_f64() * 1e3, "join served: answer acknowledged");
            Some(())
        };
        if tokio::time::timeout(self.serve_timeout, work).await.is_err() {
            self.stats.count_join_timeout();
        }
        conn.close(0u32.into(), b"done");
    }

    async fn answer(&self, body: &[u8], may_relay: bool) -> JoinResponse {
        if let Some(a) = &self.admission {
            return a.decide(body, self.directory.admitters_for_grant(true));
        }
        if !may_relay {
            return JoinResponse::NoAdmitter("not an admitter".into());
        }
        // Drop garbage here rather than spend an admitter's time on it.
        if let Err(e) = JoinRequest::decode(body) {
            return JoinResponse::Refused(e.to_string());
        }
        let Ok(_slot) = Arc::clone(&self.relay_slots).acquire_owned().await else {
            return JoinResponse::NoAdmitter("relay stopped".into());
        };
        let start = {
            let mut next = self.relay_next.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + RELAY_INTERVAL;
            start
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
        self.relay(body).await
    }

    /// Forward `body` verbatim to an admitter and return its answer.
    async fn relay(&self, body: &[u8]) -> JoinResponse {
        let deadline = Instant::now() + RELAY_BUDGET;
        let mut tried = Vec::new();
        for cand in self.directory.candidates() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tried.push(cand.to_string());
            match tokio::time::timeout(left, self.ask(cand, body)).await {
                Ok(Some(JoinResponse::NoAdmitter(_))) | Ok(None) | Err(_) => continue,
                Ok(Some(resp)) => {
                    self.stats.count_relayed();
                    self.directory.learned_admitter(cand);
                    return resp;
                }
            }
        }
        let tried = if tried.is_empty() {
            "it knows no other member".to_string()
        } else {
            format!("tried {}", tried.join(", "))
        };
        JoinResponse::NoAdmitter(format!(
            "this member holds no CA key and no admitter is reachable ({tried}); start the admitter (the --init-cluster node, or a node with --admitter --ca-key-file) or join through it directly"
        ))
    }

    /// Relay `body` to `admitter` and return its answer; `None` if it cannot be reached.
    pub(crate) async fn ask(&self, admitter: SocketAddr, body: &[u8]) -> Option<JoinResponse> {
        let conn = match self.connect(admitter).await? {
            Err(e) if is_refused(&e) => {
                // Most likely our gossip dial crossed the admitter's: asked again once, it gets in.
                tokio::time::sleep(self.refused_retry).await;
                self.connect(admitter).await?.ok()?
            }
            r => r.ok()?,
        };
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send.write_all(body).await.ok()?;
        send.finish().ok()?;
        let reply = recv.read_to_end(MAX_RESPONSE).await.ok()?;
        conn.close(0u32.into(), b"relayed");
        JoinResponse::decode(&reply)
    }

    /// A relay connection to `admitter`; `None` if none could be started or it timed out.
    async fn connect(
        &self,
        admitter: SocketAddr,
    ) -> Option<Result<quinn::Connection, quinn::ConnectionError>> {
        let connecting = self
            .endpoint
            .connect_with(self.relay_client.clone(), admitter, CLUSTER_SERVER_NAME)
            .ok()?;
        tokio::time::timeout(CONNECT_TIMEOUT, connecting).await.ok()
    }
}

/// The peer refused the connection at its first packet (QUIC CONNECTION_REFUSED).
fn is_refused(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ConnectionClosed(c)
        if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PendingKey;
    use crate::join::{check_grant, SigningRequest};
    use crate::membership::NodeId;
    use rustls::pki_types::CertificateDer;
    use std::net::IpAddr;

    #[test]
    fn admitter_grants_and_refuses() {
        let dir =
            StateDir::new(std::env::temp_dir().join(format!("overlayd-join-unit-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(dir.path());
        dir.init_cluster(IpAddr::from([10, 0, 0, 1])).unwrap();
        let adm = Admission::from_state(&dir)
            .unwrap()
            .expect("init node is an admitter");
        let token = adm.token();
        let pending = PendingKey::generate().unwrap();
        let c = SigningRequest {
            node_id: NodeId(42),
            spki_der: pending.spki_der(),
            vteps: vec![IpAddr::from([10, 0, 0, 2])],
        };
        let me: SocketAddr = "10.0.0.1:7948".parse().unwrap();
        let resp = adm.decide(&JoinRequest::new(&token.secret, &c).encode(), vec![me]);
        let JoinResponse::Granted {
            node_cert_pem,
            ca_cert_pem,
            attestation,
            admitters,
        } = resp
        else {
            panic!("not granted: {resp:?}");
        };
        assert_eq!(admitters, vec![me]);
        check_grant(&token, &c, &pending, &node_cert_pem, &ca_cert_pem, &attestation).unwrap();
        // The certificate names the VTEP as an IP SAN.
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(node_cert_pem.as_bytes()).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap();
        assert!(san.value.general_names.iter().any(|n| matches!(n,
            x509_parser::extensions::GeneralName::IPAddress(b) if *b == [10, 0, 0, 2])));
        // Wrong secret: refused. After rotation the old token is refused and the new one granted.
        let resp = adm.decide(&JoinRequest::new(&[0; 32], &c).encode(), vec![]);
        assert!(
            matches!(resp, JoinResponse::Refused(ref r) if r.contains("secret")),
            "{resp:?}"
        );
        let new = adm.rotate().unwrap();
        assert_ne!(new.secret, token.secret);
        assert_eq!(dir.join_token().unwrap(), new, "rotation is persisted");
        let old = adm.decide(&JoinRequest::new(&token.secret, &c).encode(), vec![]);
        assert!(matches!(old, JoinResponse::Refused(_)), "{old:?}");
        let fresh = adm.decide(&JoinRequest::new(&new.secret, &c).encode(), vec![]);
        assert!(matches!(fresh, JoinResponse::Granted { .. }), "{fresh:?}");
        // A grant for someone else's request does not pass the joiner's checks.
        let other = PendingKey::generate().unwrap();
        if let JoinResponse::Granted {
            node_cert_pem,
            ca_cert_pem,
            attestation,
            ..
        } = fresh
        {
            assert!(check_grant(&new, &c, &other, &node_cert_pem, &ca_cert_pem, &attestation).is_err());
            let wrong_ca = JoinToken {
                ca_fingerprint: [0; 32],
                ..new.clone()
            };
            assert!(check_grant(
                &wrong_ca,
                &c,
                &pending,
                &node_cert_pem,
                &ca_cert_pem,
                &attestation
            )
            .is_err());
        }
        let _ = std::fs::remove_dir_all(dir.path());
    }
}
