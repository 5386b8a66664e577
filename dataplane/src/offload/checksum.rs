//! Internet checksum (RFC 1071) and the TCP/UDP pseudo-header sums (RFC 793 §3.1, RFC 8200 §8.1).
//!
//! The hot loop adds 8 bytes at a time into a `u64` with end-around carry (RFC 1071 §4.1 "deferred carries"),
//! then folds to 16 bits. Words are read big endian so the running sum is in network order and can be mixed
//! with pseudo-header sums and field values without byte swapping at call sites.
//!
//! Vocabulary: `sum` is the unfolded, un-complemented accumulator; `fold` reduces it to 16 bits; `checksum`
//! is the value that goes into a header field (`!fold(sum)`). A packet verifies when
//! `fold(sum(packet, pseudo)) == 0xffff`.

/// Add `data` to the running ones'-complement sum `initial`. Never overflows; fold the result with [`fold`].
#[inline]
pub fn sum(data: &[u8], initial: u64) -> u64 {
    let mut acc = initial;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        acc = add_carry(acc, u64::from_be_bytes(w));
    }
    let rest = chunks.remainder();
    // Pad the 0..=7 trailing bytes with zeros on the right: that is exactly RFC 1071's rule for an odd byte
    // and keeps 16-bit word alignment for the rest.
    let mut w = [0u8; 8];
    if let Some(dst) = w.get_mut(..rest.len()) {
        dst.copy_from_slice(rest);
    }
    add_carry(acc, u64::from_be_bytes(w))
}

#[inline(always)]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    // If the add carried, `s <= u64::MAX - 1`, so adding the carry back cannot overflow again.
    s + u64::from(carry)
}

/// Fold a 64-bit running sum to 16 bits with end-around carry.
#[inline]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    // After these steps s <= 0xffff.
    s as u16
}

/// The field value for `data` with a starting sum (e.g. a pseudo-header sum): `!fold(sum(data, initial))`.
#[inline]
pub fn checksum(data: &[u8], initial: u64) -> u16 {
    !fold(sum(data, initial))
}

/// Pseudo-header sum for IPv4: source, destination, zero+protocol, L4 length (RFC 793 §3.1, RFC 768).
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u64 {
    u64::from(u32::from_be_bytes(src))
        + u64::from(u32::from_be_bytes(dst))
        + u64::from(proto)
        + u64::from(l4_len)
}

/// Pseudo-header sum for IPv6: source, destination, 32-bit upper-layer length, next header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_header_v6(src: [u8; 16], dst: [u8; 16], proto: u8, l4_len: u32) -> u64 {
    // Everything goes through the carrying adder: with hostile all-ones addresses the running sum can sit
    // right below u64::MAX, where a plain `+` would overflow.
    let s = sum(&src, 0);
    let s = sum(&dst, s);
    add_carry(s, u64::from(l4_len) + u64::from(proto))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 straight from the text: 16-bit big-endian words, odd byte padded, 32-bit accumulator folded.
    fn naive(data: &[u8], initial: u16) -> u16 {
        let mut s: u32 = u32::from(initial);
        let mut i = 0;
        while i + 1 < data.len() {
            s += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            s = (s & 0xffff) + (s >> 16);
            i += 2;
        }
        if i < data.len() {
            s += u32::from(data[i]) << 8;
            s = (s & 0xffff) + (s >> 16);
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d, 0)), 0xddf2);
        assert_eq!(checksum(&d, 0), !0xddf2);
    }

    #[test]
    fn ipv4_header_known_vector() {
        // Classic example header (Wikipedia "IPv4 header checksum"): checksum field b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h, 0), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(fold(sum(&h, 0)), 0xffff);
    }

    #[test]
    fn empty_and_odd() {
        assert_eq!(checksum(&[], 0), 0xffff);
        assert_eq!(checksum(&[0xab], 0), !0xab00);
        assert_eq!(checksum(&[1, 2, 3], 0), naive(&[1, 2, 3], 0));
    }

    #[test]
    fn all_ones_does_not_overflow() {
        let d = [0xffu8; 70_000];
        assert_eq!(checksum(&d, u64::MAX - 5), naive(&d, fold(u64::MAX - 5)));
    }

    #[test]
    fn pseudo_v6_matches_bytes() {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut ph = Vec::new();
        ph.extend_from_slice(&src);
        ph.extend_from_slice(&dst);
        ph.extend_from_slice(&70_000u32.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(fold(pseudo_header_v6(src, dst, 6, 70_000)), !naive(&ph, 0));
    }

    #[test]
    fn pseudo_v6_all_ones_does_not_overflow() {
        let ones = [0xffu8; 16];
        let mut ph = [0xffu8; 40];
        ph[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
        ph[36..].copy_from_slice(&[0, 0, 0, 0xff]);
        assert_eq!(fold(pseudo_header_v6(ones, ones, 0xff, u32::MAX)), !naive(&ph, 0));
    }

    proptest! {
        #[test]
        fn matches_naive(data in proptest::collection::vec(any::<u8>(), 0..3000), init in any::<u16>()) {
            prop_assert_eq!(checksum(&data, u64::from(init)), naive(&data, init));
        }

        #[test]
        fn split_sums_compose(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..300) {
            // Summing an even-length prefix and then the rest equals summing the whole.
            let cut = (cut.min(data.len())) & !1;
            let (a, b) = data.split_at(cut);
            prop_assert_eq!(fold(sum(b, sum(a, 0))), fold(sum(&data, 0)));
        }

        #[test]
        fn pseudo_v6_matches_naive(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), proto in any::<u8>(), len in any::<u32>()) {
            let mut ph = Vec::new();
            ph.extend_from_slice(&src);
            ph.extend_from_slice(&dst);
            ph.extend_from_slice(&len.to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, proto]);
            prop_assert_eq!(fold(pseudo_header_v6(src, dst, proto, len)), !naive(&ph, 0));
        }

        #[test]
        fn pseudo_v4_matches_bytes(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), proto in any::<u8>(), len in any::<u16>()) {
            let mut ph = Vec::new();
            ph.extend_from_slice(&src);
            ph.extend_from_slice(&dst);
            ph.extend_from_slice(&[0, proto]);
            ph.extend_from_slice(&len.to_be_bytes());
            prop_assert_eq!(fold(pseudo_header_v4(src, dst, proto, len)), !naive(&ph, 0));
        }
    }
}
