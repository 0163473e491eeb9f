//! The throughput chart (`target/bench/throughput.png`).

use std::path::Path;

use crate::report::{Row, fmt_rps};

pub(crate) fn draw_chart(rows: &[Row], path: &Path, subtitle: &str) -> Result<(), String> {
    use plotters::prelude::*;
    use plotters::style::{FontStyle, register_font};

    const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    let bytes = std::fs::read(FONT).map_err(|e| {
        format!("font {FONT} not found ({e}); install fonts-dejavu-core for the chart")
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| "bad font".to_owned())?;

    let mut conns: Vec<u32> =
        rows.iter().filter(|r| r.rps.is_some()).map(|r| r.connections).collect();
    conns.sort();
    conns.dedup();
    let mut scenarios: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.rps.is_some()) {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    if scenarios.is_empty() {
        return Err("no rows to draw".into());
    }
    let max = rows.iter().filter_map(|r| r.rps).fold(1.0_f64, f64::max);
    let bar_h = 22i32;
    let group_h = bar_h * conns.len() as i32 + 14;
    let (left, right, top) = (420i32, 40i32, 90i32);
    let width = 1280i32;
    let height = top + group_h * scenarios.len() as i32 + 70;
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("chart: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let font = |size: i32| ("sans-serif", size).into_font();
    root.draw(&Text::new(
        "weapp-gateway: requests per second per scenario (wrk)".to_owned(),
        (20, 14),
        font(24),
    ))
    .map_err(e)?;
    root.draw(&Text::new(subtitle.to_owned(), (20, 46), font(15).color(&RGBColor(90, 90, 90))))
        .map_err(e)?;
    let plot_w = (width - left - right - 170) as f64;
    let x_of = |v: f64| left + (v / max * plot_w) as i32;
    let palette = [RGBColor(52, 101, 164), RGBColor(245, 121, 0), RGBColor(78, 154, 6)];
    // Grid.
    let step = nice_step(max / 5.0);
    let mut tick = 0.0;
    let bottom = top + group_h * scenarios.len() as i32;
    while tick <= max * 1.0001 {
        let x = x_of(tick);
        root.draw(&PathElement::new(vec![(x, top - 6), (x, bottom)], RGBColor(225, 225, 225)))
            .map_err(e)?;
        root.draw(&Text::new(fmt_rps(Some(tick)), (x - 14, bottom + 6), font(13))).map_err(e)?;
        tick += step;
    }
    for (si, name) in scenarios.iter().enumerate() {
        let y0 = top + si as i32 * group_h;
        let label: String = name.chars().take(52).collect();
        root.draw(&Text::new(label, (14, y0 + group_h / 2 - 14), font(15))).map_err(e)?;
        for (ci, c) in conns.iter().enumerate() {
            let Some(r) = rows.iter().find(|r| r.scenario == *name && r.connections == *c) else {
                continue;
            };
            let Some(rps) = r.rps else { continue };
            let y = y0 + ci as i32 * bar_h + 4;
            let color = palette[ci % palette.len()];
            root.draw(&Rectangle::new([(left, y), (x_of(rps), y + bar_h - 4)], color.filled()))
                .map_err(e)?;
            let ratio =
                r.ratio_to_baseline.map(|x| format!("  {x:.2}× baseline")).unwrap_or_default();
            root.draw(&Text::new(
                format!("{} req/s{ratio}  ({c} conns)", fmt_rps(Some(rps))),
                (x_of(rps) + 6, y + 2),
                font(13),
            ))
            .map_err(e)?;
        }
    }
    // Legend.
    for (ci, c) in conns.iter().enumerate() {
        let x = left + ci as i32 * 160;
        let y = bottom + 30;
        let color = palette[ci % palette.len()];
        root.draw(&Rectangle::new([(x, y), (x + 16, y + 14)], color.filled())).map_err(e)?;
        root.draw(&Text::new(format!("{c} connections"), (x + 22, y), font(14))).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

pub(crate) fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.max(1.0).log10().floor());
    let n = raw / mag;
    let nice = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}
