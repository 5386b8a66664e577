//! MAC mobility dampening (RFC 7432 §15): a MAC that changes owner (VTEP) more than `max_moves` times within
//! `window` is frozen at its current owner for the rest of that window, so two hosts that both claim one MAC
//! (a spoofing container, a duplicated VM) cannot make the rest of the overlay chase it back and forth.
//!
//! The window is fixed: it opens at the first move after the previous window closed, and the move counter
//! restarts with it. State is two integers per FDB entry; time is the FDB's nanosecond clock passed in by the
//! caller (never read here).

use std::time::Duration;

/// Dampening thresholds; [`Damping::default`] is RFC 7432's 5 moves in 180 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damping {
    /// Owner changes allowed per window; the next one is refused (and counted as `mac_flaps`).
    pub max_moves: u32,
    /// Length of the window, from its first move.
    pub window: Duration,
}

impl Damping {
    /// RFC 7432 §15 default "M": moves tolerated per window.
    pub const DEFAULT_MAX_MOVES: u32 = 5;
    /// RFC 7432 §15 default "N" seconds.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(180);

    fn window_ns(&self) -> u64 {
        u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for Damping {
    fn default() -> Self {
        Damping {
            max_moves: Self::DEFAULT_MAX_MOVES,
            window: Self::DEFAULT_WINDOW,
        }
    }
}

/// One MAC's move history: when its current window opened and how many moves it has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Moves {
    start: u64,
    count: u32,
}

impl Moves {
    fn roll(&mut self, now: u64, d: &Damping) {
        if self.count == 0 || now.saturating_sub(self.start) >= d.window_ns() {
            self.start = now;
            self.count = 0;
        }
    }

    /// Whether a move at `now` would be refused.
    #[cfg(test)]
    pub(crate) fn frozen(&self, now: u64, d: &Damping) -> bool {
        let mut m = *self;
        m.roll(now, d);
        m.count >= d.max_moves
    }

    /// Record an owner change at `now`. Returns false, recording nothing, when the MAC is frozen — unless
    /// `force`: a MAC that appears behind (or leaves) our own bridge moves whatever the history says, because
    /// refusing that would cut off a container that is really here (or point at one that is gone).
    pub(crate) fn try_move(&mut self, now: u64, d: &Damping, force: bool) -> bool {
        self.roll(now, d);
        if !force && self.count >= d.max_moves {
            return false;
        }
        self.count = self.count.saturating_add(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn sixth_move_in_the_window_is_refused_until_it_closes() {
        let d = Damping::default();
        let mut m = Moves::default();
        let t0 = 7 * S;
        for i in 0..5 {
            assert!(m.try_move(t0 + i * S, &d, false), "move {} allowed", i + 1);
        }
        assert!(m.frozen(t0 + 5 * S, &d));
        assert!(
            !m.try_move(t0 + 5 * S, &d, false),
            "6th move within 180 s refused"
        );
        assert!(
            !m.try_move(t0 + 179 * S, &d, false),
            "still frozen just before the window closes"
        );
        assert!(!m.frozen(t0 + 180 * S, &d), "window closed");
        assert!(m.try_move(t0 + 180 * S, &d, false), "a new window opens");
        assert_eq!(m.count, 1);
        assert_eq!(m.start, t0 + 180 * S);
    }

    #[test]
    fn slow_moves_never_freeze() {
        let d = Damping::default();
        let mut m = Moves::default();
        // One move every 40 s: at most 5 per 180 s window, so never more than the threshold.
        for i in 0..50 {
            assert!(m.try_move(i * 40 * S, &d, false), "move {i}");
        }
    }

    #[test]
    fn forced_moves_pass_and_count() {
        let d = Damping {
            max_moves: 2,
            window: Duration::from_secs(10),
        };
        let mut m = Moves::default();
        assert!(m.try_move(0, &d, false));
        assert!(m.try_move(S, &d, false));
        assert!(!m.try_move(2 * S, &d, false));
        assert!(m.try_move(2 * S, &d, true), "forced");
        assert!(!m.try_move(3 * S, &d, false));
        assert!(m.try_move(10 * S, &d, false));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let d = Damping {
            max_moves: u32::MAX,
            window: Duration::MAX,
        };
        let mut m = Moves::default();
        assert!(m.try_move(u64::MAX, &d, false));
        assert!(m.try_move(0, &d, false), "time going backwards is not a panic");
        let z = Damping {
            max_moves: 0,
            window: Duration::ZERO,
        };
        assert!(m.frozen(5, &z), "max_moves 0: never moves");
        assert!(!m.try_move(5, &z, false));
    }
}
