//! The report's PNGs, drawn with plotters' bitmap backend: P90 TTFT and output throughput
//! against offered QPS (one line per policy), and the prompt-token hit ratio per policy with
//! the schedule's hit-ratio bound beside it. Live runs when there are any, else the first
//! full-scale fleet-model sweep; warm-up steps are left out. Text needs a TrueType font, read at run time from
//! the usual system locations (or `KVROUTE_BENCH_FONT`), so no system library is linked.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::BenchError;
use crate::report::{PolicyRun, Results};
use crate::schedule::Step;
use crate::stats::Summary;

/// The runs the PNGs show and their steps.
fn shown(results: &Results) -> (&[PolicyRun], &[Step], String) {
    match results.sweeps.first() {
        Some(s) if results.live.is_empty() => (
            &s.runs,
            &s.steps,
            format!(
                "fleet model, {}, output mean {}, seed {}",
                s.profile.name(),
                s.output_mean,
                s.seed
            ),
        ),
        _ => (
            &results.live,
            &results.steps,
            format!("live, time scale {}", results.time_scale),
        ),
    }
}

/// A run's per-step figures with their QPS, warm-up left out.
fn points<'a>(run: &'a PolicyRun, steps: &'a [Step]) -> impl Iterator<Item = (f64, &'a Summary)> {
    run.figures
        .steps
        .iter()
        .zip(steps)
        .filter(|(_, st)| !st.warmup)
        .map(|(s, st)| (st.qps, s))
}

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const COLORS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(44, 160, 44),
    RGBColor(127, 127, 127),
];

fn register_system_font() -> Result<(), BenchError> {
    let mut tried: Vec<String> = Vec::new();
    let env = std::env::var("KVROUTE_BENCH_FONT").ok();
    for path in env
        .iter()
        .map(String::as_str)
        .chain(FONT_CANDIDATES.iter().copied())
    {
        tried.push(path.to_string());
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps fonts for the process's life.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    Err(BenchError::NoFont(tried.join(", ")))
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Plot(path.to_path_buf(), e.to_string())
}

/// Writes the three PNGs into `dir`, returning their paths.
pub fn draw_all(results: &Results, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    register_system_font()?;
    std::fs::create_dir_all(dir).map_err(|e| BenchError::Io(dir.to_path_buf(), e))?;
    let ttft = dir.join("ttft_vs_qps.png");
    lines(
        results,
        &ttft,
        "P90 TTFT (s, log scale) vs offered QPS",
        true,
        |s| s.p90_ttft,
    )?;
    let thr = dir.join("throughput_vs_qps.png");
    lines(
        results,
        &thr,
        "Output throughput (tokens/s) vs offered QPS",
        false,
        |s| s.output_tokens_per_s,
    )?;
    let hit = dir.join("hit_ratio.png");
    hit_bars(results, &hit)?;
    Ok(vec![ttft, thr, hit])
}

fn lines(
    results: &Results,
    path: &Path,
    title: &str,
    log_y: bool,
    value: impl Fn(&crate::stats::Summary) -> f64,
) -> Result<(), BenchError> {
    let root = BitMapBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (runs, steps, what) = shown(results);
    let x_max = steps.iter().map(|s| s.qps).fold(1.0, f64::max) * 1.05;
    let values: Vec<f64> = runs
        .iter()
        .flat_map(|p| points(p, steps).map(|(_, s)| value(s)))
        .collect();
    let y_max = values.iter().copied().fold(0.0, f64::max).max(1e-3) * 1.2;
    let y_min = values
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min)
        .min(y_max / 10.0)
        * 0.8;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72);
    let caption = format!("{} engines, {what}", results.engines);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(format!("offered QPS (engine time) — {caption}"))
                .y_desc(title.split(" vs").next().unwrap_or(title))
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(|e| plot_err(path, e))?;
            for (i, p) in runs.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let points: Vec<(f64, f64)> = points(p, steps)
                    .map(|(q, s)| (q, value(s).max(y_min)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
                    .map_err(|e| plot_err(path, e))?
                    .label(p.policy.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                    });
                chart
                    .draw_series(points.iter().map(|&pt| Circle::new(pt, 4, color.filled())))
                    .map_err(|e| plot_err(path, e))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 16))
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }};
    }
    if log_y {
        draw!(builder
            .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
            .map_err(|e| plot_err(path, e))?);
    } else {
        draw!(builder
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| plot_err(path, e))?);
    }
    root.present().map_err(|e| plot_err(path, e))
}

fn hit_bars(results: &Results, path: &Path) -> Result<(), BenchError> {
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (runs, _, _) = shown(results);
    let mut bars: Vec<(String, f64)> = runs
        .iter()
        .map(|p| (p.policy.clone(), p.figures.overall.hit_ratio))
        .collect();
    if let Some(p) = runs.first() {
        bars.push(("bound (any router)".into(), p.figures.overall.hit_bound));
    }
    let n = bars.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Prompt-token prefix-cache hit ratio per policy (whole run)",
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..n as f64, 0.0..1.1)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("cached / prompt tokens")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (i, (name, v)) in bars.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let x = i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, *v)],
                color.filled(),
            )))
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.1}%", v * 100.0),
                (x + 0.3, (v + 0.04).min(1.03)),
                ("sans-serif", 16),
            )))
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                name.clone(),
                (x + 0.05, (v + 0.09).min(1.04)),
                ("sans-serif", 13),
            )))
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))
}
