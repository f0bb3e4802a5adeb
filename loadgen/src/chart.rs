//! The chart of `loadgen paper`: msgs/s per workload (log scale), one bar
//! per system and mode, next to the paper's published Kafka figures.

use std::path::Path;

use plotters::prelude::*;

use crate::paper::{PAPER_KAFKA, SYSTEMS, WORKLOADS};

const COLORS: [RGBColor; 7] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(158, 202, 225),
    RGBColor(214, 39, 40),
    RGBColor(255, 152, 150),
    RGBColor(44, 160, 44),
    RGBColor(152, 223, 138),
];

/// Draws `medians` (`[system][workload]`, as `paper::medians`) to an SVG.
pub fn draw(path: &Path, medians: &[[Option<f64>; 3]]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let top = medians
        .iter()
        .flatten()
        .flatten()
        .chain(PAPER_KAFKA.iter())
        .fold(1.0f64, |a, &b| a.max(b));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "msgs/s, 200-byte messages (log scale; median of runs; 2 cores: system on core 0, loadgen on core 1)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..3f64, (100f64..top * 3.0).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(3)
        .x_label_formatter(&|x| {
            WORKLOADS
                .get(x.floor() as usize)
                .map_or(String::new(), |w| (*w).to_owned())
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let series: Vec<(String, [Option<f64>; 3])> = std::iter::once((
        "Kafka as published (2011)".to_owned(),
        PAPER_KAFKA.map(Some),
    ))
    .chain(
        SYSTEMS
            .iter()
            .zip(medians)
            .map(|((s, m), v)| (format!("{s} ({m})"), *v)),
    )
    .collect();
    let width = 0.8 / series.len() as f64;
    for (i, (name, values)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let bars = values.iter().enumerate().filter_map(|(w, v)| {
            // Peers have no batching: their batch-50 bar is left out.
            let v = (*v)?;
            let x0 = w as f64 + 0.1 + i as f64 * width;
            Some(Rectangle::new(
                [(x0, 100.0), (x0 + width * 0.9, v)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
