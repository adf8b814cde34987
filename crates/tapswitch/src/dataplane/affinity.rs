//! When a dataplane thread holds on to its CPU (`switch.cpu_affinity = "auto"`): while it
//! moves bulk traffic, and not otherwise. A pure policy fed how long the loop's turns
//! took; the worker does the system calls.
//!
//! Why both ways. A thread that stays on one CPU keeps its caches warm, and a switch
//! copies every frame into and out of the kernel through them: pinned, TCP through the
//! switch ran ~25% faster at ~20% less CPU per byte on a 2-CPU VM, where the scheduler
//! otherwise moved the thread after every wake-up. But a pinned thread woken while its CPU
//! runs something else waits for that CPU, where a free one is placed on an idle CPU:
//! sparse pings through a pinned switch paid milliseconds at the 99th percentile. So the
//! thread pins itself when a window of [`WINDOW`] was at least [`PIN_BUSY`] busy, and goes
//! free again after [`QUIET_FOR`] of windows under [`QUIET_BUSY`].

use std::time::{Duration, Instant};

/// The span over which the loop's busy share is measured.
pub const WINDOW: Duration = Duration::from_millis(100);
/// Share of a window spent in turns at or above which the thread pins itself.
pub const PIN_BUSY: f64 = 0.2;
/// Share below which a window counts as quiet.
pub const QUIET_BUSY: f64 = 0.05;
/// Quiet time in a row after which a pinned thread is let go.
pub const QUIET_FOR: Duration = Duration::from_secs(1);

/// What the thread should do about its CPU now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityChange {
    Pin,
    Unpin,
}

/// Follows the loop's load (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct AffinityPolicy {
    window_start: Option<Instant>,
    busy: Duration,
    pinned: bool,
    quiet: Duration,
}

impl AffinityPolicy {
    #[cfg(test)]
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// The loop came round at `now`, having spent `busy` forwarding since it last did.
    pub fn turn(&mut self, now: Instant, busy: Duration) -> Option<AffinityChange> {
        self.busy += busy;
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return None;
        }
        let share = self.busy.as_secs_f64() / elapsed.as_secs_f64();
        self.window_start = Some(now);
        self.busy = Duration::ZERO;
        if !self.pinned {
            if share >= PIN_BUSY {
                self.pinned = true;
                self.quiet = Duration::ZERO;
                return Some(AffinityChange::Pin);
            }
            return None;
        }
        if share >= QUIET_BUSY {
            self.quiet = Duration::ZERO;
            return None;
        }
        // An idle loop sleeps up to a second between turns: one long window is all quiet.
        self.quiet += elapsed;
        if self.quiet >= QUIET_FOR {
            self.pinned = false;
            self.quiet = Duration::ZERO;
            return Some(AffinityChange::Unpin);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs `turns` of (gap before the turn, turn length) from `start`; the changes, with
    /// the turn index they came at.
    fn run(
        policy: &mut AffinityPolicy,
        start: Instant,
        turns: impl IntoIterator<Item = (Duration, Duration)>,
    ) -> Vec<(usize, AffinityChange)> {
        let mut now = start;
        let mut changes = Vec::new();
        for (i, (gap, took)) in turns.into_iter().enumerate() {
            now += gap + took;
            if let Some(change) = policy.turn(now, took) {
                changes.push((i, change));
            }
        }
        changes
    }

    fn steady(gap_us: u64, took_us: u64, count: usize) -> Vec<(Duration, Duration)> {
        vec![
            (
                Duration::from_micros(gap_us),
                Duration::from_micros(took_us)
            );
            count
        ]
    }

    #[test]
    fn bulk_traffic_pins_within_a_window_and_sparse_traffic_never_does() {
        let start = Instant::now();
        // TCP through the switch: ~30 µs turns every ~50 µs (60% busy).
        let mut policy = AffinityPolicy::default();
        let changes = run(&mut policy, start, steady(20, 30, 10_000));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1, AffinityChange::Pin);
        // Within the first window and a bit (2000 turns of 50 µs = 100 ms).
        assert!(changes[0].0 <= 2100, "{changes:?}");
        assert!(policy.pinned());

        // A ping every 2 ms, 20 µs of work each (1% busy): never pinned.
        let mut policy = AffinityPolicy::default();
        assert!(run(&mut policy, start, steady(1980, 20, 5000)).is_empty());
        assert!(!policy.pinned());

        // Just under the threshold: 19% busy stays free.
        let mut policy = AffinityPolicy::default();
        assert!(run(&mut policy, start, steady(81, 19, 20_000)).is_empty());
        let mut policy = AffinityPolicy::default();
        assert_eq!(run(&mut policy, start, steady(79, 21, 20_000)).len(), 1);
    }

    #[test]
    fn a_pinned_thread_is_let_go_after_a_second_of_quiet_and_not_before() {
        let start = Instant::now();
        let mut policy = AffinityPolicy::default();
        // 200 ms of bulk (pins), then 900 ms of sparse traffic (2% busy): still pinned…
        let mut turns = steady(20, 30, 4000);
        turns.extend(steady(980, 20, 900));
        // …a burst of bulk restarts the quiet count, 900 ms more of quiet keep it…
        turns.extend(steady(20, 30, 2000));
        turns.extend(steady(980, 20, 900));
        let kept = turns.len();
        // …and 1 s more of quiet lets it go.
        turns.extend(steady(980, 20, 1200));
        let changes = run(&mut policy, start, turns);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].1, AffinityChange::Pin);
        assert!(changes[0].0 < 4000, "{changes:?}");
        assert_eq!(changes[1].1, AffinityChange::Unpin);
        assert!(changes[1].0 >= kept, "let go too early: {changes:?}");
        assert!(!policy.pinned());
    }

    #[test]
    fn an_idle_loop_waking_once_a_second_lets_go_at_its_first_quiet_wake_up() {
        let start = Instant::now();
        let mut policy = AffinityPolicy::default();
        assert_eq!(run(&mut policy, start, steady(20, 30, 3000)).len(), 1);
        let changes = run(
            &mut policy,
            start + Duration::from_millis(150),
            steady(1_000_000, 0, 3),
        );
        assert_eq!(changes, vec![(0, AffinityChange::Unpin)]);
    }

    proptest! {
        /// Whatever the load, pins and unpins alternate (starting with a pin), and a thread
        /// pinned at the end was pinned last.
        #[test]
        fn changes_alternate_pin_first(
            turns in prop::collection::vec((0u64..5_000, 0u64..2_000), 1..3000)
        ) {
            let mut policy = AffinityPolicy::default();
            let turns = turns
                .into_iter()
                .map(|(gap, took)| (Duration::from_micros(gap), Duration::from_micros(took)));
            let changes = run(&mut policy, Instant::now(), turns);
            for (i, (_, change)) in changes.iter().enumerate() {
                let expected = if i % 2 == 0 { AffinityChange::Pin } else { AffinityChange::Unpin };
                prop_assert_eq!(*change, expected);
            }
            prop_assert_eq!(policy.pinned(), changes.len() % 2 == 1);
        }
    }
}
