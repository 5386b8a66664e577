//! Hostile input: arbitrary and corrupted frames never panic, and per-flow order survives any mix.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let mut c = Coalescer::new(2);
        for f in &frames {
            c.push(f, |_, _| {});
        }
        c.flush(|_, _| {});
    }

    #[test]
    fn corrupted_segments_never_panic(idx in any::<prop::sample::Index>(), flip in 1u8.., n in 1usize..6, cut in any::<prop::sample::Index>()) {
        let mut frames = flow(Tcp { timestamps: Some((1, 1)), ..Tcp::default() }, n, n % 2 == 0, 0);
        let k = idx.index(frames.len());
        let i = idx.index(frames[k].len());
        frames[k][i] ^= flip;
        let keep = cut.index(frames[k].len() + 1);
        frames[k].truncate(keep);
        let mut c = Coalescer::new(2);
        let mut out = Out::new();
        push_all(&mut c, &frames, &mut out);
        c.flush(sink(&mut out));
    }

    /// Per-flow order is preserved whatever mix of gaps, PSH, short segments, corruption and interleaving.
    #[test]
    fn per_flow_order_preserved(
        ops in proptest::collection::vec((0usize..3, 0u8..8, any::<u8>()), 1..60),
        slots in 0usize..4,
    ) {
        let mut seq = [1000u32, 5000, 9000];
        let mut id = [10u16, 20, 30];
        let mut pushed: Vec<(usize, Vec<u8>)> = Vec::new();
        for (fl, kind, salt) in ops {
            let len = if kind == 1 { 300 } else if kind == 7 { 0 } else { MSS };
            if kind == 2 { seq[fl] = seq[fl].wrapping_add(7); } // gap
            let t = Tcp { sport: fl as u16 + 1, seq: seq[fl], ip_id: id[fl], psh: kind == 3, ..Tcp::default() };
            let mut f = if fl == 2 { tcp6(&t, &payload(len, salt)) } else { tcp4(&t, &payload(len, salt)) };
            if kind == 4 { let l = f.len(); f[l - 1] ^= 0x40; }
            seq[fl] = seq[fl].wrapping_add(len as u32);
            id[fl] = id[fl].wrapping_add(1);
            pushed.push((fl, f));
        }
        let mut c = Coalescer::new(slots);
        let mut out = Out::new();
        for (_, f) in &pushed {
            c.push(f, sink(&mut out));
        }
        c.flush(sink(&mut out));
        let got = single_frames(&out);
        prop_assert_eq!(got.len(), pushed.len());
        let sport = |f: &[u8]| {
            let h = crate::offload::headers::parse(f).unwrap();
            u16::from_be_bytes([f[h.l4_off], f[h.l4_off + 1]])
        };
        for fl in 0..3 {
            let want: Vec<&Vec<u8>> = pushed.iter().filter(|(g, _)| *g == fl).map(|(_, f)| f).collect();
            let have: Vec<&Vec<u8>> = got.iter().filter(|f| usize::from(sport(f)) == fl + 1).collect();
            prop_assert_eq!(have, want);
        }
    }
}
