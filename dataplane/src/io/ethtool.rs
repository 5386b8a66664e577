//! Read an interface's offload features (`ethtool -k`): the `SIOCETHTOOL` ioctl with `ETHTOOL_GSSET_INFO`
//! (how many feature names), `ETHTOOL_GSTRINGS` (their names) and `ETHTOOL_GFEATURES` (which are active),
//! as in linux/ethtool.h. Admin path only (`overlayctl diag`); nothing here is on the forwarding path.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;
/// More feature names than any kernel has (about 70 today); bounds what we allocate.
const MAX_FEATURES: usize = 1024;

fn ioctl(fd: &OwnedFd, ifname: &str, data: &mut [u64]) -> io::Result<()> {
    // SAFETY: an all-zero ifreq is a valid value (name and union are plain bytes/pointers).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: `ifr` names the interface and points at `data`, which lives for the whole call and is as large as
    // the command written at its start says (the callers size it from the counts they pass).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is wrapped.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The driver of `ifname` (`ethtool -i`), e.g. `veth`, `virtio_net`, `vmxnet3`.
pub fn driver(ifname: &str) -> io::Result<String> {
    // struct ethtool_drvinfo: u32 cmd, char driver[32], … 196 bytes in all.
    let mut info = [0u64; 25];
    info[0] = u64::from(ETHTOOL_GDRVINFO);
    ioctl(&socket()?, ifname, &mut info)?;
    let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let name = bytes.get(4..36).unwrap_or(&[]);
    Ok(String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or(&[])).into_owned())
}

/// Every offload feature of `ifname` with whether it is active, e.g. `("tx-checksum-ip-generic", true)`.
pub fn features(ifname: &str) -> io::Result<Vec<(String, bool)>> {
    let fd = socket()?;
    // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[1]; }
    let mut info = [0u64; 3];
    info[0] = u64::from(ETHTOOL_GSSET_INFO);
    info[1] = 1u64 << ETH_SS_FEATURES;
    ioctl(&fd, ifname, &mut info)?;
    let count = (info[2] & 0xffff_ffff) as usize;
    if count == 0 || count > MAX_FEATURES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected feature count",
        ));
    }
    // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[len * 32]; }
    let mut strings = vec![0u64; (12 + count * ETH_GSTRING_LEN).div_ceil(8)];
    strings[0] = u64::from(ETHTOOL_GSTRINGS) | (u64::from(ETH_SS_FEATURES) << 32);
    strings[1] = count as u64;
    ioctl(&fd, ifname, &mut strings)?;
    let bytes: Vec<u8> = strings.iter().flat_map(|w| w.to_ne_bytes()).collect();
    // struct ethtool_gfeatures { u32 cmd; u32 size; struct { u32 available, requested, active, never_changed; } features[size]; }
    let blocks = count.div_ceil(32);
    let mut feats = vec![0u64; 1 + blocks * 2];
    feats[0] = u64::from(ETHTOOL_GFEATURES) | ((blocks as u64) << 32);
    ioctl(&fd, ifname, &mut feats)?;
    let fbytes: Vec<u8> = feats.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let word = |b: &[u8], at: usize| -> u32 {
        b.get(at..at + 4)
            .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let raw = bytes
            .get(12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN)
            .unwrap_or(&[]);
        let name = String::from_utf8_lossy(raw.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
        let active = word(&fbytes, 8 + (i / 32) * 16 + 8) & (1 << (i % 32)) != 0;
        if !name.is_empty() {
            out.push((name, active));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_reports_its_offloads() {
        let f = super::features("lo").unwrap();
        // Loopback never computes checksums: tx-checksum-ip-generic is on by default.
        assert!(f.iter().any(|(n, _)| n == "tx-checksum-ip-generic"), "{f:?}");
        assert!(f.iter().any(|(n, on)| n == "loopback" && *on), "{f:?}");
        assert!(super::features("no-such-if0").is_err());
        // Loopback has no ethtool driver info.
        assert!(super::driver("no-such-if0").is_err());
    }
}
