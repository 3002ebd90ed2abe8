//! A panel: a plot rectangle on the page with an x and a y scale, and what is drawn in it (grid,
//! tick labels, lines, markers, bars, error bars, min–max columns, lanes of ticks under the axis,
//! shaded spans, vertical marks, stacked callouts).

use super::axis::Scale;
use super::doc::{Anchor, Doc, Paint, Text};

/// A plot rectangle `w` × `h` with its top left at `(x, y)`.
#[derive(Clone, Copy, Debug)]
pub struct Panel {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub xs: Scale,
    pub ys: Scale,
}

/// A label over a span of x (a gap, a window), placed by [`Panel::callouts`].
#[derive(Clone, Debug)]
pub struct Callout {
    /// The span, in pixels.
    pub x1: f64,
    pub x2: f64,
    pub text: String,
    pub color: &'static str,
}

impl Panel {
    pub fn right(&self) -> f64 {
        self.x + self.w
    }
    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }
    /// The pixel x of data value `v`.
    pub fn px(&self, v: f64) -> f64 {
        self.x + self.xs.frac(v) * self.w
    }
    /// The pixel y of data value `v`.
    pub fn py(&self, v: f64) -> f64 {
        self.bottom() - self.ys.frac(v) * self.h
    }
    /// [`Panel::py`] held inside the frame.
    pub fn py_clamped(&self, v: f64) -> f64 {
        self.bottom() - self.ys.frac(v).clamp(0.0, 1.0) * self.h
    }

    pub fn frame(&self, doc: &mut Doc, p: Paint) {
        doc.rect(self.x, self.y, self.w, self.h, p);
    }

    /// Horizontal grid lines at `ticks`, labelled left of the frame.
    pub fn y_grid(
        &self,
        doc: &mut Doc,
        ticks: &[f64],
        label: impl Fn(f64) -> String,
        color: &str,
        size: f64,
    ) {
        for &t in ticks {
            let y = self.py(t);
            doc.line((self.x, y), (self.right(), y), Paint::outline(color));
            doc.text(Text::at(self.x - 6.0, y + 4.0, size).end(), &label(t));
        }
    }

    /// Vertical grid lines at `ticks`, from the top to `extra` under the frame.
    pub fn x_grid(&self, doc: &mut Doc, ticks: &[f64], color: &str, extra: f64) {
        for &t in ticks {
            let x = self.px(t);
            doc.line(
                (x, self.y),
                (x, self.bottom() + extra),
                Paint::outline(color),
            );
        }
    }

    /// Tick labels under the frame, their baseline `dy` below it.
    pub fn x_labels(
        &self,
        doc: &mut Doc,
        ticks: &[f64],
        label: impl Fn(f64) -> String,
        dy: f64,
        size: f64,
    ) {
        for &t in ticks {
            doc.text(
                Text::at(self.px(t), self.bottom() + dy, size).middle(),
                &label(t),
            );
        }
    }

    /// The y axis title, read upwards, centred on the frame at page x `x`.
    pub fn y_title(&self, doc: &mut Doc, x: f64, text: &str) {
        doc.text(
            Text::at(x, self.y + self.h / 2.0, 13.0).middle().vertical(),
            text,
        );
    }

    /// A line through `pts`; a `None` value breaks it.
    pub fn line(&self, doc: &mut Doc, pts: &[(f64, Option<f64>)], p: Paint) {
        for run in pts.split(|(_, v)| v.is_none()) {
            let xy: Vec<(f64, f64)> = run
                .iter()
                .filter_map(|&(x, v)| v.map(|v| (self.px(x), self.py(v))))
                .collect();
            doc.polyline(&xy, p);
        }
    }

    /// A dot of radius `r` at each point with a value.
    pub fn markers(&self, doc: &mut Doc, pts: &[(f64, Option<f64>)], r: f64, p: Paint) {
        for &(x, v) in pts {
            if let Some(v) = v {
                doc.circle((self.px(x), self.py(v)), r, p);
            }
        }
    }

    /// A straight line between two data points, clipped to the frame when the document has its
    /// clip set to it.
    pub fn segment(&self, doc: &mut Doc, a: (f64, f64), b: (f64, f64), p: Paint) {
        doc.line(
            (self.px(a.0), self.py(a.1)),
            (self.px(b.0), self.py(b.1)),
            p,
        );
    }

    /// How many one-pixel columns the frame is wide (for [`Panel::column_of`]).
    pub fn columns(&self) -> usize {
        self.w.ceil() as usize + 1
    }
    /// The pixel column data value `x` falls in.
    pub fn column_of(&self, x: f64) -> usize {
        ((self.px(x) - self.x).round().max(0.0) as usize).min(self.columns() - 1)
    }

    /// Per pixel column, a vertical stroke from its smallest to its largest value (`lo` not
    /// finite: nothing in that column), `inset` px shorter at both ends so that one value
    /// still shows as a dot. A million points draw as a few thousand strokes.
    pub fn ranges(&self, doc: &mut Doc, cols: &[(f64, f64)], inset: f64, p: Paint) {
        let mut d = String::new();
        for (c, &(lo, hi)) in cols.iter().enumerate() {
            if lo.is_finite() {
                let x = self.x + c as f64;
                let (y1, y2) = (self.py(lo) + inset, self.py(hi) - inset);
                d.push_str(&format!("M{x:.1} {y1:.1}V{y2:.1}"));
            }
        }
        doc.path(&d, p);
    }

    /// A lane of ticks `h` px tall from page y `y`, one per pixel column that is set.
    pub fn lane(&self, doc: &mut Doc, set: &[bool], y: f64, h: f64, p: Paint) {
        let mut d = String::new();
        for (c, _) in set.iter().enumerate().filter(|(_, s)| **s) {
            d.push_str(&format!("M{:.1} {:.1}v{h}", self.x + c as f64, y));
        }
        doc.path(&d, p);
    }

    /// A span of x (pixels) shaded over the frame's height, at least 1.5 px wide.
    pub fn span(&self, doc: &mut Doc, x1: f64, x2: f64, p: Paint) {
        doc.rect(x1, self.y, (x2 - x1).max(1.5), self.h, p);
    }

    /// A span of x (pixels) as a bar `h` px tall, `dy` under the frame's top.
    pub fn band(&self, doc: &mut Doc, x1: f64, x2: f64, dy: f64, h: f64, p: Paint) {
        doc.rect(x1, self.y + dy, (x2 - x1).max(1.5), h, p);
    }

    /// A vertical line at data x `v` over the frame, labelled near its top unless `label` is
    /// empty; near the right edge the label goes left of the line, clear of what is beside.
    pub fn mark(&self, doc: &mut Doc, v: f64, label: &str, p: Paint) {
        let x = self.px(v);
        doc.line((x, self.y), (x, self.bottom()), p);
        if !label.is_empty() {
            let (lx, anchor) = if x > self.x + 0.85 * self.w {
                (x - 3.0, Anchor::End)
            } else {
                (x + 3.0, Anchor::Start)
            };
            doc.text(
                Text::at(lx, self.y + 12.0, 10.0)
                    .anchor(anchor)
                    .fill("#555"),
                label,
            );
        }
    }

    /// A bar from 0 to `v` (clamped to the frame), `w` px wide from page x `x`.
    pub fn bar(&self, doc: &mut Doc, x: f64, w: f64, v: f64, p: Paint) {
        let y = self.py_clamped(v);
        doc.rect(x, y, w, (self.bottom() - y).max(0.0), p);
    }

    /// An error bar at page x `x` from `v - b` to `v + b`, with 6 px caps.
    pub fn error_bar(&self, doc: &mut Doc, x: f64, v: f64, b: f64, p: Paint) {
        let (y1, y2) = (self.py_clamped(v - b), self.py_clamped(v + b));
        doc.path(
            &format!(
                "M{x:.1} {y1:.1}V{y2:.1}M{:.1} {y1:.1}h6M{:.1} {y2:.1}h6",
                x - 3.0,
                x - 3.0
            ),
            p,
        );
    }

    /// Labels over spans, widest span first, each in a boxed row near the frame's top, moved down
    /// a row while it would overlap one placed; beyond 40 labels or 7 rows the rest are left out.
    pub fn callouts(&self, doc: &mut Doc, mut items: Vec<Callout>) {
        items.sort_by(|a, b| (b.x2 - b.x1).total_cmp(&(a.x2 - a.x1)));
        let mut placed: Vec<(f64, f64, usize)> = Vec::new();
        for c in items.into_iter().take(40) {
            // Bold DejaVu Sans at 13 px: about 7.6 px a character.
            let w = c.text.chars().count() as f64 * 7.6 + 10.0;
            let cx = ((c.x1 + c.x2) / 2.0).clamp(self.x + w / 2.0, self.right() - w / 2.0);
            let (a, b) = (cx - w / 2.0, cx + w / 2.0);
            let row = (0..)
                .find(|row| {
                    !placed
                        .iter()
                        .any(|&(pa, pb, r)| r == *row && a < pb && b > pa)
                })
                .unwrap_or(0);
            if row > 6 {
                continue;
            }
            placed.push((a, b, row));
            let y = self.y + 26.0 + row as f64 * 20.0;
            doc.rect(
                a,
                y - 13.0,
                w,
                18.0,
                Paint::fill("white")
                    .fill_opacity(0.9)
                    .with_stroke(c.color)
                    .rx(3.0),
            );
            doc.text(Text::at(cx, y, 13.0).middle().bold().fill(c.color), &c.text);
        }
    }

    /// A grey message in the middle of the frame (there is nothing to draw).
    pub fn note(&self, doc: &mut Doc, text: &str) {
        doc.text(
            Text::at(self.x + self.w / 2.0, self.y + self.h / 2.0, 16.0)
                .middle()
                .fill("#888"),
            text,
        );
    }
}
