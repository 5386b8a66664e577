//! Underlay packet capture for end-to-end tests: `tcpdump -w` writes a pcap file, and this module parses the
//! VXLAN datagrams in it itself (outer IPv4/UDP, VXLAN, inner Ethernet/IPv4/TCP) rather than relying on
//! tcpdump's text output. Headers only: the capture is cut at [`SNAPLEN`] bytes per packet.
#![allow(dead_code)]

use super::testbed::{wait_until, Daemon, Host, Netns};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// Bytes kept per packet: outer Ethernet + IPv4 + UDP + VXLAN (50) + inner Ethernet + IPv4 + TCP with options.
pub const SNAPLEN: usize = 256;

/// A running `tcpdump` writing to a pcap file.
pub struct Capture {
    tcpdump: Daemon,
    path: PathBuf,
}

/// The inner TCP/IPv4 segment of a VXLAN datagram (headers as captured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerTcp {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// TCP length by the inner IP header (for a GSO packet, the whole superframe).
    pub tcp_len: u16,
    pub checksum: u16,
    /// The checksum field holds exactly the folded pseudo-header sum (CHECKSUM_PARTIAL left unfilled).
    pub partial: bool,
}

/// One captured VXLAN datagram (outer IPv4/UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanPkt {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub vni: u32,
    /// EtherType of the inner frame (0x88b5: an overlayd liveness probe, see `dataplane::wire::probe`).
    pub inner_ethertype: u16,
    pub inner: Option<InnerTcp>,
}

/// EtherType of overlayd's liveness probes (`dataplane::wire::probe::ETHERTYPE_PROBE`).
pub const ETHERTYPE_PROBE: u16 = 0x88b5;

impl VxlanPkt {
    /// An overlayd liveness probe (request or reply) rather than a container's frame.
    pub fn is_probe(&self) -> bool {
        self.inner_ethertype == ETHERTYPE_PROBE
    }
}

impl Capture {
    /// Starts `tcpdump -i iface` in `ns` with the pcap `filter` and waits (10 s) until it listens. Fails naming
    /// the Debian package when tcpdump is missing.
    pub fn start(ns: &impl Netns, iface: &str, filter: &str) -> Capture {
        if let Err(e) = ns.exec("tcpdump", &["--version"]) {
            panic!("this test needs tcpdump (apt-get install tcpdump): {e}");
        }
        let path = ns.log_dir().join(format!("{}-{iface}.pcap", ns.ns()));
        let p = path.to_string_lossy().into_owned();
        let snap = SNAPLEN.to_string();
        let mut tcpdump = ns.spawn(
            "tcpdump",
            // Immediate mode: packets reach tcpdump (and, with -U, the file) as they arrive, not in ring
            // blocks that a stop would discard.
            &[
                "-i",
                iface,
                "-n",
                "--immediate-mode",
                "-U",
                "-s",
                &snap,
                "-w",
                &p,
                filter,
            ],
        );
        let up = wait_until(Duration::from_secs(10), || {
            tcpdump.log().contains("listening on") || !tcpdump.is_running()
        });
        assert!(
            up && tcpdump.is_running(),
            "tcpdump did not start listening on {iface} in {}:\n{}",
            ns.ns(),
            tcpdump.log()
        );
        Capture { tcpdump, path }
    }

