//! RFC 2544-style binary search for the highest zero-loss rate, independent of
//! how a trial is run (the orchestrator drives real blasts; tests drive a
//! synthetic loss function).

use serde::Serialize;

/// What one trial at a target rate did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrialOutcome {
    /// Rate the sender was asked to pace at, packets per second; `0` means unpaced.
    pub target_pps: f64,
    /// Packets the sender handed to the kernel.
    pub sent: u64,
    /// Distinct packets the sink counted.
    pub received: u64,
    /// Wall time of the sending phase, seconds.
    pub elapsed_s: f64,
}

impl TrialOutcome {
    /// Loss tolerance is zero: every packet sent must arrive.
    pub fn is_zero_loss(&self) -> bool {
        self.sent > 0 && self.received >= self.sent
    }

    /// Rate the sender actually achieved, which is below the target when the
    /// sender itself cannot keep up.
    pub fn sent_pps(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.sent as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Rate of packets that arrived at the sink.
    pub fn delivered_pps(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.received.min(self.sent) as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Fraction of sent packets that did not arrive.
    pub fn loss_fraction(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            1.0 - self.received.min(self.sent) as f64 / self.sent as f64
        }
    }
}

/// Bounds of one search.
#[derive(Debug, Clone, Copy)]
pub struct SearchParams {
    /// Upper end of the search, packets per second (the unpaced sender's rate).
    pub max_pps: f64,
    /// Maximum number of paced trials.
    pub max_trials: u32,
    /// Stop when the bracket is narrower than this fraction of `max_pps`.
    pub resolution: f64,
}

/// The answer and how it was found.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// Achieved rate of the fastest zero-loss trial; `0` when no trial was loss-free.
    pub zero_loss_pps: f64,
    /// Every trial in the order it ran.
    pub trials: Vec<TrialOutcome>,
}

/// Binary search for the highest rate with zero loss.
///
/// `known_at_max` is an outcome already measured at `max_pps` (the unpaced
/// blast): when it lost nothing the search is over, since pacing at the same
/// average rate only removes bursts. Otherwise the bracket starts at
/// `[0, max_pps]` and each trial halves it.
pub fn find_zero_loss_rate<E>(
    params: SearchParams,
    known_at_max: Option<TrialOutcome>,
    mut run_trial: impl FnMut(f64) -> Result<TrialOutcome, E>,
) -> Result<SearchResult, E> {
    let mut trials = Vec::new();
    if let Some(outcome) = known_at_max {
        if outcome.is_zero_loss() {
            return Ok(SearchResult {
                zero_loss_pps: outcome.sent_pps(),
                trials,
            });
        }
    }
    let mut passing_floor = 0.0;
    let mut failing_ceiling = params.max_pps;
    let mut best: Option<TrialOutcome> = None;
    while (trials.len() as u32) < params.max_trials
        && failing_ceiling - passing_floor > params.resolution * params.max_pps
    {
        let target = (passing_floor + failing_ceiling) / 2.0;
        let outcome = run_trial(target)?;
        trials.push(outcome);
        if outcome.is_zero_loss() {
            passing_floor = target;
            if best.is_none_or(|b| outcome.sent_pps() > b.sent_pps()) {
                best = Some(outcome);
            }
        } else {
            failing_ceiling = target;
        }
    }
    Ok(SearchResult {
        zero_loss_pps: best.map_or(0.0, |b| b.sent_pps()),
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A path that delivers up to `capacity_pps` and drops the excess, fed by a
    /// sender that cannot exceed `sender_limit_pps`.
    fn synthetic(
        capacity_pps: f64,
        sender_limit_pps: f64,
    ) -> impl FnMut(f64) -> Result<TrialOutcome, Infallible> {
        move |target| {
            let sent = target.min(sender_limit_pps).round() as u64;
            let received = sent.min(capacity_pps.round() as u64);
            Ok(TrialOutcome {
                target_pps: target,
                sent,
                received,
                elapsed_s: 1.0,
            })
        }
    }

    fn params(max_pps: f64, max_trials: u32) -> SearchParams {
        SearchParams {
            max_pps,
            max_trials,
            resolution: 0.001,
        }
    }

    #[test]
    fn converges_below_capacity_within_resolution() {
        let result =
            find_zero_loss_rate(params(1_000_000.0, 30), None, synthetic(337_000.0, 2e6)).unwrap();
        assert!(
            result.zero_loss_pps <= 337_000.0,
            "{}",
            result.zero_loss_pps
        );
        assert!(
            result.zero_loss_pps > 337_000.0 - 1_000.0,
            "{}",
            result.zero_loss_pps
        );
        assert!(
            result.trials.len() <= 11,
            "bracket of 0.1% needs ~10 halvings, took {}",
            result.trials.len()
        );
    }

    #[test]
    fn trial_budget_bounds_the_search() {
        let mut calls = 0;
        let mut inner = synthetic(337_000.0, 2e6);
        let result = find_zero_loss_rate(params(1_000_000.0, 3), None, |rate| {
            calls += 1;
            inner(rate)
        })
        .unwrap();
        assert_eq!(calls, 3);
        // 500k fails, 250k passes, 375k fails.
        assert_eq!(result.zero_loss_pps, 250_000.0);
        let targets: Vec<f64> = result.trials.iter().map(|t| t.target_pps).collect();
        assert_eq!(targets, vec![500_000.0, 250_000.0, 375_000.0]);
    }

    #[test]
    fn loss_free_unpaced_blast_ends_the_search_without_trials() {
        let at_max = TrialOutcome {
            target_pps: 0.0,
            sent: 800_000,
            received: 800_000,
            elapsed_s: 1.0,
        };
        let result = find_zero_loss_rate(
            params(800_000.0, 10),
            Some(at_max),
            |_| -> Result<_, Infallible> { panic!("no paced trial should run") },
        )
        .unwrap();
        assert_eq!(result.zero_loss_pps, 800_000.0);
        assert!(result.trials.is_empty());
    }

    #[test]
    fn a_path_that_always_loses_reports_zero() {
        let result =
            find_zero_loss_rate(params(1_000_000.0, 8), None, synthetic(0.0, 2e6)).unwrap();
        assert_eq!(result.zero_loss_pps, 0.0);
        assert_eq!(result.trials.len(), 8);
    }

    #[test]
    fn reports_achieved_rate_when_sender_falls_short() {
        // The sender tops out at 100k whatever the target; the path never loses.
        let lossy_at_max = TrialOutcome {
            target_pps: 0.0,
            sent: 100,
            received: 99,
            elapsed_s: 0.001,
        };
        let result = find_zero_loss_rate(
            params(1_000_000.0, 4),
            Some(lossy_at_max),
            synthetic(1e9, 100_000.0),
        )
        .unwrap();
        assert_eq!(result.zero_loss_pps, 100_000.0);
    }

    #[test]
    fn one_lost_packet_fails_a_trial() {
        let outcome = TrialOutcome {
            target_pps: 1.0,
            sent: 1_000_000,
            received: 999_999,
            elapsed_s: 1.0,
        };
        assert!(!outcome.is_zero_loss());
        let empty = TrialOutcome {
            target_pps: 1.0,
            sent: 0,
            received: 0,
            elapsed_s: 1.0,
        };
        assert!(
            !empty.is_zero_loss(),
            "a trial that sent nothing proves nothing"
        );
    }
}
