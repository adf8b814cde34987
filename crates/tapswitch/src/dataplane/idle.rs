//! When the loop spins (polls epoll without sleeping) and when it sleeps: a
//! pure policy fed the instants frames arrived at and timers fired at. The
//! worker does the system calls (epoll, the wake-up timer); this decides.
//!
//! Two kinds of spinning:
//! - **after frames** (`idle_poll`): a request that just got an answer is often
//!   followed by the next one within microseconds (counted: spins that saw a
//!   frame before they ended, and those that did not). Not passed over when
//!   they mostly miss: on a 2-CPU VM under paced request/response one spin in
//!   ten caught an answer, which saved more latency than the spin costs, and
//!   under bulk TCP three in four caught the next frame;
//! - **ahead of a predicted burst** (`adaptive`): sparse but regular traffic
//!   (a ping every few ms, paced RPCs) would otherwise find the loop asleep
//!   every time and pay a full wake-up of the thread (on this kind of VM
//!   ~150 µs: waking a halted vCPU).
//!
//! The prediction. Bursts (frames closer than the after-frames window are
//! one) are remembered, the last [`HISTORY`] of them. A *rhythm* is a period
//! with up to [`MAX_PHASES`] bursts in it: request/response traffic alternates
//! a short gap (the answer) and a long one (the next request), which no single
//! gap estimate can predict, but each burst is one period after the burst `k`
//! back. It is found when the last `k + 2` spans of `k` bursts agree (k =
//! 1..=4, the smallest wins), and then followed in time: each new burst is
//! matched to the remembered one a period earlier (the period and its mean
//! deviation are updated from the difference), so a burst that sometimes
//! splits in two or goes missing does not lose it; [`MAX_STRAYS`] bursts in a
//! row that match nothing do. Every burst that matched is a *phase*: the
//! next burst is predicted one period after the earliest phase not yet
//! answered. The loop sleeps on a timer set early by the timer's own learned
//! lateness, then spins across a window of ±2 deviations around the
//! prediction, capped to `budget` of the period shared by the phases in it.
//!
//! What bounds the cost, whatever the traffic: every microsecond spun ahead,
//! from the moment the loop woke for a window (a timer that fires early is
//! spun through too) until a burst or the window's end, is drawn from a
//! bucket that fills at `budget` of one CPU (holding at most `budget` of
//! [`MAX_PREDICTED_GAP`]). Irregular traffic finds no rhythm and opens
//! nothing; a rhythm that strays further than the widest window the budget
//! allows opens none; when recent windows mostly missed (a loaded machine
//! waking the loop late), only one in [`PROBE_EVERY`] is entered until they
//! hit again; an idle switch sleeps.
//!
//! Frames noticed after a sleep arrived at most one wake-up earlier, but not
//! before the loop went to sleep: a window that ended just before its burst
//! then moves later, towards it, instead of being pulled earlier by a
//! back-dated arrival.

use std::time::{Duration, Instant};

/// Gaps longer than this are idleness, not a rhythm worth spinning for.
pub const MAX_PREDICTED_GAP: Duration = Duration::from_millis(100);
/// Most bursts in one period of a rhythm.
pub const MAX_PHASES: usize = 4;
/// Bursts remembered: enough to check `k + 2` spans of `k` bursts for every `k`.
pub const HISTORY: usize = 16;
/// Bursts in a row that match no phase after which the rhythm is forgotten.
pub const MAX_STRAYS: u32 = 3;
/// Frames closer together than this (or than the after-frames window) are one burst.
const MIN_BURST_SEPARATION: Duration = Duration::from_micros(50);
/// Half-width of a window around a predicted burst before the deviation widens it.
const MIN_HALF_WINDOW: Duration = Duration::from_micros(15);
/// The window's half-width is this many mean deviations of the period.
const DEVIATIONS: f64 = 2.0;
/// A span matches the period when it is off by at most this share of it…
const TOLERANCE_SHARE: f64 = 1.0 / 16.0;
/// …or by this much, whichever is more.
const MIN_TOLERANCE: Duration = Duration::from_micros(20);
/// Below this share of recent windows catching their burst, the loop passes
/// over windows, entering one in [`PROBE_EVERY`] to see if the rhythm came back.
const MIN_HIT_RATE: f64 = 0.3;
const PROBE_EVERY: u32 = 8;
/// Fits whose deviation is below this are all good: the smaller period wins.
const CLOSE_ENOUGH: Duration = Duration::from_micros(2);
/// Timer lateness assumed before one has been measured, and the cap of the estimate.
const INITIAL_LATENESS: Duration = Duration::from_micros(100);
const MAX_LATENESS: Duration = Duration::from_millis(1);
/// The estimate follows the median of the last three samples, each counting
/// for at most this many times the estimate (and at least [`LATENESS_FLOOR`]):
/// stalled wake-ups (the tick, a busy CPU) must not set the timer far ahead of
/// every later window, spinning the difference.
const LATENESS_CLAMP: f64 = 2.0;
const LATENESS_FLOOR: Duration = Duration::from_micros(10);

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
    /// Time spent spinning in those windows (from the wake-up for one until
    /// its burst or its end), nanoseconds.
    pub spin_ns: u64,
    /// Spins after frames that saw the next frame before they ended.
    pub after_hits: u64,
    /// Spins after frames that ended without one (the loop then slept).
    pub after_misses: u64,
}

