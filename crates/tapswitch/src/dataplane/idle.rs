//! When the loop spins (polls epoll without sleeping) and when it sleeps: a
//! pure policy fed the instants frames arrived at and timers fired at. The
//! worker does the system calls (epoll, the wake-up timer); this decides.
//!
//! Two windows of spinning:
//! - **after frames** (`idle_poll`): a request that just got an answer is often
//!   followed by the next one within microseconds;
//! - **ahead of a predicted frame** (`adaptive`): sparse but regular traffic
//!   (a ping every few ms, paced RPCs) would otherwise find the loop asleep
//!   every time and pay a full wake-up of the thread (on this kind of VM
//!   ~150 µs: waking a halted vCPU). The policy learns the gap between bursts
//!   (smoothed mean and mean deviation, as TCP does for its RTT) and, when it
//!   is steady, sleeps until shortly before the next burst is due (on a timer
//!   set early by the timer's own learned lateness), then spins across a window
//!   around it. The window is capped to `budget` of the gap, so spinning ahead
//!   costs at most that fraction of one CPU; irregular, bursty, continuous or
//!   absent traffic opens no window, and an idle switch sleeps.

use std::time::{Duration, Instant};

/// Gaps longer than this are idleness, not a rhythm worth spinning for.
pub const MAX_PREDICTED_GAP: Duration = Duration::from_millis(100);
/// Frames closer together than this (or than the after-frames window) are one burst.
const MIN_BURST_SEPARATION: Duration = Duration::from_micros(50);
/// Half-width of a window around a predicted burst before the deviation widens it.
const MIN_HALF_WINDOW: Duration = Duration::from_micros(15);
/// The window's half-width is this many mean deviations of the gap.
const DEVIATIONS: u32 = 2;
/// A gap whose mean deviation exceeds this fraction of it is not a rhythm.
const MAX_RELATIVE_DEVIATION: f64 = 0.25;
/// Gap samples before the first prediction.
const WARMUP_GAPS: u32 = 3;
/// Timer lateness assumed before one has been measured, and the cap of the estimate.
const INITIAL_LATENESS: Duration = Duration::from_micros(100);
const MAX_LATENESS: Duration = Duration::from_millis(1);

/// What the loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Poll without sleeping.
    Spin,
    /// Sleep until a frame (or any other event) arrives, and at the latest
    /// until this instant, when a window of spinning starts.
    SleepUntil(Instant),
    /// Sleep until something happens.
    Sleep,
}

/// How predictions went, for people tuning the budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdleStats {
    /// Windows of spinning ahead of a predicted burst that the loop entered.
    pub windows: u64,
    /// Bursts that began while the loop was spinning in such a window.
    pub hits: u64,
}

/// A smoothed estimate: mean and mean deviation, in nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Smoothed {
    mean: f64,
    deviation: f64,
}

impl Smoothed {
    fn new(sample: f64) -> Self {
        Self {
            mean: sample,
            deviation: sample / 2.0,
        }
    }

    /// RFC 6298's estimator: deviation gain 1/4, mean gain 1/8.
    fn update(&mut self, sample: f64) {
        self.deviation += ((sample - self.mean).abs() - self.deviation) / 4.0;
        self.mean += (sample - self.mean) / 8.0;
    }
}

/// A window of spinning around a predicted burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    start: Instant,
    end: Instant,
}

/// The decision of when to spin; see the module documentation.
#[derive(Debug)]
pub struct IdlePolicy {
    after_frames: Duration,
    /// Fraction of one CPU the windows ahead of predicted bursts may take; 0: none.
    budget: f64,
    last_frame: Option<Instant>,
    burst_start: Option<Instant>,
    gap: Option<Smoothed>,
    gaps_seen: u32,
    /// How late the wake-up timer fires (and, by the same mechanism, how late
    /// a sleeping loop notices a frame), smoothed, in nanoseconds.
    lateness: f64,
    /// The wake-up last asked for, until it fires or is overtaken by a frame.
    requested_wake: Option<Instant>,
    /// The window the loop is in (counted once).
    entered: Option<Window>,
    stats: IdleStats,
}

