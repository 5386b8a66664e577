//! `<state-dir>/attachments.json`: the persisted attachments. Written atomically (temp file with O_EXCL,
//! fsync, rename, fsync of the directory; mode 0600), as `ownership.rs` writes its record. Read as untrusted
//! input: a file that does not parse, or whose records do not check out, is [`AttachError::Corrupt`].

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{host_ifname, valid_network_name, AttachError, Attachment};
use crate::host;

/// File name inside the state dir.
pub const STATE_FILE: &str = "attachments.json";
/// Largest state file we read (a record is ~300 bytes).
const MAX_STATE_BYTES: u64 = 16 << 20;
const STATE_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    attachments: Vec<Attachment>,
}

/// MACs as text ("02:00:00:00:00:01") in the file and the admin API.
pub(super) mod mac_text {
    use dataplane::wire::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(m)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("invalid MAC {s:?}")))
    }
}

/// The records in `state_dir` (none if there is no file).
pub(super) fn load(state_dir: &Path) -> Result<Vec<Attachment>, AttachError> {
    let path = state_dir.join(STATE_FILE);
    match File::open(&path) {
        Ok(f) => {
            let mut text = String::new();
            f.take(MAX_STATE_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|e| AttachError::Corrupt {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            parse_state(&text).map_err(|detail| AttachError::Corrupt { path, detail })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(AttachError::State {
            path,
            op: "open",
            source,
        }),
    }
}

/// Replace the file with `list`.
pub(super) fn save(dir: &Path, list: &[Attachment]) -> Result<(), AttachError> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let err = |op: &'static str, p: &Path| {
        let path = p.to_owned();
        move |source| AttachError::State { path, op, source }
    };
    let body = serde_json::to_vec_pretty(&StateFile {
        version: STATE_VERSION,
        attachments: list.to_vec(),
    })
    .map_err(|e| err("encode", &path)(std::io::Error::other(e)))?;
    // A temp file left by a crash mid-write is ours (the state dir is locked): remove it, then O_EXCL.
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err("create", &tmp))?;
    f.write_all(&body).map_err(err("write", &tmp))?;
    f.sync_all().map_err(err("fsync", &tmp))?;
    fs::rename(&tmp, &path).map_err(err("rename", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("fsync", dir))
}

/// Check a record read from the state file (untrusted: it may have been edited).
fn check_record(a: &Attachment) -> Result<(), String> {
    if !valid_network_name(&a.network) {
        return Err(format!("invalid network name {:?}", a.network));
    }
    host::validate_ifname(&a.ifname).map_err(|e| e.to_string())?;
    host::validate_ifname(&a.bridge).map_err(|e| e.to_string())?;
    if a.host_ifname != host_ifname(&a.netns, &a.network, &a.ifname) {
        return Err(format!(
            "host interface {:?} does not match its attachment",
            a.host_ifname
        ));
    }
    Ok(())
}

fn parse_state(text: &str) -> Result<Vec<Attachment>, String> {
    if text.len() as u64 > MAX_STATE_BYTES {
        return Err(format!("larger than {MAX_STATE_BYTES} bytes"));
    }
    let file: StateFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if file.version != STATE_VERSION {
        return Err(format!(
            "unknown version {} (this overlayd writes {STATE_VERSION})",
            file.version
        ));
    }
    let mut seen = HashSet::new();
    for a in &file.attachments {
        check_record(a)?;
        if !seen.insert(a.host_ifname.clone()) {
            return Err(format!("{} is listed twice", a.host_ifname));
        }
    }
    Ok(file.attachments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::tests::sample;
    use proptest::prelude::*;

    #[test]
    fn state_file_round_trip_and_corruption() {
        let a = sample();
        let text = serde_json::to_string(&StateFile {
            version: 1,
            attachments: vec![a.clone()],
        })
        .unwrap();
        assert_eq!(parse_state(&text).unwrap(), vec![a.clone()]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rec = &v["attachments"][0];
        assert_eq!(rec["ip"], "10.20.0.2/16");
        assert_eq!(rec["mac"], "02:00:00:00:00:01");
        assert_eq!(rec["netns"], "c1");
        assert_eq!(rec["gateway"], "10.20.0.1");
        for bad in [
            "".to_owned(),
            "{".to_owned(),
            "[]".to_owned(),
            text.replace("\"version\":1", "\"version\":2"),
            text.replace("02:00:00:00:00:01", "02:00:00:00:00"),
            text.replace("10.20.0.2/16", "10.20.0.2/33"),
            text.replace("\"eth0\"", "\"eth/0\""),
            text.replace("\"blue\"", "\"a-network-name-too-long\""),
            text.replace(&a.host_ifname, "ovv000000000000"),
            text.replace("\"c1\"", "\"a/b\""),
            format!(
                "{{\"version\":1,\"attachments\":[{r},{r}]}}",
                r = serde_json::to_string(&a).unwrap()
            ),
        ] {
            assert!(parse_state(&bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_state_never_panics(s in "\\PC{0,200}") {
            let _ = parse_state(&s);
        }

        #[test]
        fn flipped_state_never_panics(pos in 0usize..400, bit in 0u8..8) {
            let mut b = serde_json::to_vec(&StateFile { version: 1, attachments: vec![sample()] }).unwrap();
            if pos < b.len() { b[pos] ^= 1 << bit; }
            if let Ok(s) = std::str::from_utf8(&b) { let _ = parse_state(s); }
        }
    }
}
