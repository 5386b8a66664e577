//! Address-validation tokens (QUIC NEW_TOKEN, RFC 9000 §8.1.3): a connection from an address that
//! proved it receives our packets skips the Retry round trip the next time.
//!
//! Server side: after a handshake from a validated address (it answered a Retry, or presented a token)
//! a member sends the client one token, bound to the client's IP, sealed with the endpoint's key and
//! valid for [`TOKEN_LIFETIME`]. A later connection from that IP that presents it counts as validated:
//! no Retry. Each token is accepted once ([`ReplayLog`], at most [`REPLAY_LOG_MAX`] tokens remembered;
//! when full, tokens are ignored and the sender gets a Retry as before), so a token cannot be replayed
//! into amplification. The per-source caps and the handshake queue apply to such a connection exactly
//! as to one that answered a Retry.
//!
//! Client side: tokens are kept per server address in one cache per process ([`for_server`]), shared by
//! the join endpoint and the gossip endpoint: the joiner's first gossip dial to the member it joined
//! through presents the token from the join connection (same IP, another port) and skips the Retry.
//! quinn keys its own cache by server name, which is the same for every member; this one is keyed by the
//! address dialled. Must never: accept a token twice, or keep unbounded state.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use quinn::{TokenLog, TokenReuseError, TokenStore, ValidationTokenConfig};

/// How long a token is accepted after it was issued (quinn encodes the issue time in whole seconds).
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens remembered as used by one endpoint (16 bytes of nonce + expiry each).
pub(crate) const REPLAY_LOG_MAX: usize = 8192;
/// Server addresses a process keeps tokens for, and tokens kept per address.
const CACHE_SERVERS: usize = 1024;
const CACHE_PER_SERVER: usize = 2;
/// Longest token kept from a server (ours are ~100 bytes).
const MAX_TOKEN_LEN: usize = 256;

/// The server side: one token per validated connection, each accepted once.
pub(crate) fn server_config() -> ValidationTokenConfig {
    let mut c = ValidationTokenConfig::default();
    c.lifetime(TOKEN_LIFETIME)
        .log(Arc::new(ReplayLog::default()))
        .sent(1);
    c
}

/// The used tokens of one endpoint (by nonce) until they expire. Refuses (false positive: the client
/// then gets a Retry) when [`REPLAY_LOG_MAX`] unexpired tokens are remembered.
#[derive(Debug, Default)]
pub(crate) struct ReplayLog {
    used: Mutex<HashMap<u128, SystemTime>>,
}

impl TokenLog for ReplayLog {
    fn check_and_insert(
        &self,
        nonce: u128,
        issued: SystemTime,
        lifetime: Duration,
    ) -> Result<(), TokenReuseError> {
        let expires = issued + lifetime;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains_key(&nonce) {
            return Err(TokenReuseError);
        }
        if used.len() >= REPLAY_LOG_MAX {
            let now = SystemTime::now();
            used.retain(|_, exp| *exp >= now);
            if used.len() >= REPLAY_LOG_MAX {
                return Err(TokenReuseError);
            }
        }
        used.insert(nonce, expires);
        Ok(())
    }
}

/// Tokens received from servers, by server address (oldest server forgotten first when full).
#[derive(Debug, Default)]
struct Cache {
    by_server: HashMap<SocketAddr, VecDeque<Bytes>>,
    order: VecDeque<SocketAddr>,
}

impl Cache {
    fn insert(&mut self, server: SocketAddr, token: Bytes) {
        if !self.by_server.contains_key(&server) {
            while self.order.len() >= CACHE_SERVERS {
                if let Some(old) = self.order.pop_front() {
                    self.by_server.remove(&old);
                }
            }
            self.order.push_back(server);
        }
        let q = self.by_server.entry(server).or_default();
        q.push_back(token);
        while q.len() > CACHE_PER_SERVER {
            q.pop_front();
        }
    }

