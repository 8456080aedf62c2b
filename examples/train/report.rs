//! The end of a run: the comparison table, the loss-curve plot, a sample.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// What one training run measured.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub precision: &'static str,
    /// (step, training loss) for every step that was applied or skipped.
    pub losses: Vec<(usize, f32)>,
    pub final_loss: f32,
    /// Held-out exact-match accuracy (addition) or held-out loss (text).
    pub eval: Eval,
    pub ms_per_step: f64,
    /// The model's weights, in their precision.
    pub param_bytes: usize,
    /// F32 master weights held by the optimizer (0 for F32 parameters).
    pub master_bytes: usize,
    /// What a forward pass leaves alive for backward.
    pub activation_bytes: usize,
    pub skipped_steps: usize,
    pub final_scale: Option<f32>,
}

#[derive(Clone, Copy, Debug)]
pub enum Eval {
    Accuracy(f64),
    Loss(f32),
}

/// Smoothed final loss: the mean of the last tenth of the steps (one step's
/// loss is noisy).
pub fn tail_mean(losses: &[(usize, f32)]) -> f32 {
    let n = (losses.len() / 10).max(1);
    let tail = &losses[losses.len().saturating_sub(n)..];
    tail.iter().map(|&(_, l)| l).sum::<f32>() / tail.len().max(1) as f32
}

fn bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// The comparison table, as printed (Markdown, so it can be pasted).
pub fn table(runs: &[RunSummary]) -> String {
    let eval_head = match runs.first().map(|r| r.eval) {
        Some(Eval::Loss(_)) => "held-out loss",
        _ => "held-out accuracy",
    };
    let mut out = format!(
        "| precision | final loss | {eval_head} | ms/step | weights | master weights | activations | skipped steps | final scale |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in runs {
        let eval = match r.eval {
            Eval::Accuracy(a) => format!("{:.1} %", 100.0 * a),
            Eval::Loss(l) => format!("{l:.4}"),
        };
        let scale = r
            .final_scale
            .map_or("— (no scaler needed)".to_string(), |s| format!("{s}"));
        out += &format!(
            "| {} | {:.4} | {} | {:.1} | {} | {} | {} | {} | {} |\n",
            r.precision,
            r.final_loss,
            eval,
            r.ms_per_step,
            bytes(r.param_bytes),
            if r.master_bytes == 0 {
                "—".to_string()
            } else {
                bytes(r.master_bytes)
            },
            bytes(r.activation_bytes),
            r.skipped_steps,
            scale
        );
    }
    out
}

/// Draw every run's loss curve into one PNG.
pub fn plot(runs: &[RunSummary], path: &Path) -> Result<(), String> {
    // Text needs a font; one ships with the example so the plot works on a
    // machine without any installed.
    register_font(
        "sans-serif",
        FontStyle::Normal,
        include_bytes!("DejaVuSans.ttf"),
    )
    .map_err(|_| "could not load the plot font".to_string())?;
    let steps = runs
        .iter()
        .flat_map(|r| r.losses.last().map(|&(s, _)| s))
        .max()
        .unwrap_or(1)
        .max(1);
    let finite = |l: &f32| l.is_finite();
    let hi = runs
        .iter()
        .flat_map(|r| r.losses.iter().map(|&(_, l)| l))
        .filter(finite)
        .fold(0f32, f32::max)
        .max(1e-3);
    let lo = runs
        .iter()
        .flat_map(|r| r.losses.iter().map(|&(_, l)| l))
        .filter(finite)
        .fold(hi, f32::min)
        .max(1e-4);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("training loss under #[autocast]", ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0..steps, (lo * 0.9..hi * 1.1).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (log scale)")
            .draw()?;
        let colors = [BLUE, RED, GREEN, MAGENTA];
        for (r, color) in runs.iter().zip(colors) {
            let smooth = smoothed(&r.losses);
            chart
                .draw_series(LineSeries::new(smooth, color.stroke_width(2)))?
                .label(r.precision)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| format!("could not draw {}: {e}", path.display()))
}

/// An exponential moving average, so the curves are readable.
fn smoothed(losses: &[(usize, f32)]) -> Vec<(usize, f32)> {
    let mut avg = None;
    losses
        .iter()
        .filter(|(_, l)| l.is_finite())
        .map(|&(s, l)| {
            let a = avg.map_or(l, |a: f32| 0.9 * a + 0.1 * l);
            avg = Some(a);
            (s, a)
        })
        .collect()
}
