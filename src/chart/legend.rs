//! Legends: a row of entries under a chart's title, or a column beside a panel.

use super::doc::{Doc, Paint, Text};

/// The small picture before a legend entry's name, in the entry's colour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Swatch {
    /// A line (dashed with `Some(dash array)`).
    Line(Option<&'static str>),
    /// A filled box (a bar series, a kind of point).
    Box,
    /// A thin bar (a line drawn as a band of min–max columns).
    Band,
    /// A short vertical tick (an event marked in a lane).
    Tick,
    /// A pale box with an outline (a shaded span).
    Shade,
    /// A flat filled bar (a window drawn as a bar along the top).
    Bar,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub color: &'static str,
    pub swatch: Swatch,
}

impl Entry {
    pub fn new(name: impl Into<String>, color: &'static str, swatch: Swatch) -> Entry {
        Entry {
            name: name.into(),
            color,
            swatch,
        }
    }
}

/// Entries side by side from `(x, y)` (the text baseline), each as wide as its name.
pub fn row(doc: &mut Doc, x: f64, y: f64, entries: &[Entry]) {
    let mut x = x;
    for e in entries {
        swatch(doc, x, y, e);
        doc.text(Text::at(x + 26.0, y, 13.0), &e.name);
        // DejaVu Sans at 13 px: under 7.9 px a character (arrows and capitals are wide).
        x += 44.0 + e.name.chars().count() as f64 * 7.9;
    }
}

/// Entries one under the other from `(x, y)` (the first entry's middle), 17 px apart.
pub fn column(doc: &mut Doc, x: f64, y: f64, entries: &[Entry]) {
    for (i, e) in entries.iter().enumerate() {
        let y = y + i as f64 * 17.0;
        match e.swatch {
            Swatch::Line(dash) => doc.line(
                (x, y),
                (x + 20.0, y),
                Paint::stroke(e.color, 3.0).dash(dash),
            ),
            _ => swatch(doc, x, y + 4.0, e),
        }
        doc.text(Text::at(x + 25.0, y + 4.0, 12.0), &e.name);
    }
}

/// The swatch of `e` in a 22 × 12 box whose bottom is 2 px under the baseline `y`.
fn swatch(doc: &mut Doc, x: f64, y: f64, e: &Entry) {
    let c = e.color;
    match e.swatch {
        Swatch::Line(dash) => doc.line((x, y - 4.0), (x + 22.0, y - 4.0), {
            Paint::stroke(c, 2.0).dash(dash)
        }),
        Swatch::Box => doc.rect(x, y - 10.0, 18.0, 11.0, Paint::fill(c)),
        Swatch::Band => doc.rect(x, y - 6.0, 18.0, 4.0, Paint::fill(c)),
        Swatch::Tick => doc.rect(x + 7.0, y - 10.0, 3.0, 12.0, Paint::fill(c)),
        Swatch::Shade => doc.rect(
            x,
            y - 10.0,
            18.0,
            12.0,
            Paint::fill(c).fill_opacity(0.18).with_stroke(c),
        ),
        Swatch::Bar => doc.rect(x, y - 9.0, 18.0, 8.0, Paint::fill(c)),
    }
}