/// A remembered burst: when it began (ns since the policy's epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Burst {
    at: u64,
    /// It came one period after an earlier burst: a phase of the rhythm, from
    /// which the next one is predicted.
    phase: bool,
    /// A later burst came one period after it: its prediction is spent.
    answered: bool,
}

/// The last [`HISTORY`] bursts, a ring (no allocation).
#[derive(Clone, Debug, Default)]
struct History {
    bursts: [Burst; HISTORY],
    len: usize,
    /// Where the next burst goes.
    next: usize,
}

impl History {
    fn push(&mut self, burst: Burst) {
        self.bursts[self.next] = burst;
        self.next = (self.next + 1) % HISTORY;
        self.len = (self.len + 1).min(HISTORY);
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// The burst `back` bursts before the newest (0: the newest).
    fn get(&self, back: usize) -> Option<&Burst> {
        (back < self.len).then(|| &self.bursts[(self.next + HISTORY - 1 - back) % HISTORY])
    }

    fn get_mut(&mut self, back: usize) -> Option<&mut Burst> {
        (back < self.len).then(|| &mut self.bursts[(self.next + HISTORY - 1 - back) % HISTORY])
    }

    /// Newest first.
    fn iter(&self) -> impl Iterator<Item = &Burst> {
        (0..self.len).filter_map(|back| self.get(back))
    }
}

/// A period with one or more bursts in it, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rhythm {
    period: f64,
    /// Mean deviation of bursts from their predicted instants.
    deviation: f64,
    /// Bursts in a row that matched no earlier burst.
    strays: u32,
}

fn tolerance(period: f64) -> f64 {
    (period * TOLERANCE_SHARE).max(MIN_TOLERANCE.as_nanos() as f64)
}

impl Rhythm {
    /// The period that fits the last bursts best: for each `k` (bursts per
    /// period) whose last `k + 2` spans of `k` bursts all agree, their mean
    /// deviation; the smallest `k` whose deviation is within twice the best's
    /// (or [`CLOSE_ENOUGH`]) wins, so three unevenly spaced phases are not
    /// taken for one period a third as long.
    fn detect(history: &History) -> Option<(Rhythm, usize)> {
        let mut fits = [None; MAX_PHASES];
        for (fit, k) in fits.iter_mut().zip(1..=MAX_PHASES) {
            let spans = k + 2;
            if history.len < spans + k {
                break;
            }
            let mut values = [0.0f64; MAX_PHASES + 2];
            for (back, value) in values.iter_mut().enumerate().take(spans) {
                let (newer, older) = (history.get(back)?, history.get(back + k)?);
                *value = newer.at.saturating_sub(older.at) as f64;
            }
            let values = &values[..spans];
            let period = values.iter().sum::<f64>() / spans as f64;
            if period > MAX_PREDICTED_GAP.as_nanos() as f64 {
                continue;
            }
            let tolerance = tolerance(period);
            if values.iter().any(|v| (v - period).abs() > tolerance) {
                continue;
            }
            let deviation = values.iter().map(|v| (v - period).abs()).sum::<f64>() / spans as f64;
            *fit = Some(Rhythm {
                period,
                deviation,
                strays: 0,
            });
        }
        let best = fits
            .iter()
            .flatten()
            .map(|fit| fit.deviation)
            .min_by(f64::total_cmp)?;
        let good_enough = (best * 2.0).max(CLOSE_ENOUGH.as_nanos() as f64);
        fits.iter().zip(1..).find_map(|(fit, k)| {
            fit.filter(|fit| fit.deviation <= good_enough)
                .map(|fit| (fit, k))
        })
    }

    /// Marks the bursts that fit a period of `k` bursts as phases (each
    /// of the last `k + 2` has one a period before it) and the older ones as
    /// answered.
    fn mark(history: &mut History, k: usize) {
        let spans = k + 2;
        for back in 0..history.len {
            if let Some(burst) = history.get_mut(back) {
                burst.phase = back < spans;
                burst.answered = back >= k;
            }
        }
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
    /// The instant burst times count from (the first burst's).
    epoch: Option<Instant>,
    /// When the latest frame was noticed.
    last_frame: Option<Instant>,
    history: History,
    rhythm: Option<Rhythm>,
    /// How late the wake-up timer fires (and, by the same mechanism, how late
    /// a sleeping loop notices a frame), smoothed, in nanoseconds.
    lateness: f64,
    /// The last three lateness samples, ns.
    late_samples: [f64; 3],
    /// The wake-up last asked for, until it fires or is overtaken by a frame.
    requested_wake: Option<Instant>,
    /// When the loop last decided to sleep (cleared when it spins or forwards).
    asleep_since: Option<Instant>,
    /// Since when the loop has been spinning in a window, not yet charged.
    window_spin_since: Option<Instant>,
    /// Spin time ahead of bursts the loop may still spend, ns, and when it was topped up.
    bucket: f64,
    bucket_at: Option<Instant>,
    /// The window the loop is in (counted once).
    entered: Option<Window>,
    /// Share of recent windows that caught their burst (smoothed; 1: all).
    hit_rate: f64,
    /// The window last decided on, whether it is passed over (hit rate too
    /// low), and how many were.
    decided: Option<Window>,
    pass: bool,
    passed_count: u32,
    /// The loop is spinning after frames (not yet hit or missed).
    after_spinning: bool,
    stats: IdleStats,
}

impl IdlePolicy {
    /// `after_frames`: the spin after the last frame; `budget_pct`: percent of
    /// one CPU for spinning ahead of predicted bursts (0 turns prediction off).
    pub fn new(after_frames: Duration, budget_pct: u32) -> Self {
        let budget = f64::from(budget_pct.min(100)) / 100.0;
        let mut policy = Self {
            after_frames,
            budget,
            epoch: None,
            last_frame: None,
            history: History::default(),
            rhythm: None,
            lateness: INITIAL_LATENESS.as_nanos() as f64,
            late_samples: [INITIAL_LATENESS.as_nanos() as f64; 3],
            requested_wake: None,
            asleep_since: None,
            window_spin_since: None,
            bucket: 0.0,
            bucket_at: None,
            entered: None,
            hit_rate: 1.0,
            decided: None,
            pass: false,
            passed_count: 0,
            after_spinning: false,
            stats: IdleStats::default(),
        };
        policy.bucket = policy.bucket_capacity();
        policy
    }