impl IdlePolicy {
    /// `after_frames`: the spin after the last frame; `budget_pct`: percent of
    /// one CPU for spinning ahead of predicted bursts (0 turns prediction off).
    pub fn new(after_frames: Duration, budget_pct: u32) -> Self {
        Self {
            after_frames,
            budget: f64::from(budget_pct.min(100)) / 100.0,
            last_frame: None,
            burst_start: None,
            gap: None,
            gaps_seen: 0,
            lateness: INITIAL_LATENESS.as_nanos() as f64,
            requested_wake: None,
            entered: None,
            stats: IdleStats::default(),
        }
    }

    pub fn stats(&self) -> IdleStats {
        self.stats
    }

    /// A turn forwarded frames; `noticed` is when the loop saw them, `slept`
    /// whether it was asleep in epoll (then they arrived about one wake-up earlier).
    pub fn frames(&mut self, noticed: Instant, slept: bool) {
        let arrived = if slept {
            noticed
                .checked_sub(Duration::from_nanos(self.lateness as u64))
                .unwrap_or(noticed)
        } else {
            noticed
        };
        let separation = self.after_frames.max(MIN_BURST_SEPARATION);
        let new_burst = self
            .last_frame
            .is_none_or(|last| arrived.saturating_duration_since(last) > separation);
        self.last_frame = Some(noticed.max(self.last_frame.unwrap_or(noticed)));
        if !new_burst {
            return;
        }
        if !slept && self.entered.is_some_and(|w| noticed <= w.end) {
            self.stats.hits += 1;
        }
        self.entered = None;
        self.requested_wake = None;
        if let Some(previous) = self.burst_start {
            let gap = arrived.saturating_duration_since(previous);
            if gap <= MAX_PREDICTED_GAP {
                let sample = gap.as_nanos() as f64;
                match &mut self.gap {
                    Some(estimate) => estimate.update(sample),
                    None => self.gap = Some(Smoothed::new(sample)),
                }
                self.gaps_seen = self.gaps_seen.saturating_add(1);
            } else {
                // After a pause the rhythm, if any, starts over.
                self.gap = None;
                self.gaps_seen = 0;
            }
        }
        self.burst_start = Some(arrived);
    }

    /// The wake-up timer fired at `now` (it may fire after a frame overtook it: ignored then).
    pub fn timer_fired(&mut self, now: Instant) {
        if let Some(requested) = self.requested_wake.take() {
            let late = now.saturating_duration_since(requested).min(MAX_LATENESS);
            self.lateness += (late.as_nanos() as f64 - self.lateness) / 8.0;
        }
    }

    /// What to do at `now`.
    pub fn wait(&mut self, now: Instant) -> Wait {
        if self
            .last_frame
            .is_some_and(|last| now < last + self.after_frames)
        {
            return Wait::Spin;
        }
        let Some(window) = self.window() else {
            return Wait::Sleep;
        };
        if now >= window.end {
            return Wait::Sleep;
        }
        let wake = window
            .start
            .checked_sub(Duration::from_nanos(self.lateness as u64))
            .unwrap_or(window.start);
        if now < wake {
            self.requested_wake = Some(wake);
            return Wait::SleepUntil(wake);
        }
        if self.entered != Some(window) {
            self.entered = Some(window);
            self.stats.windows += 1;
        }
        Wait::Spin
    }

