//! The advert pump's helpers: when a local change is advertised, a task that dies with the pump, and the copy
//! of the control plane's counters for `overlayctl stats` and `/metrics`.

use super::{ControlCounters, LOCAL_MAC_MIN_GAP, STATS_COPY};

/// When to advertise a local change noticed at `now`: at once after a quiet [`LOCAL_MAC_MIN_GAP`], else at
/// the end of the last advert's interval.
pub(super) fn advert_at(
    now: tokio::time::Instant,
    last: Option<tokio::time::Instant>,
) -> tokio::time::Instant {
    last.map_or(now, |t| (t + LOCAL_MAC_MIN_GAP).max(now))
}

/// Aborts the task when dropped (the pump's helpers end with it).
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Copy the control plane's counters and gossip round trips for `overlayctl stats` and `/metrics`, every
/// [`STATS_COPY`].
pub(super) async fn copy_stats(
    client: control::transport::GossipClient,
    stats: ControlCounters,
    rtt: prometheus_client::metrics::histogram::Histogram,
) {
    let mut tick = tokio::time::interval(STATS_COPY);
    loop {
        tick.tick().await;
        if let Ok(s) = client.stats().await {
            if let Ok(mut c) = stats.write() {
                *c = Some(s);
            }
        }
        if let Ok(rtts) = client.rtts().await {
            for r in rtts {
                rtt.observe(r.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_local_change_is_advertised_at_once_unless_an_advert_just_left() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(advert_at(t0, None), t0, "the first change leaves at once");
        assert_eq!(
            advert_at(t0 + ms(50), Some(t0)),
            t0 + ms(50),
            "after a quiet interval: at once"
        );
        assert_eq!(
            advert_at(t0 + ms(5), Some(t0)),
            t0 + LOCAL_MAC_MIN_GAP,
            "within the interval: at its end, with whatever else changed meanwhile"
        );
    }
}
