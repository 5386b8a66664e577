//! RX after `recvmmsg`: every datagram of one receive batch (each slot may be a GRO train) → probe answer, drop,
//! or TAP write. Coalesced TCP superframes are written without copying their payload
//! ([`crate::offload::Coalescer`]): the TAP write gathers the payload straight from `batch`, so everything pending
//! is flushed before this returns and before `batch` is refilled.

use super::{queue_probe_reply, TapWrite};
use crate::engine::Engine;
use crate::io::{RecvBatch, SendBatch, TapQueue};
use crate::network::Network;
use crate::offload::{self, Coalescer, VIRTIO_NET_HDR_LEN};
use crate::stats::{Counters, DropReason};
use crate::wire::probe::{self, ProbeKind};
use crate::wire::{ETHERNET_HEADER_LEN, VXLAN_HEADER_LEN};
use std::cell::Cell;
use std::io::IoSlice;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// The byte ranges of the datagrams in a slot of `len` bytes starting at `base`, split at `stride` (a GRO
/// train); an empty slot is one empty datagram (it still counts, and drops as `short`).
pub(super) fn datagram_ranges(base: usize, len: usize, stride: usize) -> impl Iterator<Item = Range<usize>> {
    let stride = stride.max(1);
    let count = len.div_ceil(stride).max(1);
    (0..count).map(move |k| {
        let start = base + k * stride;
        start..(start + stride).min(base + len)
    })
}

/// What the RX loop keeps across batches.
pub(super) struct RxState {
    pub gro: Coalescer,
    pub coalesce: bool,
    /// Without a virtio header, a received superframe is cut into frames here.
    pub seg_buf: Vec<u8>,
    pub replies: SendBatch,
}

/// Per-batch inputs: the network table and the network whose TAP `write` (and the coalescer's pending
/// frames) go to.
struct Nets<'n> {
    nets: &'n [Arc<Network>],
    cur: &'n Cell<usize>,
}

/// Handle slots `0..n` of `batch`; every coalesced superframe is written before returning.
pub(super) fn rx_batch(
    engine: &mut Engine,
    st: &mut RxState,
    nets: &[Arc<Network>],
    cur: &Cell<usize>,
    batch: &mut RecvBatch,
    n: usize,
    write: &TapWrite<'_>,
) {
    let now = Instant::now();
    let nets = Nets { nets, cur };
    let unattributed = engine.unattributed().clone();
    for i in 0..n {
        let (src, len, stride) = {
            let (meta, _) = batch.get(i);
            (meta.src, meta.len, meta.stride.max(1))
        };
        unattributed
            .gro_segments
            .observe(len.div_ceil(stride).max(1) as u64);
        for dg in datagram_ranges(batch.slot_start(i), len, stride) {
            rx_datagram(engine, st, &nets, batch, src, dg, now, write);
        }
    }
    st.gro.flush(batch.region(), write);
    // Every push and flush above used this batch's epoch, so nothing can have been dropped as stale.
    debug_assert_eq!(st.gro.stale_drops(), 0);
}