    /// The window around the next burst, when the gap is steady enough to predict it.
    fn window(&self) -> Option<Window> {
        if self.budget <= 0.0 || self.gaps_seen < WARMUP_GAPS {
            return None;
        }
        let gap = self.gap?;
        let start = self.burst_start?;
        if gap.deviation > gap.mean * MAX_RELATIVE_DEVIATION {
            return None;
        }
        let wanted = (gap.deviation * f64::from(DEVIATIONS)).max(MIN_HALF_WINDOW.as_nanos() as f64);
        let allowed = gap.mean * self.budget / 2.0;
        let half = Duration::from_nanos(wanted.min(allowed) as u64);
        let due = start + Duration::from_nanos(gap.mean as u64);
        let earliest = self
            .last_frame
            .map_or(start, |last| last + self.after_frames);
        Some(Window {
            start: due.checked_sub(half).unwrap_or(due).max(earliest),
            end: due + half,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Feeds bursts every `period` (one frame each: noticed at once when the
    /// policy was spinning, one timer lateness later when it slept) and returns
    /// the last burst's instant.
    fn rhythm(policy: &mut IdlePolicy, base: Instant, period: Duration, bursts: u32) -> Instant {
        let mut at = base;
        for i in 0..bursts {
            at = base + period * i;
            if policy.wait(at) == Wait::Spin {
                policy.frames(at, false);
            } else {
                policy.frames(at + INITIAL_LATENESS, true);
            }
        }
        at
    }

    #[test]
    fn spins_after_frames_then_sleeps_without_a_rhythm() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let t = Instant::now();
        assert_eq!(policy.wait(t), Wait::Sleep, "no traffic yet: sleep");
        policy.frames(t, true);
        assert_eq!(policy.wait(t + 10 * US), Wait::Spin);
        assert_eq!(
            policy.wait(t + 25 * US),
            Wait::Sleep,
            "one burst is no rhythm"
        );
    }

    #[test]
    fn learns_a_steady_gap_and_wakes_ahead_of_the_next_burst() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let period = 2000 * US;
        let last = rhythm(&mut policy, base, period, 10);
        let windows = policy.stats().windows;
        // Steady 2 ms gaps: the window is capped to 5% of 2 ms (±50 µs) around
        // last + 2 ms, and the timer is set early by the assumed lateness.
        let due = last + period;
        let Wait::SleepUntil(wake) = policy.wait(last + 200 * US) else {
            panic!(
                "expected a timed sleep, got {:?}",
                policy.wait(last + 200 * US)
            );
        };
        assert!(
            wake < due - 15 * US,
            "wakes before the window: {:?}",
            due - wake
        );
        assert!(wake >= due - 50 * US - INITIAL_LATENESS - US);
        // Woken on time: spin across the window, sleep after it.
        policy.timer_fired(wake);
        assert_eq!(policy.wait(due - 10 * US), Wait::Spin);
        assert_eq!(policy.wait(due + 10 * US), Wait::Spin);
        assert_eq!(policy.wait(due + 60 * US), Wait::Sleep, "past the window");
        assert_eq!(policy.stats().windows, windows + 1);
    }

    #[test]
    fn a_frame_inside_the_window_is_a_hit() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let period = 2000 * US;
        let last = rhythm(&mut policy, base, period, 20);
        let before = policy.stats();
        let due = last + period;
        assert_eq!(policy.wait(due), Wait::Spin);
        policy.frames(due, false);
        let after = policy.stats();
        assert_eq!(after.windows, before.windows + 1);
        assert_eq!(after.hits, before.hits + 1);
    }

    #[test]
    fn spinning_ahead_stays_within_the_budget() {
        for (period_us, budget_pct) in [(2000u32, 5u32), (10_000, 5), (1000, 2), (2000, 1)] {
            let mut policy = IdlePolicy::new(20 * US, budget_pct);
            let base = Instant::now();
            let period = period_us * US;
            // Jittery but steady enough to predict (±10%).
            let mut at = base;
            for i in 0..40u32 {
                let jitter = if i % 2 == 0 {
                    period / 10
                } else {
                    Duration::ZERO
                };
                at = base + period * i + jitter;
                policy.frames(at, false);
            }
            // Walk through the next gap in 1 µs steps and count the spinning
            // ahead (after the after-frames window); a timed sleep ends when the
            // timer fires, as late as the policy assumes.
            let mut spun = Duration::ZERO;
            let mut now = at + 21 * US;
            while now < at + period * 2 {
                match policy.wait(now) {
                    Wait::Spin => {
                        spun += US;
                        now += US;
                    }
                    Wait::SleepUntil(wake) => {
                        now = wake + INITIAL_LATENESS;
                        policy.timer_fired(now);
                    }
                    Wait::Sleep => now += US,
                }
            }
            let limit = period.as_secs_f64() * f64::from(budget_pct) / 100.0;
            assert!(
                spun.as_secs_f64() <= limit + 2e-6,
                "{period_us} µs at {budget_pct}%: spun {spun:?}, limit {limit} s"
            );
            assert!(
                spun > Duration::ZERO,
                "{period_us} µs: a window was expected"
            );
        }
    }

    #[test]
    fn irregular_traffic_opens_no_window() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let mut at = base;
        // Gaps of 0.5, 3, 1, 6 ms... deviation far above a quarter of the mean.
        for gap_us in [500u64, 3000, 1000, 6000, 700, 4000, 1500, 5000] {
            at += Duration::from_micros(gap_us);
            policy.frames(at, false);
        }
        for step in 1..10_000u32 {
            assert_eq!(policy.wait(at + step * US * 2), {
                if step * 2 < 20 {
                    Wait::Spin
                } else {
                    Wait::Sleep
                }
            });
        }
    }

