//! Rate limit for broadcast and multicast frames from the TAP, per source MAC (issue 9 §4, `--bum-pps`).
//!
//! Each source gets `pps` frames per second with bursts of up to [`burst`]`(pps)` frames, as a GCRA (the
//! token bucket written as one "theoretical arrival time" per source, RFC 2697's single-rate meter in its
//! virtual-scheduling form). Time is explicit (`now`); nothing here reads a clock.
//!
//! The table is bounded: [`SETS`] × [`WAYS`] slots, a source's set chosen by a keyed hash so a flood of
//! chosen MACs cannot aim at one set. A slot whose bucket has refilled is free (forgetting a full bucket
//! loses nothing). A new source whose set has no free slot is refused (fail closed) until one refills.
//!
//! Must never: allocate after [`BumLimiter::new`], or let a flood of new source MACs buy a fresh burst each:
//! the engine charges every source MAC that the FDB refused as local (beyond `--max-local-macs`) to one
//! shared source, [`MacAddr::ZERO`] (never a real source).

use crate::wire::MacAddr;
use std::hash::BuildHasher;
use std::time::Instant;

/// Default `--bum-pps`.
pub const DEFAULT_BUM_PPS: u32 = 1000;
/// Sets in the table.
pub const SETS: usize = 1024;
/// Slots per set.
pub const WAYS: usize = 4;

/// Frames a source may send back to back: a tenth of a second's worth, at least 10.
pub fn burst(pps: u32) -> u32 {
    (pps / 10).max(10)
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    mac: MacAddr,
    /// Theoretical arrival time of the next conforming frame, ns since `epoch`; 0 = unused.
    tat: u64,
}

#[derive(Debug)]
pub struct BumLimiter {
    slots: Box<[Slot]>,
    /// Nanoseconds between frames at the sustained rate.
    interval: u64,
    /// How far ahead of `now` a source's arrival time may run: `interval × (burst - 1)`.
    tolerance: u64,
    key: u64,
    epoch: Option<Instant>,
}

impl BumLimiter {
    /// `pps` > 0 frames per second per source MAC.
    pub fn new(pps: u32) -> BumLimiter {
        let key = std::collections::hash_map::RandomState::new().hash_one(0x6275_6d70_7073u64);
        BumLimiter::with_key(pps, key)
    }

    /// As [`BumLimiter::new`] with a fixed hash key (tests).
    pub fn with_key(pps: u32, key: u64) -> BumLimiter {
        let interval = 1_000_000_000 / u64::from(pps.max(1));
        BumLimiter {
            slots: vec![Slot::default(); SETS * WAYS].into_boxed_slice(),
            interval,
            tolerance: interval * u64::from(burst(pps) - 1),
            key,
            epoch: None,
        }
    }

    fn set_of(&self, mac: &MacAddr) -> usize {
        let mut w = [0u8; 8];
        w[..6].copy_from_slice(&mac.0);
        let mut z = u64::from_le_bytes(w) ^ self.key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        // SETS is a power of two; the remainder is < SETS.
        usize::try_from((z ^ (z >> 31)) % SETS as u64).unwrap_or(0)
    }

    /// Whether a broadcast/multicast frame from `src` at `now` is within its budget (and charge it).
    pub fn allow(&mut self, src: MacAddr, now: Instant) -> bool {
        let epoch = *self.epoch.get_or_insert(now);
        // +1 so that a used slot's `tat` is never 0 (0 marks a free slot).
        let t = u64::try_from(now.saturating_duration_since(epoch).as_nanos())
            .unwrap_or(u64::MAX / 2)
            .saturating_add(1);
        let base = self.set_of(&src) * WAYS;
        let set = &mut self.slots[base..base + WAYS];
        let i = match set.iter().position(|s| s.tat != 0 && s.mac == src) {
            Some(i) => i,
            None => match set.iter().position(|s| s.tat <= t) {
                Some(i) => {
                    set[i] = Slot { mac: src, tat: 0 };
                    i
                }
                // Every slot of the set holds a source still within its burst: fail closed.
                None => return false,
            },
        };
        let s = &mut set[i];
        let tat = s.tat.max(t);
        if tat - t > self.tolerance {
            return false;
        }
        s.tat = tat + self.interval;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mac(n: u16) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([2, 0, 0, 0, b[0], b[1]])
    }

    /// Frames `allow`ed out of `n` sent from `src` at `gap` intervals starting at `t`.
    fn passed(l: &mut BumLimiter, src: MacAddr, t: Instant, n: u32, gap: Duration) -> u32 {
        (0..n).filter(|i| l.allow(src, t + gap * *i)).count() as u32
    }

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut l = BumLimiter::with_key(100, 1);
        assert_eq!(burst(100), 10);
        // 50 frames at once: the burst passes, the rest is refused.
        assert_eq!(passed(&mut l, mac(1), t0, 50, Duration::ZERO), 10);
        // Another source is not affected.
        assert_eq!(passed(&mut l, mac(2), t0, 50, Duration::ZERO), 10);
        // After 1 s the bucket is full again (10), and then 100 per second pass: 10 s at 1000 frames/s.
        let t1 = t0 + Duration::from_secs(1);
        let n = passed(&mut l, mac(1), t1, 10_000, Duration::from_millis(1));
        assert!((1000..=1011).contains(&n), "{n} passed in 10 s at 100 pps");
        // Exactly at the rate, nothing is refused.
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(passed(&mut l, mac(1), t2, 500, Duration::from_millis(10)), 500);
    }

    #[test]
    fn table_is_bounded_and_fails_closed() {
        let t0 = Instant::now();
        let mut l = BumLimiter::with_key(1000, 7);
        // More simultaneous sources than slots: every one gets its first frame only while its set has room.
        let n = (SETS * WAYS * 2) as u16;
        let first = (0..n).filter(|i| l.allow(mac(*i), t0)).count();
        assert!(
            first <= SETS * WAYS,
            "{first} sources admitted into {} slots",
            SETS * WAYS
        );
        assert!(first >= SETS * WAYS / 2, "only {first} sources admitted");
        assert_eq!(l.slots.len(), SETS * WAYS);
        // Once their buckets refilled (burst 100 at 1000 pps: 1 ms per frame spent), slots are free again.
        let later = t0 + Duration::from_millis(2);
        let again = (n / 2..n).filter(|i| l.allow(mac(*i), later)).count();
        assert!(
            again >= SETS * WAYS / 2,
            "only {again} new sources admitted once slots refilled"
        );
    }

    #[test]
    fn time_before_the_first_call_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut l = BumLimiter::with_key(10, 3);
        assert!(l.allow(mac(1), t0));
        // An earlier `now` (another thread's clock read) is treated as the epoch, not an underflow.
        assert!(l.allow(mac(1), t0 - Duration::from_secs(1)));
    }
}
