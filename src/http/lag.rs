//! Our own event loop's lag: how late this process's timers and wake-ups run. A worker
//! short of CPU (many big pages being inflated and decoded at once) wakes every task
//! late, the probes' own deadlines included, and a site that answered at once then
//! looks like a timeout. A task sleeps a short tick over and over and keeps the recent
//! stalls (how much later than asked it woke); an attempt asks, when it ends, how late
//! the loop was at worst while it ran, which the judge weighs against its time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

/// How often the watch wakes: short enough to see a stall while a 100 ms probe runs,
/// long enough to cost nothing.
const TICK: Duration = Duration::from_millis(20);

/// Lateness below this is the timer wheel's millisecond and ordinary scheduling, and
/// below a quarter of the shortest job timeout (100 ms), which is where a lag starts to
/// matter to a verdict: not kept.
const STALL_FLOOR: Duration = Duration::from_millis(5);

/// Stalls kept: at one stall per tick, the last ten seconds or so; an attempt longer
/// than that is weighed against its recent stalls only.
const STALLS_KEPT: usize = 512;

/// One stall of the loop: it ended at `woke`, having lasted `late`.
#[derive(Debug, Clone, Copy)]
struct Stall {
    woke: Instant,
    late: Duration,
}

/// What the ticking task writes and attempts read.
#[derive(Debug)]
struct Seen {
    /// When the tick now pending is due: a loop still stalled has not woken it yet.
    due: Instant,
    /// Recent stalls, oldest first.
    stalls: VecDeque<Stall>,
}

/// The watch over our event loop; the ticking task ends when the watch is dropped.
#[derive(Debug)]
pub(super) struct LagWatch {
    seen: Arc<Mutex<Seen>>,
}

impl LagWatch {
    /// Starts watching the runtime this is called on.
    pub(super) fn start() -> LagWatch {
        let seen = Arc::new(Mutex::new(Seen {
            due: Instant::now() + TICK,
            stalls: VecDeque::new(),
        }));
        tokio::spawn(tick(Arc::downgrade(&seen)));
        LagWatch { seen }
    }

    /// How late the loop was at worst between `since` and now: the longest stall, or
    /// the part of it, that fell in that time, the one still going on included.
    pub(super) fn worst_since(&self, since: Instant) -> Duration {
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let ongoing = Stall {
            woke: now,
            late: now.saturating_duration_since(seen.due),
        };
        seen.stalls
            .iter()
            .chain([&ongoing])
            .map(|s| overlap(*s, since, now))
            .max()
            .unwrap_or_default()
    }
}

/// The part of `stall` that fell between `since` and `until`.
fn overlap(stall: Stall, since: Instant, until: Instant) -> Duration {
    let began = stall.woke.checked_sub(stall.late).unwrap_or(stall.woke);
    stall
        .woke
        .min(until)
        .saturating_duration_since(began.max(since))
}

/// Sleeps a tick at a time and notes how late each wake-up came, until the watch is gone.
async fn tick(seen: Weak<Mutex<Seen>>) {
    loop {
        let due = Instant::now() + TICK;
        match seen.upgrade() {
            Some(seen) => seen.lock().unwrap_or_else(|e| e.into_inner()).due = due,
            None => return,
        }
        tokio::time::sleep_until(due).await;
        let woke = Instant::now();
        let late = woke.saturating_duration_since(due);
        crate::metric::event_loop_lag(late);
        let Some(seen) = seen.upgrade() else { return };
        if late >= STALL_FLOOR {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.stalls.len() == STALLS_KEPT {
                seen.stalls.pop_front();
            }
            seen.stalls.push_back(Stall { woke, late });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_part_of_a_stall_inside_the_attempt_counts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let stall = Stall {
            woke: t0 + ms(300),
            late: ms(200),
        };
        // The attempt ran from 250 to 400 ms: 50 ms of the stall fell in it.
        assert_eq!(overlap(stall, t0 + ms(250), t0 + ms(400)), ms(50));
        // All of it.
        assert_eq!(overlap(stall, t0, t0 + ms(400)), ms(200));
        // None: the attempt began after the loop woke.
        assert_eq!(overlap(stall, t0 + ms(350), t0 + ms(400)), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_blocked_thread_is_seen_as_lag() {
        let watch = LagWatch::start();
        // Let the ticking task run once so its tick is pending.
        tokio::task::yield_now().await;
        let since = Instant::now();
        // Blocking the only thread of the runtime is the point here.
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            watch.worst_since(since) >= Duration::from_millis(50),
            "{:?}",
            watch.worst_since(since)
        );
    }
}