    #[test]
    fn continuous_traffic_and_pauses_open_no_window() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        // A frame every 5 µs for 10 ms: one burst, no gap learned.
        let mut at = base;
        for i in 0..2000u32 {
            at = base + i * 5 * US;
            policy.frames(at, false);
        }
        assert_eq!(policy.wait(at + 30 * US), Wait::Sleep);
        // A rhythm, then a pause longer than MAX_PREDICTED_GAP: forgotten.
        let last = rhythm(&mut policy, at + 1000 * US, 2000 * US, 10);
        let resumed = last + MAX_PREDICTED_GAP + 1000 * US;
        policy.frames(resumed, true);
        assert_eq!(policy.wait(resumed + 100 * US), Wait::Sleep);
    }

    #[test]
    fn zero_budget_never_predicts() {
        let mut policy = IdlePolicy::new(20 * US, 0);
        let base = Instant::now();
        let last = rhythm(&mut policy, base, 2000 * US, 20);
        assert_eq!(policy.wait(last + 200 * US), Wait::Sleep);
        assert_eq!(policy.wait(last + 2000 * US), Wait::Sleep);
    }

    #[test]
    fn learns_how_late_the_timer_fires() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let period = 10_000 * US;
        let mut last = rhythm(&mut policy, base, period, 5);
        // The timer keeps firing 300 µs late: it is then set that much earlier
        // than the window (whose half-width shrinks to the minimum on a steady gap).
        for _ in 0..40 {
            let Wait::SleepUntil(wake) = policy.wait(last + 200 * US) else {
                panic!("expected a timed sleep");
            };
            policy.timer_fired(wake + 300 * US);
            last += period;
            policy.frames(last, false);
        }
        let Wait::SleepUntil(wake) = policy.wait(last + 200 * US) else {
            panic!("expected a timed sleep");
        };
        let lead = (last + period) - wake;
        assert!(lead > 300 * US && lead < 330 * US, "lead {lead:?}");
    }

    #[test]
    fn a_timer_overtaken_by_a_frame_teaches_nothing() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let last = rhythm(&mut policy, base, 2000 * US, 10);
        let Wait::SleepUntil(wake) = policy.wait(last + 200 * US) else {
            panic!("expected a timed sleep");
        };
        let lateness = policy.lateness;
        policy.frames(wake - 50 * US, true);
        policy.timer_fired(wake + 900 * US);
        assert_eq!(policy.lateness, lateness);
    }
}