    pub fn stats(&self) -> IdleStats {
        self.stats
    }

    fn bucket_capacity(&self) -> f64 {
        self.budget * MAX_PREDICTED_GAP.as_nanos() as f64
    }

    /// A turn forwarded frames; `noticed` is when the loop saw them, `slept`
    /// whether it was asleep in epoll (then they arrived up to one wake-up
    /// earlier, but not before it fell asleep).
    pub fn frames(&mut self, noticed: Instant, slept: bool) {
        let arrived = if slept {
            let back_dated = noticed
                .checked_sub(Duration::from_nanos(self.lateness as u64))
                .unwrap_or(noticed);
            self.asleep_since
                .map_or(back_dated, |asleep| back_dated.max(asleep.min(noticed)))
        } else {
            noticed
        };
        if std::mem::take(&mut self.after_spinning) && !slept {
            self.stats.after_hits += 1;
        }
        let in_window = self.window_spin_since.is_some();
        self.charge(noticed);
        self.asleep_since = None;
        let separation = self.after_frames.max(MIN_BURST_SEPARATION);
        let new_burst = self
            .last_frame
            .is_none_or(|last| arrived.saturating_duration_since(last) > separation);
        self.last_frame = Some(noticed.max(self.last_frame.unwrap_or(noticed)));
        if !new_burst {
            return;
        }
        if in_window && !slept {
            self.stats.hits += 1;
        }
        if self.entered.is_some() {
            let hit = if in_window && !slept { 1.0 } else { 0.0 };
            self.hit_rate += (hit - self.hit_rate) / 8.0;
        }
        self.entered = None;
        self.requested_wake = None;
        self.learn(arrived);
    }

    /// A new burst began at `arrived`: match it to the burst a period earlier,
    /// remember it, and look for a rhythm if there is none.
    fn learn(&mut self, arrived: Instant) {
        let epoch = *self.epoch.get_or_insert(arrived);
        let at = arrived.saturating_duration_since(epoch).as_nanos() as u64;
        if self.history.get(0).is_some_and(|newest| {
            at.saturating_sub(newest.at) > MAX_PREDICTED_GAP.as_nanos() as u64
        }) {
            // After a pause the rhythm, if any, starts over.
            self.history.clear();
            self.rhythm = None;
        }
        let mut phase = false;
        if let Some(rhythm) = &mut self.rhythm {
            let target = at as f64 - rhythm.period;
            let closest = (0..self.history.len)
                .filter_map(|back| Some((back, self.history.get(back)?.at as f64 - target)))
                .min_by(|a, b| a.1.abs().total_cmp(&b.1.abs()));
            match closest {
                Some((back, early)) if early.abs() <= tolerance(rhythm.period) => {
                    // `early` > 0: the burst came before its predicted instant.
                    let off = -early;
                    rhythm.period += off / 8.0;
                    rhythm.deviation += (off.abs() - rhythm.deviation) / 4.0;
                    rhythm.strays = 0;
                    if let Some(burst) = self.history.get_mut(back) {
                        burst.answered = true;
                    }
                    phase = true;
                }
                _ => {
                    rhythm.strays += 1;
                    if rhythm.strays > MAX_STRAYS {
                        self.rhythm = None;
                    }
                }
            }
        }
        self.history.push(Burst {
            at,
            phase,
            answered: false,
        });
        // A better fit replaces the rhythm followed (found, say, once enough
        // bursts show three phases where one period a third as long fitted).
        if let Some((fit, k)) = Rhythm::detect(&self.history) {
            let better = self.rhythm.is_none_or(|current| {
                (fit.period - current.period).abs() > tolerance(current.period)
                    && fit.deviation * 2.0 < current.deviation
                    && current.deviation > CLOSE_ENOUGH.as_nanos() as f64
            });
            if better {
                Rhythm::mark(&mut self.history, k);
                self.rhythm = Some(fit);
            }
        }
    }

    /// The wake-up timer fired at `now` (it may fire after a frame overtook it: ignored then).
    pub fn timer_fired(&mut self, now: Instant) {
        if let Some(requested) = self.requested_wake.take() {
            let late = now.saturating_duration_since(requested).as_nanos() as f64;
            self.late_samples = [self.late_samples[1], self.late_samples[2], late];
            // The median of the last three: a single stall does not count.
            let mut sorted = self.late_samples;
            sorted.sort_by(f64::total_cmp);
            let clamp = (self.lateness * LATENESS_CLAMP)
                .max(LATENESS_FLOOR.as_nanos() as f64)
                .min(MAX_LATENESS.as_nanos() as f64);
            self.lateness += (sorted[1].min(clamp) - self.lateness) / 8.0;
        }
    }