#[allow(clippy::too_many_arguments)]
fn rx_datagram(
    engine: &mut Engine,
    st: &mut RxState,
    nets: &Nets<'_>,
    batch: &mut RecvBatch,
    src: std::net::SocketAddr,
    dg: Range<usize>,
    now: Instant,
    write: &TapWrite<'_>,
) {
    let region = batch.region();
    let Some(dgram) = region.bytes.get(dg.clone()) else {
        return;
    };
    // A valid overlayd probe is answered (requests) and consumed, outside the traffic counters; anything else
    // that looks like one takes the normal path and its checks.
    if dgram.get(VXLAN_HEADER_LEN..).is_some_and(probe::is_probe_frame) {
        if let Some((p, ni)) = engine.on_probe_for(now, src, dgram) {
            if p.kind == ProbeKind::Request {
                queue_probe_reply(&mut st.replies, engine.header_of(ni), p.nonce, src);
            }
            return;
        }
    }
    let d = match engine.on_underlay(now, src, dgram) {
        Ok(d) => d,
        Err(d) => {
            let c = engine.counters_of(d.net.unwrap_or(usize::MAX));
            Counters::add(&c.rx_datagrams, 1);
            c.count_drop(d.reason, 1);
            return;
        }
    };
    let Some(net) = nets.nets.get(d.net) else { return };
    let w = engine.worker();
    let counters = net.rx.of(w);
    Counters::add(&counters.rx_datagrams, 1);
    let frange = dg.start + d.frame.start..dg.start + d.frame.end;
    let Some(flen) = region.bytes.get(frange.clone()).map(<[u8]>::len) else {
        return;
    };
    if nets.cur.get() != d.net {
        // Frames pending for another network's TAP go out first.
        st.gro.flush(batch.region(), write);
        nets.cur.set(d.net);
    }
    let vnet = net.queue_of(w).is_some_and(TapQueue::vnet_hdr);
    let tap_mtu = net.tap_mtu;
    // A kernel sender's UDP-tunnel GSO packet arrives whole (offload::tunnel): one TSO superframe to the TAP,
    // after any pending coalesced frames (flow order); without a virtio header, cut into MTU-sized frames here.
    if flen > ETHERNET_HEADER_LEN + usize::from(tap_mtu) {
        let sf = batch
            .region_mut(frange.clone())
            .and_then(|f| offload::superframe_hdr(f, tap_mtu));
        if let Some(h) = sf {
            Counters::add(&counters.tx_bytes, flen as u64);
            if vnet {
                let payload = flen.saturating_sub(usize::from(h.hdr_len));
                let segs = payload.div_ceil(usize::from(h.gso_size).max(1));
                Counters::add(&counters.tx_frames, segs as u64);
                let region = batch.region();
                st.gro.flush(region, write);
                let frame = region.bytes.get(frange).unwrap_or(&[]);
                write(&[IoSlice::new(&h.to_bytes()), IoSlice::new(frame)]);
            } else {
                let frame = batch.region_mut(frange).unwrap_or(&mut []);
                match offload::segment(&h, frame, &[], &mut st.seg_buf) {
                    Ok(s) if s.stride > 0 => {
                        Counters::add(&counters.tx_frames, s.count as u64);
                        for f in st.seg_buf.get(..s.total_len).unwrap_or(&[]).chunks(s.stride) {
                            write(&[IoSlice::new(&[0; VIRTIO_NET_HDR_LEN]), IoSlice::new(f)]);
                        }
                    }
                    _ => counters.count_drop(DropReason::BadOffload, 1),
                }
            }
            return;
        }
    }
    Counters::add(&counters.tx_frames, 1);
    Counters::add(&counters.tx_bytes, flen as u64);
    // Inner checksums a kernel sender left partial (offload::partial): NEEDS_CSUM through the virtio header,
    // or completed here when the TAP has none.
    if st.coalesce && vnet {
        st.gro.push(batch.region(), frange, write);
    } else if vnet {
        let frame = batch.region().bytes.get(frange).unwrap_or(&[]);
        write(&[IoSlice::new(&offload::rx_header(frame)), IoSlice::new(frame)]);
    } else {
        let frame = batch.region_mut(frange).unwrap_or(&mut []);
        offload::fill_partial(frame);
        write(&[IoSlice::new(&[0; VIRTIO_NET_HDR_LEN]), IoSlice::new(frame)]);
    }
}

#[cfg(test)]
mod tests {
    use super::datagram_ranges;

    #[test]
    fn datagram_ranges_split_a_train() {
        let r: Vec<_> = datagram_ranges(1000, 250, 100).collect();
        assert_eq!(r, vec![1000..1100, 1100..1200, 1200..1250]);
        let r: Vec<_> = datagram_ranges(0, 300, 100).collect();
        assert_eq!(r, vec![0..100, 100..200, 200..300]);
        // Not coalesced: one datagram; an empty slot is one empty datagram.
        assert_eq!(datagram_ranges(64, 80, 80).collect::<Vec<_>>(), vec![64..144]);
        assert_eq!(datagram_ranges(64, 0, 0).collect::<Vec<_>>(), vec![64..64]);
        assert_eq!(datagram_ranges(7, 5, 0).count(), 5, "stride 0 taken as 1");
    }
}
