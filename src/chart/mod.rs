//! Charts as SVG, and PNG through resvg. Knows nothing of load, probes or trials: those modules'
//! `plot` files map their data onto these pieces.
//!
//! - [`doc`]: the document (page, text, shapes, paint), escaping, PNG output.
//! - [`axis`]: linear and log scales, round tick steps, tick labels.
//! - [`panel`]: a plot rectangle with its scales, and everything drawn in one (grid, lines,
//!   markers, bars, error bars, min–max columns, lanes, shaded spans, marks, callouts).
//! - [`legend`]: legend rows and columns.
//!
//! Why our own and not `plotters`: `docs/charts.md`.

pub mod axis;
pub mod doc;
pub mod legend;
pub mod panel;

pub use axis::Scale;
pub use doc::{esc, png, png_bytes, Doc, Paint, Text};
pub use legend::{Entry, Swatch};
pub use panel::{Callout, Panel};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc(r#"a<b> & "c""#), "a&lt;b&gt; &amp; &quot;c&quot;");
        let mut d = Doc::new(100.0, 50.0);
        d.text(Text::at(1.0, 2.0, 10.0), "<x> & y");
        let svg = d.finish();
        assert!(svg.contains(">&lt;x&gt; &amp; y</text>"));
    }

    fn sample() -> String {
        let mut d = Doc::new(640.0, 360.0);
        d.text(Text::at(40.0, 24.0, 18.0).bold(), "title <t>");
        legend::row(
            &mut d,
            40.0,
            44.0,
            &[
                Entry::new("line", "#1f77b4", Swatch::Line(None)),
                Entry::new("dashed", "#d62728", Swatch::Line(Some("6 4"))),
                Entry::new("box", "#2ca02c", Swatch::Box),
                Entry::new("band", "#1f5fbf", Swatch::Band),
                Entry::new("tick", "#222", Swatch::Tick),
                Entry::new("shade", "#e8231f", Swatch::Shade),
                Entry::new("bar", "#f28c00", Swatch::Bar),
            ],
        );
        let p = Panel {
            x: 60.0,
            y: 60.0,
            w: 500.0,
            h: 240.0,
            xs: Scale::linear(0.0, 10.0),
            ys: Scale::log_covering([0.5, 200.0]),
        };
        d.clip(p.x, p.y, p.w, p.h);
        p.frame(&mut d, Paint::outline("#888").with_fill("#fafafa"));
        p.y_grid(&mut d, &p.ys.ticks(0.0), axis::num, "#ddd", 12.0);
        let xt = p.xs.ticks(10.0);
        p.x_grid(&mut d, &xt, "#eee", 0.0);
        p.x_labels(&mut d, &xt, |t| axis::tick_label(t, 1.0), 16.0, 12.0);
        p.y_title(&mut d, 16.0, "RTT (log)");
        let pts: Vec<(f64, Option<f64>)> = (0..=10)
            .map(|i| (i as f64, (i != 5).then_some(1.0 + i as f64)))
            .collect();
        p.line(&mut d, &pts, Paint::stroke("#1f77b4", 1.6));
        p.markers(&mut d, &pts, 3.0, Paint::fill("#1f77b4"));
        let mut cols = vec![(f64::INFINITY, 0.0); p.columns()];
        cols[p.column_of(2.0)] = (1.0, 3.0);
        p.ranges(&mut d, &cols, 1.2, Paint::stroke("#1f5fbf", 1.6));
        let mut set = vec![false; p.columns()];
        set[p.column_of(7.0)] = true;
        p.lane(
            &mut d,
            &set,
            p.bottom() + 4.0,
            10.0,
            Paint::stroke("#222", 1.2),
        );
        let (a, b) = (p.px(4.0), p.px(6.0));
        p.span(&mut d, a, b, Paint::fill("#e8231f").fill_opacity(0.16));
        p.band(&mut d, a, b, 2.0, 7.0, Paint::fill("#f28c00"));
        p.mark(
            &mut d,
            8.0,
            "mark",
            Paint::outline("#888").dash(Some("3,3")),
        );
        p.bar(&mut d, p.px(9.0), 8.0, 50.0, Paint::fill("#2ca02c"));
        p.error_bar(&mut d, p.px(9.0) + 4.0, 50.0, 10.0, Paint::outline("#222"));
        p.segment(
            &mut d,
            (0.0, 1.0),
            (12.0, 1000.0),
            Paint::stroke("#111", 2.0).clipped(),
        );
        p.callouts(
            &mut d,
            vec![
                Callout {
                    x1: a,
                    x2: b,
                    text: "gap 2 s".into(),
                    color: "#b3140f",
                },
                Callout {
                    x1: a,
                    x2: b,
                    text: "window 1 s".into(),
                    color: "#a85f00",
                },
            ],
        );
        p.note(&mut d, "note");
        d.finish()
    }

    #[test]
    fn a_chart_is_valid_svg() {
        let svg = sample();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let tree =
            resvg::usvg::Tree::from_str(&svg, &resvg::usvg::Options::default()).expect("valid SVG");
        assert_eq!(tree.size().width(), 640.0);
        assert_eq!(tree.size().height(), 360.0);
        // The None breaks the line in two; both callouts overlap, so they stack.
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("rx=\"3\"").count(), 2);
        assert!(svg.contains("y=\"86.0\"") && svg.contains("y=\"106.0\""));
    }

    #[test]
    fn a_chart_rasterises_at_its_size() {
        let png = png_bytes(&sample()).expect("PNG (system fonts installed?)");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, right after the chunk's length and type.
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((w, h), (640, 360));
    }
}