    /// The newest token for `server` (each is handed out once).
    fn take(&mut self, server: SocketAddr) -> Option<Bytes> {
        let q = self.by_server.get_mut(&server)?;
        let t = q.pop_back();
        if q.is_empty() {
            self.by_server.remove(&server);
            self.order.retain(|s| *s != server);
        }
        t
    }
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// The token store of a connection to `server` (set on its client config; quinn calls it with the
/// TLS server name, which is ignored).
pub(crate) fn for_server(server: SocketAddr) -> Arc<dyn TokenStore> {
    Arc::new(ServerTokens(server))
}

struct ServerTokens(SocketAddr);

impl TokenStore for ServerTokens {
    fn insert(&self, _: &str, token: Bytes) {
        // quinn hands over a slice of the received datagram (or GRO batch): a copy keeps only the token
        // alive. A member's own tokens are ~100 bytes; anything much larger is not kept.
        if token.len() > MAX_TOKEN_LEN {
            return;
        }
        let token = Bytes::copy_from_slice(&token);
        cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.0, token);
    }

    fn take(&self, _: &str) -> Option<Bytes> {
        cache().lock().unwrap_or_else(|e| e.into_inner()).take(self.0)
    }
}

/// `config` for a connection to `server`, with that server's tokens.
pub(crate) fn client_config_for(config: &quinn::ClientConfig, server: SocketAddr) -> quinn::ClientConfig {
    let mut c = config.clone();
    c.token_store(for_server(server));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_log_accepts_each_token_once_and_stays_bounded() {
        let log = ReplayLog::default();
        let now = SystemTime::now();
        assert!(log.check_and_insert(1, now, TOKEN_LIFETIME).is_ok());
        assert!(log.check_and_insert(1, now, TOKEN_LIFETIME).is_err(), "replayed");
        assert!(log.check_and_insert(2, now, TOKEN_LIFETIME).is_ok());
        // Full of unexpired tokens: refused (a Retry follows), never grown.
        for n in 3..(REPLAY_LOG_MAX as u128 + 10) {
            let _ = log.check_and_insert(n, now, TOKEN_LIFETIME);
        }
        assert_eq!(log.used.lock().unwrap().len(), REPLAY_LOG_MAX);
        assert!(log.check_and_insert(u128::MAX, now, TOKEN_LIFETIME).is_err());
        // Expired entries make room again.
        let long_ago = now - 2 * TOKEN_LIFETIME;
        let old = ReplayLog::default();
        for n in 0..REPLAY_LOG_MAX as u128 {
            assert!(old.check_and_insert(n, long_ago, TOKEN_LIFETIME).is_ok());
        }
        assert!(old.check_and_insert(u128::MAX, now, TOKEN_LIFETIME).is_ok());
        assert_eq!(old.used.lock().unwrap().len(), 1);
    }

    #[test]
    fn cache_is_per_server_address_one_use_and_bounded() {
        let mut c = Cache::default();
        let a: SocketAddr = "10.0.0.1:7948".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:7948".parse().unwrap();
        c.insert(a, Bytes::from_static(b"a1"));
        c.insert(a, Bytes::from_static(b"a2"));
        c.insert(a, Bytes::from_static(b"a3"));
        assert_eq!(c.take(b), None, "another server's token is never handed out");
        assert_eq!(c.take(a).as_deref(), Some(&b"a3"[..]));
        assert_eq!(c.take(a).as_deref(), Some(&b"a2"[..]));
        assert_eq!(
            c.take(a),
            None,
            "at most {CACHE_PER_SERVER} kept, each handed out once"
        );
        for i in 0..(CACHE_SERVERS + 5) {
            let s = SocketAddr::from(([10, 1, (i / 256) as u8, i as u8], 7948));
            c.insert(s, Bytes::from_static(b"t"));
        }
        assert_eq!(c.by_server.len(), CACHE_SERVERS);
        assert_eq!(c.order.len(), CACHE_SERVERS);
        assert_eq!(
            c.take(SocketAddr::from(([10, 1, 0, 0], 7948))),
            None,
            "oldest forgotten"
        );
    }

    /// A server's oversized token is not kept (a member could otherwise pin large receive buffers).
    #[test]
    fn oversized_tokens_are_not_kept() {
        let t = for_server("10.9.9.9:7948".parse().unwrap());
        t.insert("ignored", Bytes::from(vec![0u8; MAX_TOKEN_LEN + 1]));
        assert_eq!(t.take("ignored"), None);
        t.insert("ignored", Bytes::from(vec![1u8; 100]));
        assert_eq!(t.take("ignored").map(|b| b.len()), Some(100));
    }
}
