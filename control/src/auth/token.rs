//! Join tokens and the secrets in them: hex text, the CA fingerprint, OS randomness and constant-time
//! comparison.

use std::fmt;

use super::{AuthError, TOKEN_PREFIX};

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(super) fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(b)
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
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
