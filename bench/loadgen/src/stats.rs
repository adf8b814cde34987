//! Order statistics used by the report: exact percentiles, medians, and the
//! median of per-round ratios.

/// Exact nearest-rank percentile of `sorted` (ascending): the smallest sample
/// such that at least `pct` percent of the samples are less than or equal to it.
///
/// Returns `None` for an empty slice. `pct` is clamped to `0.0..=100.0`;
/// `pct == 0` gives the minimum.
pub fn percentile_sorted(sorted: &[u64], pct: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let pct = pct.clamp(0.0, 100.0);
    // Nearest rank: ceil(p/100 * N), 1-based; rank 0 only for p == 0.
    // The small relative shave keeps decimal percentages exact: 99.9% of 1000 is
    // 999.0000000000001 in binary floating point, and must still be rank 999.
    let exact = pct / 100.0 * sorted.len() as f64;
    let rank = (exact - exact * 1e-12).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Median of `values`, averaging the two middle values for an even count.
/// NaN values are ignored; returns `None` when nothing is left.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if finite.is_empty() {
        return None;
    }
    finite.sort_by(f64::total_cmp);
    let mid = finite.len() / 2;
    Some(if finite.len() % 2 == 1 {
        finite[mid]
    } else {
        (finite[mid - 1] + finite[mid]) / 2.0
    })
}

/// Median over rounds of `system[i] / baseline[i]`, using only rounds where
/// both values exist and the baseline is non-zero.
///
/// Pairing within a round cancels the drift that affects both systems alike
/// (the machine's absolute numbers move ±20% between runs).
pub fn median_of_ratios(system: &[Option<f64>], baseline: &[Option<f64>]) -> Option<f64> {
    let ratios: Vec<f64> = system
        .iter()
        .zip(baseline)
        .filter_map(|pair| match pair {
            (Some(s), Some(b)) if *b != 0.0 => Some(s / b),
            _ => None,
        })
        .collect();
    median(&ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank_on_one_to_hundred() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&samples, 50.0), Some(50));
        assert_eq!(percentile_sorted(&samples, 99.0), Some(99));
        assert_eq!(percentile_sorted(&samples, 99.5), Some(100));
        assert_eq!(percentile_sorted(&samples, 100.0), Some(100));
        assert_eq!(percentile_sorted(&samples, 0.0), Some(1));
        assert_eq!(percentile_sorted(&samples, 0.1), Some(1));
        assert_eq!(percentile_sorted(&samples, 99.9), Some(100));
        let thousand: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile_sorted(&thousand, 99.9), Some(999));
        assert_eq!(percentile_sorted(&thousand, 99.95), Some(1000));
    }

    #[test]
    fn percentile_small_and_empty_inputs() {
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[7], 99.0), Some(7));
        // N=4: p50 rank ceil(2.0)=2 -> second sample, p51 rank 3.
        assert_eq!(percentile_sorted(&[10, 20, 30, 40], 50.0), Some(20));
        assert_eq!(percentile_sorted(&[10, 20, 30, 40], 51.0), Some(30));
        assert_eq!(percentile_sorted(&[10, 20, 30, 40], 150.0), Some(40));
    }

    #[test]
    fn p99_of_twenty_thousand_picks_rank_19800() {
        let samples: Vec<u64> = (1..=20_000).collect();
        assert_eq!(percentile_sorted(&samples, 99.0), Some(19_800));
        assert_eq!(percentile_sorted(&samples, 50.0), Some(10_000));
    }

    #[test]
    fn median_odd_even_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_of_ratios_pairs_rounds_not_medians() {
        // Baseline drifts a lot between rounds; the system is always 0.5x.
        let baseline = [Some(10.0), Some(20.0), Some(40.0)];
        let system = [Some(5.0), Some(10.0), Some(20.0)];
        assert_eq!(median_of_ratios(&system, &baseline), Some(0.5));
        let baseline = [Some(10.0), Some(100.0), Some(1000.0)];
        let system = [Some(20.0), Some(50.0), Some(3000.0)];
        // Ratios 2.0, 0.5, 3.0 -> median 2.0; ratio of medians would be 0.5.
        assert_eq!(median_of_ratios(&system, &baseline), Some(2.0));
    }

    #[test]
    fn median_of_ratios_skips_missing_and_zero_baselines() {
        let baseline = [Some(0.0), None, Some(4.0), Some(2.0)];
        let system = [Some(1.0), Some(3.0), None, Some(3.0)];
        assert_eq!(median_of_ratios(&system, &baseline), Some(1.5));
        assert_eq!(median_of_ratios(&[None], &[Some(1.0)]), None);
    }
}
