//! The SVG chart next to the JSON results: per metric, each system's ratio to
//! the bridge in every round (1.0 = the bridge; which side is better is in the
//! panel's title), so the spread over rounds shows at a glance. Drawn with
//! plotters' SVG backend.

use crate::report::Results;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Metrics charted, in panel order (those a run has no numbers for are left out).
const CHARTED: [&str; 14] = [
    "tcp_1_stream_gbps",
    "tcp_4_streams_gbps",
    "rr_p50_us",
    "rr_p99_us",
    "ping_2ms_avg_us",
    "ping_2ms_p99_us",
    "ping_10ms_avg_us",
    "ping_10ms_p99_us",
    "rr_1k_avg_us",
    "rr_1k_p99_us",
    "zero_loss_kpps_64",
    "switch_cpu_s_per_gb",
    "ping_2ms_cpu_pct",
    "rr_1k_cpu_pct",
];

/// Where the chart of `results_path` goes: the same name, `.svg`.
pub fn chart_path(results_path: &Path) -> PathBuf {
    results_path.with_extension("svg")
}

/// One panel: a metric's per-round values of each system, as ratios to the
/// bridge's in the same round (or, for CPU figures, which the bridge has none
/// of, the values themselves).
#[derive(Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub ratio: bool,
    pub series: Vec<(String, Vec<(u32, f64)>)>,
}

/// The panels of `results`, pure (tested without drawing).
pub fn panels(results: &Results) -> Vec<Panel> {
    let value = |round: u32, system: &str, key: &str| {
        results
            .rounds
            .iter()
            .find(|s| s.round == round && s.system == system && s.error.is_none())
            .and_then(|s| s.metrics.get(key).copied())
    };
    let systems = results.config.system_names();
    let rounds = results.rounds.iter().map(|s| s.round).max().unwrap_or(0);
    let mut panels = Vec::new();
    for key in CHARTED {
        let Some(spec) = results.metrics.iter().find(|m| m.key == key) else {
            continue;
        };
        // The bridge has no switch process: CPU figures are drawn as they are.
        let ratio = !key.ends_with("_cpu_pct") && key != "switch_cpu_s_per_gb";
        let mut series = Vec::new();
        for system in systems.iter().filter(|s| **s != "bridge") {
            let points: Vec<(u32, f64)> = (1..=rounds)
                .filter_map(|round| {
                    let mine = value(round, system, key)?;
                    if !ratio {
                        return Some((round, mine));
                    }
                    let bridge = value(round, "bridge", key).filter(|b| *b > 0.0)?;
                    Some((round, mine / bridge))
                })
                .collect();
            if !points.is_empty() {
                series.push((system.to_string(), points));
            }
        }
        if series.is_empty() {
            continue;
        }
        let better = if spec.higher_is_better {
            "higher"
        } else {
            "lower"
        };
        let title = if ratio {
            format!("{} ÷ bridge, log scale ({better} is better)", spec.label)
        } else {
            spec.label.clone()
        };
        panels.push(Panel {
            title,
            ratio,
            series,
        });
    }
    panels
}