    /// Charges the spin in a window up to `now` to the bucket.
    fn charge(&mut self, now: Instant) {
        if let Some(since) = self.window_spin_since.take() {
            let spent = now.saturating_duration_since(since).as_nanos() as u64;
            self.bucket -= spent as f64;
            self.stats.spin_ns += spent;
        }
    }

    /// Tops the bucket up at `budget` of the time since the last top-up.
    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.bucket_at {
            let elapsed = now.saturating_duration_since(at).as_nanos() as f64;
            self.bucket = (self.bucket + elapsed * self.budget).min(self.bucket_capacity());
        }
        self.bucket_at = Some(now);
    }

    fn sleep(&mut self, now: Instant, wait: Wait) -> Wait {
        if self.asleep_since.is_none() {
            self.asleep_since = Some(now);
        }
        wait
    }

    /// What to do at `now`.
    pub fn wait(&mut self, now: Instant) -> Wait {
        self.charge(now);
        self.refill(now);
        if self
            .last_frame
            .is_some_and(|last| now < last + self.after_frames)
        {
            self.asleep_since = None;
            self.after_spinning = true;
            return Wait::Spin;
        }
        if std::mem::take(&mut self.after_spinning) {
            self.stats.after_misses += 1;
        }
        let Some(window) = self.window(now) else {
            return self.sleep(now, Wait::Sleep);
        };
        if self.decided != Some(window) {
            // Recent windows mostly missed (bursts jitter more than the
            // deviation says): pass over this one, unless it is a probe.
            self.decided = Some(window);
            self.pass = false;
            if self.hit_rate < MIN_HIT_RATE {
                self.passed_count = self.passed_count.wrapping_add(1);
                self.pass = self.passed_count % PROBE_EVERY != 0;
            }
        }
        if self.pass {
            return self.sleep(now, Wait::Sleep);
        }
        let wake = window
            .start
            .checked_sub(Duration::from_nanos(self.lateness as u64))
            .unwrap_or(window.start);
        if now < wake {
            self.requested_wake = Some(wake);
            return self.sleep(now, Wait::SleepUntil(wake));
        }
        if self.bucket <= 0.0 {
            // Spent: sleep until a frame, whatever was predicted.
            return self.sleep(now, Wait::Sleep);
        }
        if self.entered != Some(window) {
            self.entered = Some(window);
            self.stats.windows += 1;
        }
        self.asleep_since = None;
        self.window_spin_since = Some(now);
        Wait::Spin
    }

