//! What a member remembers across restarts besides its credential: the members' and admitters' gossip
//! addresses, the revocation list and the last generation.

use std::net::SocketAddr;

use super::{AuthError, StateDir, ADMITTERS, GENERATION, PEERS, REVOKED};
use crate::revocation::RevocationList;

/// The `peers`/`admitters` file format: one address per line.
pub(super) fn addr_lines(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(|p| format!("{p}\n")).collect()
}

impl StateDir {
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

    /// Remember admitters' gossip addresses (learned at join) for relaying joiners' requests.
    pub fn save_admitters(&self, admitters: &[SocketAddr]) -> Result<(), AuthError> {
        self.ensure_dir()?;
        self.write(ADMITTERS, addr_lines(admitters).as_bytes())
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
        self.write(PEERS, addr_lines(peers).as_bytes())
    }

    /// Addresses saved by [`Self::save_peers`]; empty if none. A line that is not an address is an
    /// error naming the file.
    pub fn load_peers(&self) -> Result<Vec<std::net::SocketAddr>, AuthError> {
        self.load_addrs(
            PEERS,
            "fix or delete the file (it only lists members to re-join at start; without it, start with --peer ADDR)",
        )
    }
}
