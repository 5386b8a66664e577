//! Timers of [`ControlNode`]: foca's (with the Lifeguard-style guard against false deaths: local
//! health and the silence window), pacing of the gossip budget, advert batches and anti-entropy.

use std::net::SocketAddr;
use std::time::Instant;

use foca::State;

use super::ControlNode;
use crate::membership::NodeIdentity;
use crate::{ControlError, Output, Timer, TimerKind};

impl ControlNode {
    pub(super) fn handle_timer_inner(&mut self, now: Instant, timer: Timer) -> Result<(), ControlError> {
        if self.has_left {
            return Ok(());
        }
        // Lifeguard-style guard against false deaths: foca declares a suspect down after a fixed
        // timeout, but a member whose own packets still reach us is alive (the probes that failed
        // were lost, not unanswered). Wait until it has been silent for the silence window; a
        // refutation (new incarnation) usually arrives meanwhile and voids the timer. A crashed
        // member is silent from the moment it died, so crash detection is bounded by the window.
        if let TimerKind::Swim(foca::Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        }) = &timer.0
        {
            if !self.still_suspect(member_id, *incarnation) {
                // Refuted (or renamed, or already down). foca 2.0 would do nothing here except send
                // the member a TurnUndead "as a courtesy", which makes a perfectly alive member that
                // merely refuted a suspicion rejoin with a renewed identity: under loss every node
                // did, again and again. Drop the stale timer instead.
                // Our own probe failed although the member was alive: Lifeguard's signal that this
                // node's view is degraded (loss, overload), so it gets more patient for a while.
                // Not if the probe waited for a new connection (`node/direct.rs`).
                self.stats.stale_down_timers += 1;
                self.decay_health(now);
                // Decided at the timer's first firing: a later one (deferred below) is further from
                // the probe, when the member may have been heard from since.
                let key = (member_id.clone(), *incarnation);
                if self.unmet_deferred.remove(&key) || !self.met_before_probe(now, member_id.addr) {
                    self.stats.unmet_suspicions += 1;
                    return Ok(());
                }
                self.health = (self.health + 1).min(self.config.max_local_health);
                self.health_decay_at = now + self.config.health_decay;
                return Ok(());
            }
            self.decay_health(now);
            let key = (member_id.clone(), *incarnation);
            if let Some(at) = self.silent_until(member_id.addr).filter(|at| *at > now) {
                if !self.met_before_probe(now, member_id.addr) {
                    self.unmet_deferred.insert(key);
                }
                self.stats.suspicions_deferred += 1;
                self.out.push_back(Output::ScheduleTimer { at, timer });
                return Ok(());
            }
            self.unmet_deferred.remove(&key);
        }
        match timer.0 {
            TimerKind::Swim(t) => {
                // Our own suspicion timed out (still suspect, silent long enough): foca declares the
                // member down now; every member hears it from us directly, not after gossip rounds.
                let victim = match &t {
                    foca::Timer::ChangeSuspectToDown { member_id, .. } => Some(member_id.clone()),
                    _ => None,
                };
                self.swim(now, |foca, rt| foca.handle_timer(t, rt))?;
                match victim {
                    Some(v) => self.announce_down(&v),
                    None => Ok(()),
                }
            }
            TimerKind::Pace => {
                // A Pace timer superseded by an earlier one (pace_at moved earlier, then on) still
                // fires; it must not forget the one pending, or every such firing schedules one
                // more and the timers multiply (quadratically with the members in the simulator).
                if self.pace_at.is_some_and(|p| p <= now) {
                    self.pace_at = None;
                }
                Ok(())
            }
            TimerKind::FlushAdverts => {
                self.flush_adverts(now);
                self.last_flush = Some(now);
                Ok(())
            }
            TimerKind::Meet => self.meet_deferred(now),
            TimerKind::AntiEntropy => {
                let at = now + self.config.anti_entropy_interval;
                self.out.push_back(Output::ScheduleTimer {
                    at,
                    timer: Timer(TimerKind::AntiEntropy),
                });
                let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
                if peers.is_empty() {
                    // Alone: keep knocking on the join addresses (no-op for the first node of a cluster).
                    for addr in self.seeds.clone() {
                        let dst = NodeIdentity::placeholder(addr);
                        self.swim(now, |foca, rt| foca.announce(dst, rt))?;
                    }
                }
                // foca disconnected (alone, or renewed with stale members): knock at a few of the
                // addresses it holds (`node/membership.rs`, `Reconnect`).
                self.reannounce(now, false)?;
                if peers.is_empty() {
                    return Ok(());
                }
                let to = peers[self.rng.below(peers.len())];
                self.stats.anti_entropy_rounds += 1;
                let summary = self.summary_message(false, false);
                self.send_sync(to, &summary)?;
                self.ipam_tick(now)
            }
        }
    }

    /// Whether foca still holds `id` as suspect at `incarnation` (else its down timer is a no-op).
    fn still_suspect(&self, id: &NodeIdentity, incarnation: foca::Incarnation) -> bool {
        self.foca
            .iter_membership_state()
            .any(|m| m.id() == id && m.incarnation() == incarnation && m.state() == State::Suspect)
    }

    /// When `addr`'s silence will have lasted the (health-scaled) window; None if never heard from.
    fn silent_until(&self, addr: SocketAddr) -> Option<Instant> {
        let window = self.config.suspect_silence * (1 + self.health);
        Some(*self.last_heard.get(&addr)? + window)
    }

    fn decay_health(&mut self, now: Instant) {
        while self.health > 0 && now >= self.health_decay_at {
            self.health -= 1;
            self.health_decay_at += self.config.health_decay;
        }
    }
}