/// Writes the chart; `Err` says why it could not be drawn.
pub fn write_svg(results: &Results, path: &Path) -> Result<(), String> {
    let panels = panels(results);
    if panels.is_empty() {
        return Err("no metric has numbers for both the bridge and another system".into());
    }
    let columns = 3usize;
    let rows = panels.len().div_ceil(columns);
    let size = (420 * columns as u32, 260 * rows as u32 + 40);
    let root = SVGBackend::new(path, size).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let (header, body) = root.split_vertically(40);
    header
        .titled(
            &format!(
                "tapswitch-bench {}: per-round values vs the kernel bridge ({} cores, shared)",
                results.timestamp, results.machine.nproc
            ),
            ("sans-serif", 18),
        )
        .map_err(|e| draw(&e))?;
    let rounds = results.rounds.iter().map(|s| s.round).max().unwrap_or(1);
    let areas = body.split_evenly((rows, columns));
    for (panel, area) in panels.iter().zip(&areas) {
        // Ratios are drawn on a log scale (as log10, labelled as ratios): one
        // round stalled 30× by a loaded machine must not flatten the others.
        let shown = |v: f64| if panel.ratio { v.max(1e-3).log10() } else { v };
        let values = panel
            .series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, v)| shown(*v)));
        let (low, high) = values.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
        let (low, high) = if panel.ratio {
            (low.min(0.0) - 0.05, high.max(0.0) + 0.05)
        } else {
            (0.0, high.max(1.0) * 1.2)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 13))
            .margin(8)
            .x_label_area_size(22)
            .y_label_area_size(40)
            .build_cartesian_2d(0.5f64..rounds as f64 + 0.5, low..high)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_labels(rounds as usize)
            .x_label_formatter(&|x| format!("r{}", x.round() as i64))
            .y_labels(5)
            .y_label_formatter(&|y| {
                if panel.ratio {
                    format!("{:.2}", 10f64.powf(*y))
                } else {
                    format!("{y:.1}")
                }
            })
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| draw(&e))?;
        if panel.ratio {
            chart
                .draw_series(LineSeries::new(
                    [(0.5, 0.0), (rounds as f64 + 0.5, 0.0)],
                    BLACK.stroke_width(1),
                ))
                .map_err(|e| draw(&e))?
                .label("bridge")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK));
        }
        for (index, (system, points)) in panel.series.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let line: Vec<(f64, f64)> = points
                .iter()
                .map(|(r, v)| (f64::from(*r), shown(*v)))
                .collect();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(|e| draw(&e))?
                .label(system.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2))
                });
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| draw(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{MachineInfo, RoundSample};
    use crate::run::RunConfig;
    use crate::systems::SystemKind;

    fn results() -> Results {
        let config = RunConfig {
            rounds: 2,
            systems: vec![SystemKind::Bridge, SystemKind::Tapswitch],
            tcp_seconds: 1,
            rr_count: 1,
            rr_budget_ms: 1,
            trial_ms: 1,
            search_trials: 1,
            frame_sizes: vec![64],
            sparse_pings: 1,
            sparse_only: true,
            variants: Vec::new(),
            tapswitch_bin: "tapswitch".into(),
            tapswitch_args: Vec::new(),
            baseline_tapswitch: None,
            output: "x.json".into(),
            skipped: Vec::new(),
        };
        let mut rounds = Vec::new();
        for (round, bridge, switch, cpu) in [(1, 40.0, 60.0, 3.0), (2, 50.0, 50.0, 4.0)] {
            let mut b = RoundSample::new(round, "bridge");
            b.set("ping_2ms_avg_us", bridge);
            let mut t = RoundSample::new(round, "tapswitch");
            t.set("ping_2ms_avg_us", switch);
            t.set("ping_2ms_cpu_pct", cpu);
            rounds.extend([b, t]);
        }
        let machine = MachineInfo {
            nproc: 2,
            kernel: String::new(),
            cpu_model: String::new(),
            iperf3: String::new(),
            ovs: None,
            tapswitch_bin: String::new(),
        };
        Results::build(&config, machine, rounds, false, 1.0)
    }

    #[test]
    fn panels_hold_per_round_ratios_and_cpu_shares_as_they_are() {
        let panels = panels(&results());
        assert_eq!(panels.len(), 2, "{panels:?}");
        assert!(panels[0].ratio);
        assert_eq!(
            panels[0].series,
            vec![("tapswitch".to_owned(), vec![(1, 1.5), (2, 1.0)])]
        );
        assert!(!panels[1].ratio);
        assert_eq!(
            panels[1].series,
            vec![("tapswitch".to_owned(), vec![(1, 3.0), (2, 4.0)])]
        );
    }

    #[test]
    fn writes_an_svg_with_every_series() {
        let path = std::env::temp_dir().join(format!("tsb-chart-{}.svg", std::process::id()));
        write_svg(&results(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("tapswitch"), "legend names the system");
        assert!(svg.contains("bridge"));
    }
}
