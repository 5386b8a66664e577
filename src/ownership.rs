//! The record, in the state dir, of the bridge overlayd created, so that a later run — after a crash, or
//! after an exit that left the bridge in place because a container was still on it — knows the bridge is
//! its own to remove once nothing else is on it.
//!
//! A bridge is "the one we created" only if name, ifindex, boot and network namespace all match: ifindexes
//! only grow within a namespace's life, so a bridge someone else made later under the same name does not
//! match, and neither does one made after a reboot or in another namespace. Anything that does not match
//! exactly (a missing, unreadable or corrupt record) means "not ours": we never remove what we are not sure
//! we created. Written atomically (temp file with O_EXCL, fsync, rename, fsync of the directory), mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name inside the state dir.
pub const RECORD_FILE: &str = "created-bridge";

/// Identity of one bridge instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeId {
    pub name: String,
    pub ifindex: i32,
    /// /proc/sys/kernel/random/boot_id
    pub boot: String,
    /// Inode of /proc/self/ns/net.
    pub netns: u64,
}

impl BridgeId {
    /// This boot's and this namespace's identity for bridge `name` with `ifindex`; `None` if either cannot
    /// be read (then nothing is recorded and nothing is adopted).
    pub fn here(name: &str, ifindex: i32) -> Option<BridgeId> {
        let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let netns = fs::metadata("/proc/self/ns/net").ok()?.ino();
        Some(BridgeId {
            name: name.to_owned(),
            ifindex,
            boot: boot.trim().to_owned(),
            netns,
        })
    }

    fn encode(&self) -> String {
        format!("{} {} {} {}\n", self.name, self.ifindex, self.boot, self.netns)
    }

    /// Exactly four fields: a valid interface name, a positive ifindex, a boot id (hex and dashes), a
    /// namespace inode. Anything else is `None`.
    fn parse(text: &str) -> Option<BridgeId> {
        let line = text.strip_suffix('\n')?;
        let mut f = line.split(' ');
        let (name, ifindex, boot, netns) = (f.next()?, f.next()?, f.next()?, f.next()?);
        if f.next().is_some() {
            return None;
        }
        let name_ok = !name.is_empty()
            && name.len() < libc::IFNAMSIZ
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        let boot_ok =
            (1..=64).contains(&boot.len()) && boot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !name_ok || !boot_ok || !digits(ifindex) || !digits(netns) {
            return None;
        }
        Some(BridgeId {
            name: name.to_owned(),
            ifindex: ifindex.parse().ok().filter(|&i: &i32| i > 0)?,
            boot: boot.to_owned(),
            netns: netns.parse().ok()?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot record the bridge we created in {}: {op}: {source} (check --state-dir)", path.display())]
pub struct RecordError {
    path: PathBuf,
    op: &'static str,
    source: std::io::Error,
}

/// `<state-dir>/created-bridge`.
#[derive(Debug, Clone)]
pub struct Record {
    dir: PathBuf,
    file: String,
}

impl Record {
    /// The record of the legacy network's bridge.
    pub fn new(state_dir: &Path) -> Record {
        Record {
            dir: state_dir.to_owned(),
            file: RECORD_FILE.to_owned(),
        }
    }

    /// The record of another network's bridge: `<state-dir>/created-bridge.<bridge>`.
    pub fn for_bridge(state_dir: &Path, bridge: &str) -> Record {
        Record {
            dir: state_dir.to_owned(),
            file: format!("{RECORD_FILE}.{bridge}"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// The recorded bridge, if there is a well-formed record.
    pub fn load(&self) -> Option<BridgeId> {
        let mut text = String::new();
        let f = File::open(self.path()).ok()?;
        std::io::Read::read_to_string(&mut std::io::Read::take(f, 256), &mut text).ok()?;
        BridgeId::parse(&text)
    }

    pub fn store(&self, id: &BridgeId) -> Result<(), RecordError> {
        let path = self.path();
        let tmp = self.dir.join(format!(".{}.tmp", self.file));
        let err = |op: &'static str, p: &Path| {
            let path = p.to_owned();
            move |source| RecordError { path, op, source }
        };
        // A temp file left by a crash mid-write is ours (the state dir is locked): remove it, then O_EXCL.
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err("create", &tmp))?;
        f.write_all(id.encode().as_bytes()).map_err(err("write", &tmp))?;
        f.sync_all().map_err(err("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(err("rename", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err("fsync", &self.dir))
    }

    /// Forget the record (the bridge is gone). A missing record is fine.
    pub fn clear(&self) {
        let _ = fs::remove_file(self.path());
        let _ = File::open(&self.dir).and_then(|d| d.sync_all());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> BridgeId {
        BridgeId {
            name: "ovl0".into(),
            ifindex: 7,
            boot: "0b6c2b5e-3f1a-4d8e-9c1f-2a9b8c7d6e5f".into(),
            netns: 4026531840,
        }
    }

    #[test]
    fn parse_bytes() {
        let ok = "ovl0 7 0b6c2b5e-3f1a-4d8e-9c1f-2a9b8c7d6e5f 4026531840\n";
        assert_eq!(BridgeId::parse(ok), Some(id()));
        for bad in [
            "",
            "\n",
            "ovl0 7 0b6c2b5e-3f1a-4d8e-9c1f-2a9b8c7d6e5f 4026531840", // no newline: torn write
            "ovl0 7 0b6c2b5e-3f1a-4d8e-9c1f-2a9b8c7d6e5f 4026531840 x\n",
            "ovl0 0 0b6c2b5e 1\n",
            "ovl0 -7 0b6c2b5e 1\n",
            "ovl0 99999999999 0b6c2b5e 1\n",
            "ovl0 7 not-a-uuid! 1\n",
            "ovl0 7 0b6c2b5e x1\n",
            "a-very-long-bridge-name 7 0b6c2b5e 1\n",
            "ov/l0 7 0b6c2b5e 1\n",
            "ovl0  7 0b6c2b5e 1\n",
        ] {
            assert_eq!(BridgeId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn store_load_clear() {
        let dir = std::env::temp_dir().join(format!("overlayd-record-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let r = Record::new(&dir);
        assert_eq!(r.load(), None);
        r.store(&id()).unwrap();
        assert_eq!(r.load(), Some(id()));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(RECORD_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A stale temp file from a crash does not block the next store.
        fs::write(dir.join(format!(".{RECORD_FILE}.tmp")), "junk").unwrap();
        let mut other = id();
        other.ifindex = 9;
        r.store(&other).unwrap();
        assert_eq!(r.load(), Some(other));
        fs::write(dir.join(RECORD_FILE), "garbage").unwrap();
        assert_eq!(r.load(), None, "a corrupt record means: not ours");
        r.clear();
        assert_eq!(r.load(), None);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn here_reads_this_boot_and_namespace() {
        let h = BridgeId::here("ovl0", 3).unwrap();
        assert_eq!(BridgeId::parse(&h.encode()), Some(h));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = BridgeId::parse(&s);
        }

        #[test]
        fn truncated_or_flipped_record_never_panics(cut in 0usize..80, pos in 0usize..80, bit in 0u8..8) {
            let mut b = id().encode().into_bytes();
            if pos < b.len() {
                b[pos] ^= 1 << bit;
            }
            b.truncate(cut.min(b.len()));
            if let Ok(s) = std::str::from_utf8(&b) {
                let _ = BridgeId::parse(s);
            }
        }
    }
}