    /// Waits until the capture file has stopped growing for 300 ms (at most 10 s), stops tcpdump (SIGINT) and
    /// parses the VXLAN datagrams it saw.
    pub fn stop(mut self) -> Vec<VxlanPkt> {
        let size = || std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let (mut last, mut since) = (size(), std::time::Instant::now());
        wait_until(Duration::from_secs(10), || {
            let now = size();
            if now != last {
                (last, since) = (now, std::time::Instant::now());
            }
            since.elapsed() >= Duration::from_millis(300)
        });
        let _ = self.tcpdump.signal("INT");
        if self.tcpdump.wait_timeout(Duration::from_secs(10)).is_none() {
            self.tcpdump.kill();
        }
        let bytes = std::fs::read(&self.path)
            .unwrap_or_else(|e| panic!("cannot read capture {}: {e}", self.path.display()));
        println!(
            "capture {}: {} bytes; tcpdump: {}",
            self.path.display(),
            bytes.len(),
            self.tcpdump.log().trim()
        );
        parse_pcap(&bytes).unwrap_or_else(|e| panic!("capture {}: {e}", self.path.display()))
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ipv4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// Parses a classic pcap file (either byte order, µs or ns timestamps, link type Ethernet) and returns the
/// packets that are IPv4/UDP to or from port 4789 with a VXLAN header.
pub fn parse_pcap(b: &[u8]) -> Result<Vec<VxlanPkt>, String> {
    let magic = b.get(..4).ok_or("no pcap header")?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(format!("not a pcap file (magic {magic:02x?})")),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })
    };
    let linktype = u32_at(20).ok_or("short pcap header")?;
    if linktype != 1 {
        return Err(format!("link type {linktype}, expected 1 (Ethernet)"));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let caplen = u32_at(at + 8).ok_or("short record header")? as usize;
        let pkt = b.get(at + 16..at + 16 + caplen).ok_or("truncated record")?;
        at += 16 + caplen;
        if let Some(p) = parse_vxlan(pkt) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Outer Ethernet/IPv4/UDP/VXLAN, then the inner frame if it is IPv4/TCP.
pub fn parse_vxlan(f: &[u8]) -> Option<VxlanPkt> {
    if be16(f, 12)? != 0x0800 {
        return None;
    }
    let ihl = usize::from(*f.get(14)? & 0x0f) * 4;
    if *f.get(23)? != 17 {
        return None;
    }
    let udp = 14 + ihl;
    let (sport, dport) = (be16(f, udp)?, be16(f, udp + 2)?);
    if sport != 4789 && dport != 4789 {
        return None;
    }
    let vx = udp + 8;
    if *f.get(vx)? & 0x08 == 0 {
        return None;
    }
    let v = f.get(vx + 4..vx + 7)?;
    let vni = u32::from_be_bytes([0, v[0], v[1], v[2]]);
    Some(VxlanPkt {
        src: ipv4(f, 26)?,
        dst: ipv4(f, 30)?,
        sport,
        dport,
        vni,
        inner_ethertype: be16(f, vx + 8 + 12).unwrap_or(0),
        inner: f.get(vx + 8..).and_then(parse_inner_tcp),
    })
}

/// Inner Ethernet/IPv4/TCP headers, with an independent check for a partial checksum.
pub fn parse_inner_tcp(f: &[u8]) -> Option<InnerTcp> {
    if be16(f, 12)? != 0x0800 || *f.get(23)? != 6 {
        return None;
    }
    let ihl = usize::from(*f.get(14)? & 0x0f) * 4;
    let total = be16(f, 16)?;
    let tcp_len = total.checked_sub(ihl as u16)?;
    let (src, dst) = (ipv4(f, 26)?, ipv4(f, 30)?);
    let l4 = 14 + ihl;
    let checksum = be16(f, l4 + 16)?;
    // Pseudo-header: source, destination, zero + protocol, TCP length — 16-bit words, end-around carry.
    let mut s: u32 = 6 + u32::from(tcp_len);
    for o in [src.octets(), dst.octets()] {
        s += u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    Some(InnerTcp {
        src,
        dst,
        sport: be16(f, l4)?,
        dport: be16(f, l4 + 2)?,
        tcp_len,
        checksum,
        partial: checksum == s as u16,
    })
}

/// Text capture (when a test only needs tcpdump's one-line summaries): `tcpdump -e -n -l -i iface filter` in `host`; returns it once it listens.
pub fn text_capture(host: &Host, iface: &str, filter: &str) -> Daemon {
    if let Err(e) = host.exec("tcpdump", &["--version"]) {
        panic!("this test needs tcpdump (apt-get install tcpdump): {e}");
    }
    let mut args = vec!["-e", "-n", "-l", "-i", iface];
    args.extend(filter.split(' '));
    let mut t = host.spawn("tcpdump", &args);
    let up = wait_until(Duration::from_secs(10), || {
        t.log().contains("listening on") || !t.is_running()
    });
    assert!(
        up && t.is_running(),
        "tcpdump on {iface} did not start:\n{}",
        t.log()
    );
    t
}

/// Stops a capture and returns its packet lines.
pub fn text_lines(mut t: Daemon) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(300));
    let _ = t.signal("INT");
    if t.wait_timeout(Duration::from_secs(10)).is_none() {
        t.kill();
    }
    t.log()
        .lines()
        .filter(|l| l.contains(" > ") || l.contains("ARP"))
        .map(str::to_string)
        .collect()
}
