//! PNG plots drawn with plotters' pure-Rust bitmap backend.
//!
//! - `throughput.png`: settled transfers/s end to end and raw-SQL
//!   transfers/s against concurrency, uniform and hot-spot;
//! - `latency_cdf.png`: CDFs of mutation latency and mutation → COMPLETED
//!   latency, one panel per (mode, measure), one line per concurrency.
//!
//! Text needs a font: plotters' `ab_glyph` feature renders a TTF that we
//! load at run time (no fontconfig or system font library involved).
//! `BENCH_FONT` names one; otherwise DejaVu Sans (Debian's
//! fonts-dejavu-core, installed by run.sh) or any TTF under /usr/share/fonts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::baseline::Mode;
use crate::report::Results;

const FONT: &str = "sans-serif";

fn find_ttf(dir: &Path, depth: usize) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() && depth > 0 {
            found.extend(find_ttf(&p, depth - 1));
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
            found.push(p);
        }
    }
    // Prefer a plain sans face when there is a choice.
    found.sort_by_key(|p| {
        let n = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        (
            !n.contains("Sans"),
            n.contains("Bold") || n.contains("Oblique") || n.contains("Italic"),
            n,
        )
    });
    found.into_iter().next()
}

/// Registers the font once per process.
fn font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var_os("BENCH_FONT")
            .map(PathBuf::from)
            .or_else(|| {
                let dejavu = PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
                dejavu.exists().then_some(dejavu)
            })
            .or_else(|| find_ttf(Path::new("/usr/share/fonts"), 4))
            .ok_or("no TTF font under /usr/share/fonts (apt-get install fonts-dejavu-core) and BENCH_FONT unset")?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // plotters keeps the font for the life of the process.
        plotters::style::register_font(FONT, FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
            .map_err(|_| format!("{} is not a usable TTF", path.display()))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn pe<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// A log-scale axis range covering `lo..hi` with some air on both sides.
fn log_span(lo: f64, hi: f64) -> std::ops::Range<f64> {
    (lo / 1.5)..(hi * 1.5)
}

/// Tick marks for a log axis: 1, 2, 5 × powers of ten inside `range`
/// (plotters' own log ticks leave whole decades unlabelled).
fn decade_ticks(range: &std::ops::Range<f64>) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(range.start.log10().floor());
    while decade <= range.end {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if range.contains(&t) {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// Distinct, print-friendly line colours, one per concurrency level.
const SERIES: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

fn mode_color(mode: Mode) -> RGBColor {
    match mode {
        Mode::Uniform => RGBColor(31, 119, 180),
        Mode::Hot => RGBColor(214, 39, 40),
    }
}

pub fn draw(r: &Results, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if r.e2e.is_empty() && r.raw_sql.is_empty() {
        return Ok(files);
    }
    font()?;
    let p = dir.join("throughput.png");
    throughput(r, &p).with_context(|| format!("drawing {}", p.display()))?;
    files.push(p);
    if !r.e2e.is_empty() {
        let p = dir.join("latency_cdf.png");
        latency_cdf(r, &p).with_context(|| format!("drawing {}", p.display()))?;
        files.push(p);
    }
    Ok(files)
}

fn throughput(r: &Results, path: &Path) -> anyhow::Result<()> {
    let mut clients: Vec<usize> = r
        .e2e
        .iter()
        .map(|e| e.clients)
        .chain(r.raw_sql.iter().map(|(_, c, _)| *c))
        .collect();
    clients.sort_unstable();
    clients.dedup();
    let (cmin, cmax) = (
        *clients.iter().min().unwrap_or(&1) as f64,
        *clients.iter().max().unwrap_or(&1) as f64,
    );
    let ymax = r
        .e2e
        .iter()
        .map(|e| e.settled_per_s)
        .chain(r.raw_sql.iter().map(|(_, _, run)| run.per_second()))
        .fold(1.0, f64::max)
        * 1.15;

    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Transfers/s vs concurrency: settled end to end (solid) and raw-SQL ceiling (dashed)",
            (FONT, 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            log_span(cmin, cmax)
                .log_scale()
                .with_key_points(clients.iter().map(|c| *c as f64).collect()),
            0f64..ymax,
        )
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log scale)")
        .y_desc("transfers per second")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(pe)?;

    for mode in [Mode::Uniform, Mode::Hot] {
        let color = mode_color(mode);
        let e2e: Vec<(f64, f64)> = r
            .e2e
            .iter()
            .filter(|e| e.mode == mode)
            .map(|e| (e.clients as f64, e.settled_per_s))
            .collect();
        if !e2e.is_empty() {
            chart
                .draw_series(LineSeries::new(e2e.clone(), color.stroke_width(3)).point_size(5))
                .map_err(pe)?
                .label(format!("settled end to end, {}", mode.name()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
        }
        let raw: Vec<(f64, f64)> = r
            .raw_sql
            .iter()
            .filter(|(m, _, _)| *m == mode)
            .map(|(_, c, run)| (*c as f64, run.per_second()))
            .collect();
        if !raw.is_empty() {
            let light = color.mix(0.7);
            chart
                .draw_series(DashedLineSeries::new(
                    raw.clone(),
                    8,
                    5,
                    light.stroke_width(2),
                ))
                .map_err(pe)?
                .label(format!("raw-SQL ceiling, {}", mode.name()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], light.stroke_width(2))
                });
            chart
                .draw_series(
                    raw.iter()
                        .map(|&(x, y)| Circle::new((x, y), 4, light.filled())),
                )
                .map_err(pe)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(pe)?;
    root.present().map_err(pe)?;
    Ok(())
}

/// At most ~400 (latency, fraction) points per curve: enough to look
/// smooth, small enough to draw thousands of samples quickly.
fn cdf_points(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let step = n.div_ceil(400).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted[i].max(1e-3), (i + 1) as f64 / n as f64))
        .collect();
    if let Some(&last) = sorted.last() {
        pts.push((last.max(1e-3), 1.0));
    }
    pts
}

fn latency_cdf(r: &Results, path: &Path) -> anyhow::Result<()> {
    let modes: Vec<Mode> = [Mode::Uniform, Mode::Hot]
        .into_iter()
        .filter(|m| r.e2e.iter().any(|e| e.mode == *m))
        .collect();
    let all = r
        .e2e
        .iter()
        .flat_map(|e| e.mutation_ms.iter().chain(&e.completed_ms))
        .copied()
        .filter(|x| *x > 0.0);
    let (lo, hi) = all.fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if hi > 0.0 { (lo, hi) } else { (1.0, 10.0) };
    let mut clients: Vec<usize> = r.e2e.iter().map(|e| e.clients).collect();
    clients.sort_unstable();
    clients.dedup();

    let root = BitMapBackend::new(path, (1200, 420 * modes.len() as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let root = root
        .titled(
            "Latency CDF: GraphQL transfer mutation (left) and mutation → COMPLETED event (right)",
            (FONT, 20),
        )
        .map_err(pe)?;
    let panels = root.split_evenly((modes.len(), 2));
    for (i, panel) in panels.iter().enumerate() {
        let mode = modes[i / 2];
        let completed = i % 2 == 1;
        let title = format!(
            "{}, {}",
            mode.name(),
            if completed {
                "mutation → COMPLETED"
            } else {
                "mutation reply"
            }
        );
        let mut chart = ChartBuilder::on(panel)
            .caption(title, (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(
                log_span(lo, hi)
                    .log_scale()
                    .with_key_points(decade_ticks(&log_span(lo, hi))),
                0f64..1.0,
            )
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("latency, ms (log scale)")
            .y_desc("fraction ≤ x")
            .x_label_formatter(&|x| {
                if *x >= 1.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x}")
                }
            })
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()
            .map_err(pe)?;
        for e in r.e2e.iter().filter(|e| e.mode == mode) {
            let idx = clients.iter().position(|c| *c == e.clients).unwrap_or(0);
            let color = SERIES[idx % SERIES.len()];
            let sample = if completed {
                &e.completed_ms
            } else {
                &e.mutation_ms
            };
            chart
                .draw_series(LineSeries::new(cdf_points(sample), color.stroke_width(2)))
                .map_err(pe)?
                .label(format!("{} clients", e.clients))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(pe)?;
    }
    root.present().map_err(pe)?;
    Ok(())
}
