//! The overlayd probe: a VXLAN datagram of the network's VNI whose inner frame is addressed to the IEEE 802.1
//! link-local group `01:80:c2:00:00:0e` with the local-experimental EtherType 0x88b5, so a bridge never forwards
//! it to a container (a kernel VTEP hands it to its bridge, which consumes it). An overlayd answers a request
//! with a small reply to the request's source address, carrying its wall clock (for the clock-skew check).
//! A request may be padded to the full overlay MTU: sent with DF, it proves the underlay path carries
//! full-size frames (`overlayctl diag`).
//!
//! The inner source MAC is zero: no bridge learns it (a Linux bridge drops a frame with an invalid source) and a
//! kernel VTEP whose all-zero FDB entries are static drops it too; overlayd consumes the probe before learning.
//!
//! Inner frame: Ethernet header (dst above, src zero, type 0x88b5), then
//! `magic "OVLPROBE" (8) | version 1 (1) | kind 1=request 2=reply (1) | reserved 0 (6) | nonce (8, BE) |
//! clock unix ns (8, BE; 0 in requests) | padding zeros`.

use super::ethernet::{MacAddr, ETHERNET_HEADER_LEN};
use super::WireError;

pub const PROBE_DST: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e]);
/// IEEE 802 local experimental EtherType 1.
pub const ETHERTYPE_PROBE: u16 = 0x88b5;
pub const PROBE_MAGIC: [u8; 8] = *b"OVLPROBE";
pub const PROBE_VERSION: u8 = 1;
/// Probe body after the Ethernet header, without padding.
pub const PROBE_BODY_LEN: usize = 32;
/// Smallest inner frame that is a probe.
pub const PROBE_FRAME_MIN: usize = ETHERNET_HEADER_LEN + PROBE_BODY_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Request,
    Reply,
}

/// A parsed probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRepr {
    pub kind: ProbeKind,
    pub nonce: u64,
    /// The replier's wall clock (unix nanoseconds); 0 in requests.
    pub clock_ns: u64,
}

/// Whether an inner Ethernet frame is addressed as a probe (cheap; [`ProbeRepr::parse`] validates the rest).
#[inline]
pub fn is_probe_frame(frame: &[u8]) -> bool {
    frame.len() >= ETHERNET_HEADER_LEN
        && frame[..6] == PROBE_DST.0
        && frame[12..14] == ETHERTYPE_PROBE.to_be_bytes()
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl ProbeRepr {
    /// Parse an inner Ethernet frame.
    pub fn parse(frame: &[u8]) -> Result<ProbeRepr, WireError> {
        if frame.len() < PROBE_FRAME_MIN {
            return Err(WireError::Truncated {
                need: PROBE_FRAME_MIN,
                have: frame.len(),
            });
        }
        let b = &frame[ETHERNET_HEADER_LEN..];
        if !is_probe_frame(frame) || b[..8] != PROBE_MAGIC || b[8] != PROBE_VERSION {
            return Err(WireError::NotProbe);
        }
        let kind = match b[9] {
            1 => ProbeKind::Request,
            2 => ProbeKind::Reply,
            _ => return Err(WireError::NotProbe),
        };
        Ok(ProbeRepr {
            kind,
            nonce: be64(&b[16..24]),
            clock_ns: be64(&b[24..32]),
        })
    }

    /// Write the inner frame, padded with zeros to `len` (at least [`PROBE_FRAME_MIN`]) into `buf`; returns
    /// the length written, `None` if `buf` is too small.
    pub fn emit(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        let len = len.max(PROBE_FRAME_MIN);
        let out = buf.get_mut(..len)?;
        out.fill(0);
        out[..6].copy_from_slice(&PROBE_DST.0);
        out[12..14].copy_from_slice(&ETHERTYPE_PROBE.to_be_bytes());
        let b = &mut out[ETHERNET_HEADER_LEN..];
        b[..8].copy_from_slice(&PROBE_MAGIC);
        b[8] = PROBE_VERSION;
        b[9] = match self.kind {
            ProbeKind::Request => 1,
            ProbeKind::Reply => 2,
        };
        b[16..24].copy_from_slice(&self.nonce.to_be_bytes());
        b[24..32].copy_from_slice(&self.clock_ns.to_be_bytes());
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REQUEST: [u8; 46] = [
        0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e, 0, 0, 0, 0, 0, 0, 0x88, 0xb5, // Ethernet
        b'O', b'V', b'L', b'P', b'R', b'O', b'B', b'E', 1, 1, 0, 0, 0, 0, 0, 0, // magic, version, kind
        0, 0, 0, 0, 0, 0, 0x12, 0x34, // nonce
        0, 0, 0, 0, 0, 0, 0, 0, // clock
    ];

    #[test]
    fn parses_a_literal_request_and_round_trips() {
        let p = ProbeRepr::parse(&REQUEST).unwrap();
        assert_eq!(
            p,
            ProbeRepr {
                kind: ProbeKind::Request,
                nonce: 0x1234,
                clock_ns: 0
            }
        );
        let mut buf = [0xffu8; 100];
        assert_eq!(p.emit(&mut buf, 0), Some(46));
        assert_eq!(buf[..46], REQUEST);
        // Padded to 100 bytes, still a probe; a buffer too small is refused.
        assert_eq!(p.emit(&mut buf, 100), Some(100));
        assert_eq!(ProbeRepr::parse(&buf).unwrap(), p);
        assert_eq!(p.emit(&mut buf, 101), None);
    }

    #[test]
    fn rejects_what_is_not_a_probe() {
        assert!(ProbeRepr::parse(&REQUEST[..45]).is_err());
        for (i, v) in [(0, 0xff), (13, 0x00), (14, b'X'), (22, 2), (23, 3), (23, 0)] {
            let mut b = REQUEST;
            b[i] = v;
            assert!(ProbeRepr::parse(&b).is_err(), "byte {i} = {v}");
        }
        let mut reply = REQUEST;
        reply[23] = 2;
        assert_eq!(ProbeRepr::parse(&reply).unwrap().kind, ProbeKind::Reply);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = ProbeRepr::parse(&b);
            let _ = is_probe_frame(&b);
        }

        #[test]
        fn truncation_and_flips_never_panic(cut in 0usize..46, i in 0usize..46, x in any::<u8>()) {
            let mut b = REQUEST;
            b[i] ^= x;
            let _ = ProbeRepr::parse(&b[..cut]);
            let _ = ProbeRepr::parse(&b);
        }

        #[test]
        fn emit_parse_round_trip(nonce in any::<u64>(), clock in any::<u64>(), reply in any::<bool>(), len in 0usize..200) {
            let p = ProbeRepr { kind: if reply { ProbeKind::Reply } else { ProbeKind::Request }, nonce, clock_ns: clock };
            let mut buf = [0u8; 256];
            let n = p.emit(&mut buf, len).unwrap();
            prop_assert_eq!(n, len.max(PROBE_FRAME_MIN));
            prop_assert_eq!(ProbeRepr::parse(&buf[..n]).unwrap(), p);
        }
    }
}
