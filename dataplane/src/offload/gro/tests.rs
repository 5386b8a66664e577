//! Tests of the GRO coalescer: the harness (a wrapper that keeps one receive region per test) and its helpers;
//! the tests themselves are grouped by concern in `tests/`.

use super::*;
use crate::offload::gso::segment;
use crate::offload::testutil::*;
use crate::offload::virtio::{VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_LEN};
use proptest::prelude::*;

/// The tests drive the real coalescer through this wrapper of the same name: every pushed frame is appended to
/// one arena that stays one receive epoch (as the worker keeps a `recvmmsg` batch until its flush), and every
/// emitted iovec list is turned back into (virtio header, frame).
struct Coalescer {
    c: super::Coalescer,
    arena: Vec<u8>,
}

const EPOCH: u64 = 7;

fn unvec(emit: &mut impl FnMut(&[u8; VIRTIO_NET_HDR_LEN], &[u8]), iov: &[IoSlice<'_>]) {
    let h: [u8; VIRTIO_NET_HDR_LEN] = iov[0][..].try_into().expect("virtio header first");
    assert!(iov.len() <= MAX_IOVECS);
    let f: Vec<u8> = iov[1..].iter().flat_map(|s| s.iter().copied()).collect();
    emit(&h, &f)
}

impl Coalescer {
    fn new(max_flows: usize) -> Self {
        Coalescer {
            c: super::Coalescer::new(max_flows),
            arena: Vec::new(),
        }
    }
    fn push(&mut self, f: &[u8], mut emit: impl FnMut(&[u8; VIRTIO_NET_HDR_LEN], &[u8])) -> PushOutcome {
        let start = self.arena.len();
        self.arena.extend_from_slice(f);
        let r = Region::new(&self.arena, EPOCH);
        self.c
            .push(r, start..self.arena.len(), |iov| unvec(&mut emit, iov))
    }
    fn flush(&mut self, mut emit: impl FnMut(&[u8; VIRTIO_NET_HDR_LEN], &[u8])) {
        self.c
            .flush(Region::new(&self.arena, EPOCH), |iov| unvec(&mut emit, iov));
        assert_eq!(self.c.stale_drops(), 0);
    }
    fn pending(&self) -> usize {
        self.c.pending()
    }
}

type Out = Vec<(VirtioNetHdr, Vec<u8>)>;

fn sink(out: &mut Out) -> impl FnMut(&[u8; VIRTIO_NET_HDR_LEN], &[u8]) + '_ {
    |h, f| out.push((VirtioNetHdr::decode(h).unwrap(), f.to_vec()))
}

const MSS: usize = 1448;

/// `n` consecutive full segments of one flow starting at `t.seq`, IDs consecutive.
fn flow(t: Tcp, n: usize, v6: bool, salt: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let ti = Tcp {
                seq: t.seq.wrapping_add((i * MSS) as u32),
                ip_id: t.ip_id.wrapping_add(i as u16),
                ..t
            };
            let data = payload(MSS, salt.wrapping_add(i as u8));
            if v6 {
                tcp6(&ti, &data)
            } else {
                tcp4(&ti, &data)
            }
        })
        .collect()
}

fn tcp_payload(f: &[u8]) -> &[u8] {
    let h = crate::offload::headers::parse(f).unwrap();
    &f[h.payload_off..h.ip_end]
}

fn push_all(c: &mut Coalescer, frames: &[Vec<u8>], out: &mut Out) -> Vec<PushOutcome> {
    frames.iter().map(|f| c.push(f, sink(out))).collect()
}

/// Split a merged superframe back with gso::segment (as the kernel would) and return the frames.
fn resegment(h: &VirtioNetHdr, f: &[u8]) -> Vec<Vec<u8>> {
    let mut frame = f.to_vec();
    let mut out = vec![0u8; 200_000];
    let s = segment(h, &mut frame, &[], &mut out).unwrap();
    out[..s.total_len].chunks(s.stride).map(|c| c.to_vec()).collect()
}

fn single_frames(out: &Out) -> Vec<Vec<u8>> {
    out.iter()
        .flat_map(|(h, f)| {
            if h.gso_type == VIRTIO_NET_HDR_GSO_NONE {
                vec![f.clone()]
            } else {
                resegment(h, f)
            }
        })
        .collect()
}

/// What a kernel sender with TX checksum offload on a veth leaves in the frame: the TCP/UDP checksum field
/// holds the folded pseudo-header sum (computed here with the independent naive sum).
fn make_partial(mut f: Vec<u8>) -> Vec<u8> {
    let v6 = u16::from_be_bytes([f[12], f[13]]) == 0x86dd;
    let (l4, src, dst, proto): (usize, &[u8], &[u8], u8) = if v6 {
        (54, &SRC6, &DST6, f[20])
    } else {
        (34, &SRC4, &DST4, f[23])
    };
    let at = l4 + if proto == 6 { 16 } else { 6 };
    let len = ((f.len() - l4) as u32).to_be_bytes();
    let p = naive_sum(&[src, dst, &[0, proto], &len[..]]);
    f[at..at + 2].copy_from_slice(&p.to_be_bytes());
    f
}

mod hostile;
mod merge;
mod partial;
mod region;