    /// The window around the next predicted burst that has not ended at `now`.
    fn window(&self, now: Instant) -> Option<Window> {
        if self.budget <= 0.0 {
            return None;
        }
        let rhythm = self.rhythm?;
        let epoch = self.epoch?;
        let newest = self.history.get(0)?;
        let period = rhythm.period;
        // The phases of the last period share its budget.
        let since = newest.at as f64 - period + tolerance(period);
        let phases = self
            .history
            .iter()
            .take_while(|burst| burst.at as f64 > since)
            .filter(|burst| burst.phase)
            .count()
            .max(1);
        let allowance = self.budget * period / phases as f64;
        if rhythm.deviation > allowance / 2.0 {
            // Bursts stray further than the widest window the budget allows:
            // windows would mostly miss (a loaded machine's jitter, say).
            return None;
        }
        let half = (DEVIATIONS * rhythm.deviation)
            .max(MIN_HALF_WINDOW.as_nanos() as f64)
            .min(allowance / 2.0);
        let now_ns = now.saturating_duration_since(epoch).as_nanos() as f64;
        let due = self
            .history
            .iter()
            .filter(|burst| burst.phase && !burst.answered)
            .map(|burst| burst.at as f64 + period)
            .filter(|due| due + half > now_ns)
            .min_by(f64::total_cmp)?;
        let end = epoch + Duration::from_nanos((due + half) as u64);
        let earliest = self
            .last_frame
            .map_or(epoch, |last| last + self.after_frames);
        let start = (epoch + Duration::from_nanos((due - half).max(0.0) as u64))
            .max(earliest)
            .min(end);
        Some(Window { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const US: Duration = Duration::from_micros(1);
    const MS: Duration = Duration::from_millis(1);

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

    /// The loop around the policy, simulated: how late a sleeping loop notices
    /// a frame or its timer, how long one poll and one turn take.
    #[derive(Clone, Copy, Debug)]
    struct Model {
        wake: Duration,
        step: Duration,
        turn: Duration,
    }

    const MODEL: Model = Model {
        wake: Duration::from_micros(50),
        step: Duration::from_micros(1),
        turn: Duration::from_micros(5),
    };

    /// What a simulated run did.
    #[derive(Debug, Default)]
    struct Outcome {
        /// Per frame: noticed while the loop was spinning (in any window).
        caught: Vec<bool>,
        /// Per frame: how long after its arrival it was noticed.
        delay: Vec<Duration>,
        /// Spinning outside the after-frames windows, measured by the model.
        spun_ahead: Duration,
        /// Simulated time from the start to the end of the run.
        elapsed: Duration,
        /// Wake-ups from sleep (by a frame or by the timer).
        wakeups: u64,
        /// One line per decision that changed, for reading a failure.
        trace: Vec<String>,
    }

    /// Drives `policy` as the worker does over frames arriving at `arrivals`
    /// (sorted), from `start` until the frames are served and the loop sleeps
    /// for good, or `until`.
    fn simulate(
        policy: &mut IdlePolicy,
        model: Model,
        start: Instant,
        arrivals: &[Instant],
        until: Instant,
    ) -> Outcome {
        let mut out = Outcome::default();
        let mut now = start;
        let mut next = 0;
        let mut last_notice: Option<Instant> = None;
        let mut last_kind = "";
        let after = policy.after_frames;
        let at = |t: Instant| t.saturating_duration_since(start).as_secs_f64() * 1e6;
        while now < until {
            let pending = arrivals.get(next).copied();
            let wait = policy.wait(now);
            let kind = match wait {
                Wait::Spin => "spin",
                Wait::SleepUntil(_) => "sleep-until",
                Wait::Sleep => "sleep",
            };
            if kind != last_kind || kind == "sleep-until" {
                out.trace.push(format!("{:>12.1} {wait:?}", at(now)));
                last_kind = kind;
            }
            let (noticed, slept) = match wait {
                Wait::Spin => match pending {
                    Some(arrival) if arrival <= now => (now, false),
                    _ => {
                        if last_notice.is_none_or(|last| now >= last + after) {
                            out.spun_ahead += model.step;
                        }
                        now += model.step;
                        continue;
                    }
                },
                Wait::SleepUntil(wake) => {
                    let timer = wake.max(now) + model.wake;
                    let frame = pending.map(|a| if a <= now { now } else { a + model.wake });
                    out.wakeups += 1;
                    match frame {
                        Some(frame) if frame <= timer => (frame, true),
                        _ => {
                            now = timer;
                            out.trace.push(format!("{:>12.1} timer", at(now)));
                            policy.timer_fired(now);
                            continue;
                        }
                    }
                }
                Wait::Sleep => match pending {
                    None => break,
                    Some(a) => {
                        out.wakeups += 1;
                        (if a <= now { now } else { a + model.wake }, true)
                    }
                },
            };
            while let Some(&arrival) = arrivals.get(next).filter(|&&a| a <= noticed) {
                out.caught.push(!slept);
                out.delay.push(noticed - arrival);
                next += 1;
            }
            out.trace.push(format!(
                "{:>12.1} frames{}",
                at(noticed),
                if slept { " (woken)" } else { "" }
            ));
            policy.frames(noticed, slept);
            last_notice = Some(noticed);
            now = noticed + model.turn;
        }
        out.elapsed = now.saturating_duration_since(start);
        out
    }

    /// At most `budget` of the time, plus a full bucket, plus one poll and one
    /// turn per window overrun (the loop checks between polls).
    fn within_budget(spun: Duration, elapsed: Duration, pct: u32, windows: u64) -> bool {
        let budget = f64::from(pct) / 100.0;
        let limit = budget * elapsed.as_secs_f64()
            + budget * MAX_PREDICTED_GAP.as_secs_f64()
            + windows as f64 * (MODEL.step + MODEL.turn).as_secs_f64();
        spun.as_secs_f64() <= limit + 1e-9
    }

    /// A steady pattern: `phases` bursts per `period`, each at its offset,
    /// jittered by `jitter[i]` µs.
    fn pattern(
        base: Instant,
        period: Duration,
        offsets: &[Duration],
        periods: u32,
        jitter: &[i8],
    ) -> Vec<Instant> {
        let mut arrivals = Vec::new();
        for p in 0..periods {
            for offset in offsets {
                let i = arrivals.len();
                let j = i64::from(jitter.get(i % jitter.len().max(1)).copied().unwrap_or(0));
                let at = base + period * p + *offset + US * 1000;
                arrivals.push(if j >= 0 {
                    at + US * j as u32
                } else {
                    at - US * (-j) as u32
                });
            }
        }
        arrivals.sort();
        arrivals
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

    /// Frames `gap` apart, each noticed at once if the loop was spinning and one
    /// `wake` later if it slept; the loop polls every µs while it spins.
    fn stream(policy: &mut IdlePolicy, start: Instant, gap: Duration, frames: u32) -> Instant {
        let wake = 50 * US;
        let mut at = start;
        let mut slept = true;
        for _ in 0..frames {
            policy.frames(at, slept);
            let next = at + gap;
            let mut now = at + US;
            slept = loop {
                if now >= next {
                    break false;
                }
                if policy.wait(now) != Wait::Spin {
                    break true;
                }
                now += US;
            };
            at = if slept { next + wake } else { now };
        }
        at
    }

    #[test]
    fn spins_after_frames_are_counted_as_hits_and_misses() {
        let mut policy = IdlePolicy::new(20 * US, 0);
        let t = Instant::now();
        // Bulk-like: the next frame 60 µs after the last, past every 20 µs spin.
        let t = stream(&mut policy, t, 60 * US, 80);
        let s = policy.stats();
        assert_eq!((s.after_hits, s.after_misses), (0, 80), "{s:?}");
        // Request/response on a fast machine: the next frame 10 µs later, caught.
        let t = stream(&mut policy, t + MS, 10 * US, 100);
        let s = policy.stats();
        // The first frame of the run came after a miss; the last spin is still going.
        assert_eq!((s.after_hits, s.after_misses), (99, 80), "{s:?}");
        assert_eq!(policy.wait(t + MS), Wait::Sleep);
        assert_eq!(policy.stats().after_misses, 81);
        assert_eq!(policy.wait(t + 2 * MS), Wait::Sleep);
        assert_eq!(policy.stats().after_misses, 81, "a miss is counted once");
    }

    #[test]
    fn learns_a_steady_gap_and_wakes_ahead_of_the_next_burst() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let period = 2000 * US;
        let last = rhythm(&mut policy, base, period, 10);
        let windows = policy.stats().windows;
        // Steady 2 ms gaps: the window is ±15 µs (steady: the minimum) around
        // last + 2 ms, capped to 5% of 2 ms, and the timer is set early by
        // the assumed lateness.
        let due = last + period;
        let Wait::SleepUntil(wake) = policy.wait(last + 200 * US) else {
            panic!("expected a timed sleep");
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
        // Charged from the first spin to the decision to sleep.
        assert_eq!(policy.stats().spin_ns, (70 * US).as_nanos() as u64);
    }

    #[test]
    fn a_frame_inside_the_window_is_a_hit() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let period = 2000 * US;
        let last = rhythm(&mut policy, base, period, 20);
        let before = policy.stats();
        let due = last + period;
        assert_eq!(policy.wait(due - 5 * US), Wait::Spin);
        policy.frames(due, false);
        let after = policy.stats();
        assert_eq!(after.windows, before.windows + 1);
        assert_eq!(after.hits, before.hits + 1);
        assert_eq!(after.spin_ns, before.spin_ns + (5 * US).as_nanos() as u64);
        // The prediction is spent: past the after-frames window, the loop
        // sleeps until the next period's.
        assert!(matches!(policy.wait(due + 25 * US), Wait::SleepUntil(wake) if wake > due + MS));
    }

    #[test]
    fn spinning_ahead_stays_within_the_budget() {
        for (period_us, budget_pct) in [(2000u32, 5u32), (10_000, 5), (1000, 2), (2000, 1)] {
            let mut policy = IdlePolicy::new(20 * US, budget_pct);
            let base = Instant::now();
            let period = period_us * US;
            // Jittery but steady enough to predict (±3%).
            let mut at = base;
            for i in 0..40u32 {
                let jitter = if i % 2 == 0 {
                    period * 3 / 100
                } else {
                    Duration::ZERO
                };
                at = base + period * i + jitter;
                policy.frames(at, false);
            }
            // Walk through the next two gaps in 1 µs steps and count the
            // spinning ahead (after the after-frames window); a timed sleep ends
            // when the timer fires, as late as the policy assumes.
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
            let limit = 2.0 * period.as_secs_f64() * f64::from(budget_pct) / 100.0;
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
        // Gaps of 0.5, 3, 1, 6 ms...: no span of 1 to 4 bursts repeats.
        for gap_us in [500u64, 3000, 1000, 6000, 700, 4000, 1500, 5000, 300, 2500] {
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
        let stats = policy.stats();
        assert_eq!(
            (stats.windows, stats.hits, stats.spin_ns),
            (0, 0, 0),
            "{stats:?}"
        );
    }

    #[test]
    fn a_rhythm_jittering_beyond_the_widest_window_opens_none() {
        // Every 10 ms, ±150 µs: a rhythm (spans within a 16th of the period),
        // but at 1% the widest window is ±50 µs: it would mostly miss.
        let mut policy = IdlePolicy::new(20 * US, 1);
        let base = Instant::now();
        let period = 10 * MS;
        let mut at = base;
        for (i, jitter) in [0i32, 150, -100, 120, -150, 80]
            .iter()
            .cycle()
            .take(30)
            .enumerate()
        {
            at = base + period * i as u32 + MS;
            at = if *jitter >= 0 {
                at + US * *jitter as u32
            } else {
                at - US * (-*jitter) as u32
            };
            policy.frames(at, false);
        }
        assert!(policy.rhythm.is_some(), "the period is found");
        let mut now = at + 21 * US;
        while now < at + 3 * period {
            assert_ne!(policy.wait(now), Wait::Spin, "at {:?}", now - at);
            now += 10 * US;
        }
        assert_eq!(policy.stats().windows, 0);
    }

    #[test]
    fn windows_that_keep_missing_are_passed_over_but_probed() {
        // A 2 ms rhythm whose bursts then always come 30 µs after the window
        // ended (as when a loaded machine wakes the loop too late): once the
        // hit rate is low, only one window in PROBE_EVERY is entered.
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let period = 2 * MS;
        let mut last = rhythm(&mut policy, base, period, 10);
        let warm_hits = policy.stats().hits;
        let mut entered = Vec::new();
        for _ in 0..200 {
            let mut now = last + 25 * US;
            let mut spun = false;
            let mut ended = None;
            while now < last + 2 * period {
                match policy.wait(now) {
                    Wait::Spin => spun = true,
                    _ if spun => {
                        ended = Some(now);
                        break;
                    }
                    _ => {}
                }
                now += US;
            }
            entered.push(spun);
            last = ended.map_or(last + period, |end| end + 30 * US);
            policy.frames(last, true);
        }
        let late: usize = entered[100..].iter().filter(|&&e| e).count();
        assert!(policy.hit_rate < MIN_HIT_RATE);
        assert!(
            late <= 100 / PROBE_EVERY as usize + 1 && late >= 100 / PROBE_EVERY as usize - 1,
            "{late} of the last 100 windows entered"
        );
        assert_eq!(policy.stats().hits, warm_hits, "every later window missed");
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
        // than the window (whose half-width is the minimum on a steady gap).
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
    fn one_stalled_timer_does_not_set_every_later_one_far_ahead() {
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let period = 2000 * US;
        let mut last = rhythm(&mut policy, base, period, 5);
        let mut leads = Vec::new();
        for i in 0..30 {
            let Wait::SleepUntil(wake) = policy.wait(last + 200 * US) else {
                panic!("expected a timed sleep");
            };
            leads.push((last + period) - wake);
            // 50 µs late, but once (a tick) 4 ms.
            let late = if i == 20 { 4000 * US } else { 50 * US };
            policy.timer_fired(wake + late);
            last += period;
            policy.frames(last, false);
        }
        let (before, after) = (leads[20], leads[21]);
        assert!(
            after < before + 20 * US,
            "one 4 ms stall moved the wake-up from {before:?} to {after:?} ahead"
        );
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

    #[test]
    fn a_burst_just_after_a_window_moves_the_next_window_later() {
        // The loop falls asleep as a window ends and the burst comes 2 µs
        // later: it arrived after the loop fell asleep, not one wake-up
        // before it was noticed, so the window moves towards it (back-dating
        // by the whole lateness pulled every later window earlier, until they
        // all ended just before their bursts).
        let model = Model {
            wake: 80 * US,
            ..MODEL
        };
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let period = MS;
        // Bursts every 1 ms, the first 10 noticed late, as if the loop had
        // learned them 60 µs early.
        let mut at = base;
        for i in 0..10u32 {
            at = base + period * i;
            policy.frames(at - 60 * US + INITIAL_LATENESS, true);
        }
        let arrivals: Vec<Instant> = (10..60u32).map(|i| base + period * i).collect();
        let out = simulate(&mut policy, model, at + 30 * US, &arrivals, base + 70 * MS);
        let late: Vec<bool> = out.caught[30..].to_vec();
        assert!(
            late.iter().all(|&caught| caught),
            "after 30 bursts every one is caught: {:?}\n{}",
            out.caught,
            out.trace[out.trace.len().saturating_sub(40)..].join("\n")
        );
    }

    #[test]
    fn request_response_alternating_gaps_predicts_both() {
        // A request every 1 ms and its answer 150 µs later: gaps alternate
        // 150 and 850 µs, a rhythm of two bursts per period.
        let mut policy = IdlePolicy::new(20 * US, 10);
        let base = Instant::now();
        let arrivals = pattern(
            base,
            MS,
            &[Duration::ZERO, 150 * US],
            100,
            &[0, 2, -1, 1, -2],
        );
        let out = simulate(&mut policy, MODEL, base, &arrivals, base + 200 * MS);
        let rhythm = policy.rhythm.expect("a rhythm");
        assert!(
            (rhythm.period - 1e6).abs() < 5e3,
            "period {} ns",
            rhythm.period
        );
        assert!(
            out.caught[40..].iter().all(|&c| c),
            "requests and answers caught after warm-up: {:?}\n{}",
            out.caught,
            out.trace[..80.min(out.trace.len())].join("\n")
        );
        assert!(within_budget(
            out.spun_ahead,
            out.elapsed,
            10,
            policy.stats().windows
        ));
    }

    #[test]
    fn a_burst_that_sometimes_splits_keeps_the_rhythm() {
        // A request every 2 ms whose answer usually comes with it (one burst)
        // but every fifth period 200 µs later (a burst of its own).
        let mut policy = IdlePolicy::new(20 * US, 5);
        let base = Instant::now();
        let mut arrivals = Vec::new();
        for p in 0..100u32 {
            let at = base + 2 * MS * p + MS;
            arrivals.push(at);
            if p % 5 == 4 {
                arrivals.push(at + 200 * US);
            }
        }
        let out = simulate(&mut policy, MODEL, base, &arrivals, base + 250 * MS);
        let requests: Vec<bool> = arrivals
            .iter()
            .zip(&out.caught)
            .filter(|(at, _)| (at.duration_since(base).as_micros() % 2000) == 1000)
            .map(|(_, &caught)| caught)
            .collect();
        let missed = requests[20..].iter().filter(|&&c| !c).count();
        assert_eq!(missed, 0, "requests caught: {requests:?}");
        assert!(policy.rhythm.is_some());
    }

    /// The arrivals of a paced request/response run recorded at the switch
    /// (testdata/paced-rr-arrivals.txt): requests and answers, as they came.
    fn recorded_paced_rr(base: Instant) -> Vec<Instant> {
        include_str!("testdata/paced-rr-arrivals.txt")
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_whitespace().next()?.parse::<f64>().ok())
            .map(|us| base + MS + Duration::from_nanos((us * 1e3) as u64))
            .collect()
    }

    #[test]
    fn replaying_recorded_paced_request_response() {
        let base = Instant::now();
        let arrivals = recorded_paced_rr(base);
        assert_eq!(arrivals.len(), 600);
        let end = *arrivals.last().expect("arrivals") + 10 * MS;
        let mut off = IdlePolicy::new(20 * US, 0);
        let without = simulate(&mut off, MODEL, base, &arrivals, end);
        let mut policy = IdlePolicy::new(20 * US, 5);
        let with = simulate(&mut policy, MODEL, base, &arrivals, end);
        let stats = policy.stats();
        let mean = |out: &Outcome| {
            out.delay.iter().sum::<Duration>().as_secs_f64() * 1e6 / out.delay.len() as f64
        };
        eprintln!(
            "recorded paced RR: without prediction {:.1} µs mean delay, {} wake-ups; \
             with: {:.1} µs, {} wake-ups, {stats:?}, spun ahead {:?} over {:?}",
            mean(&without),
            without.wakeups,
            mean(&with),
            with.wakeups,
            with.spun_ahead,
            with.elapsed
        );
        eprintln!("{}", with.trace[1000..1100].join("\n"));
        assert!(within_budget(
            with.spun_ahead,
            with.elapsed,
            5,
            stats.windows
        ));
        assert!(
            stats.hits * 2 > stats.windows,
            "most windows catch their burst: {stats:?}"
        );
        assert!(
            mean(&with) < mean(&without) * 0.7,
            "prediction cuts the delay"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A steady pattern of 1–3 bursts per period with a few µs of jitter:
        /// after warm-up every burst lands in a window.
        #[test]
        fn steady_patterns_land_in_windows(
            period_us in 2_000u32..20_000,
            phases in 1usize..=3,
            shifts in proptest::collection::vec(-25i32..=25, 3),
            jitter in proptest::collection::vec(-4i8..=4, 1..50),
            wake_us in 5u32..120,
        ) {
            let period = period_us * US;
            let slot = period / phases as u32;
            let offsets: Vec<Duration> = (0..phases)
                .map(|i| {
                    let shift = slot.as_nanos() as i64 * i64::from(shifts[i]) / 100;
                    let at = slot.as_nanos() as i64 * i as i64 + if i == 0 { 0 } else { shift };
                    Duration::from_nanos(at as u64)
                })
                .collect();
            let mut policy = IdlePolicy::new(20 * US, 5);
            let base = Instant::now();
            let arrivals = pattern(base, period, &offsets, 40, &jitter);
            let model = Model { wake: wake_us * US, ..MODEL };
            let end = *arrivals.last().expect("arrivals") + period;
            let out = simulate(&mut policy, model, base, &arrivals, end);
            let warm_up = 20 * phases;
            let missed: Vec<usize> = out.caught.iter().enumerate()
                .skip(warm_up)
                .filter(|&(_, &caught)| !caught)
                .map(|(i, _)| i)
                .collect();
            prop_assert!(
                missed.is_empty(),
                "missed bursts {:?} of {}; offsets {:?}; {:?}\n{}",
                missed, out.caught.len(), offsets, policy.stats(),
                out.trace[out.trace.len().saturating_sub(60)..].join("\n")
            );
            prop_assert!(within_budget(out.spun_ahead, out.elapsed, 5, policy.stats().windows));
        }

        /// Random arrivals: whatever the policy predicts, it spins ahead at
        /// most its budget (and its own count agrees).
        #[test]
        fn irregular_arrivals_stay_within_the_budget(
            gaps_us in proptest::collection::vec(60u32..30_000, 10..300),
            pct in 1u32..=20,
            wake_us in 5u32..150,
        ) {
            let base = Instant::now();
            let mut at = base + MS;
            let arrivals: Vec<Instant> = gaps_us.iter().map(|gap| { at += *gap * US; at }).collect();
            let mut policy = IdlePolicy::new(20 * US, pct);
            let model = Model { wake: wake_us * US, ..MODEL };
            let out = simulate(&mut policy, model, base, &arrivals, at + 200 * MS);
            let stats = policy.stats();
            prop_assert!(within_budget(out.spun_ahead, out.elapsed, pct, stats.windows),
                "spun {:?} over {:?} at {}%", out.spun_ahead, out.elapsed, pct);
            prop_assert!(within_budget(Duration::from_nanos(stats.spin_ns), out.elapsed, pct, stats.windows));
        }

        /// An idle policy never spins; after traffic stops it spins at most
        /// the windows of one period, then sleeps for good.
        #[test]
        fn idle_never_spins(
            period_us in 500u32..50_000,
            bursts in 0u32..30,
            probes in proptest::collection::vec(0u64..10_000_000_000, 1..50),
        ) {
            let base = Instant::now();
            let mut fresh = IdlePolicy::new(20 * US, 5);
            for probe in &probes {
                prop_assert_eq!(fresh.wait(base + Duration::from_nanos(*probe)), Wait::Sleep);
            }
            let period = period_us * US;
            let arrivals: Vec<Instant> = (0..bursts).map(|i| base + MS + period * i).collect();
            let mut policy = IdlePolicy::new(20 * US, 5);
            let last = arrivals.last().copied().unwrap_or(base);
            let busy = simulate(&mut policy, MODEL, base, &arrivals, last + period * 3);
            let quiet_from = last + period * 3;
            let quiet = simulate(&mut policy, MODEL, quiet_from, &[], quiet_from + 10 * MS * 1000);
            prop_assert_eq!(quiet.spun_ahead, Duration::ZERO, "spun while idle; before: {:?}", busy.spun_ahead);
            prop_assert_eq!(quiet.wakeups, 0);
            for probe in &probes {
                prop_assert_eq!(policy.wait(quiet_from + Duration::from_nanos(*probe)), Wait::Sleep);
            }
        }
    }
}
