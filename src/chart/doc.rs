//! The SVG document: a page of fixed size on a white ground, the few elements the charts are made
//! of, and its rasterisation to PNG through resvg (already the crate's SVG renderer, so a PNG
//! costs no second drawing path).

use std::fmt::Write as _;
use std::path::Path;

/// Every chart's font stack: DejaVu is what the lab images and CI have; the rest are fallbacks
/// for a viewer opening the SVG elsewhere.
pub const FONT: &str = "DejaVu Sans, Verdana, sans-serif";

/// Escapes text for SVG character data and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How a text's x is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Anchor {
    #[default]
    Start,
    Middle,
    End,
}

/// A line of text at a point (the baseline's anchor).
#[derive(Clone, Copy, Debug)]
pub struct Text<'a> {
    pub x: f64,
    pub y: f64,
    pub size: f64,
    pub anchor: Anchor,
    pub bold: bool,
    pub fill: Option<&'a str>,
    /// Read bottom to top (a y axis title), turned about its anchor.
    pub vertical: bool,
}

impl<'a> Text<'a> {
    pub fn at(x: f64, y: f64, size: f64) -> Text<'a> {
        Text {
            x,
            y,
            size,
            anchor: Anchor::Start,
            bold: false,
            fill: None,
            vertical: false,
        }
    }
    pub fn middle(self) -> Self {
        Text {
            anchor: Anchor::Middle,
            ..self
        }
    }
    pub fn end(self) -> Self {
        Text {
            anchor: Anchor::End,
            ..self
        }
    }
    pub fn anchor(self, anchor: Anchor) -> Self {
        Text { anchor, ..self }
    }
    pub fn bold(self) -> Self {
        Text { bold: true, ..self }
    }
    pub fn fill(self, color: &'a str) -> Self {
        Text {
            fill: Some(color),
            ..self
        }
    }
    pub fn vertical(self) -> Self {
        Text {
            vertical: true,
            ..self
        }
    }
}

/// Fill and outline of a shape; `Paint::default()` is neither (invisible).
#[derive(Clone, Copy, Debug, Default)]
pub struct Paint<'a> {
    /// `None`: no fill.
    pub fill: Option<&'a str>,
    pub fill_opacity: Option<f64>,
    pub stroke: Option<&'a str>,
    pub stroke_width: Option<f64>,
    pub stroke_opacity: Option<f64>,
    /// SVG dash array, e.g. `"6 4"`.
    pub dash: Option<&'a str>,
    /// Rounded corners of a rect.
    pub rx: Option<f64>,
    /// Clipped to the document's clip rectangle ([`Doc::clip`]).
    pub clipped: bool,
}

impl<'a> Paint<'a> {
    pub fn fill(color: &'a str) -> Paint<'a> {
        Paint {
            fill: Some(color),
            ..Paint::default()
        }
    }
    pub fn stroke(color: &'a str, width: f64) -> Paint<'a> {
        Paint {
            stroke: Some(color),
            stroke_width: Some(width),
            ..Paint::default()
        }
    }
    /// Outline only (a frame).
    pub fn outline(color: &'a str) -> Paint<'a> {
        Paint {
            stroke: Some(color),
            ..Paint::default()
        }
    }
    pub fn with_fill(self, color: &'a str) -> Self {
        Paint {
            fill: Some(color),
            ..self
        }
    }
    pub fn with_stroke(self, color: &'a str) -> Self {
        Paint {
            stroke: Some(color),
            ..self
        }
    }
    pub fn fill_opacity(self, o: f64) -> Self {
        Paint {
            fill_opacity: Some(o),
            ..self
        }
    }
    pub fn stroke_opacity(self, o: f64) -> Self {
        Paint {
            stroke_opacity: Some(o),
            ..self
        }
    }
    pub fn dash(self, dash: Option<&'a str>) -> Self {
        Paint { dash, ..self }
    }
    pub fn rx(self, rx: f64) -> Self {
        Paint {
            rx: Some(rx),
            ..self
        }
    }
    pub fn clipped(self) -> Self {
        Paint {
            clipped: true,
            ..self
        }
    }

    fn attrs(&self) -> String {
        let mut a = String::new();
        match self.fill {
            Some(c) => {
                let _ = write!(a, r#" fill="{c}""#);
            }
            // Unset, SVG fills black.
            None => a.push_str(r#" fill="none""#),
        }
        if let Some(o) = self.fill_opacity {
            let _ = write!(a, r#" fill-opacity="{o}""#);
        }
        if let Some(c) = self.stroke {
            let _ = write!(a, r#" stroke="{c}""#);
        }
        if let Some(w) = self.stroke_width {
            let _ = write!(a, r#" stroke-width="{w}""#);
        }
        if let Some(o) = self.stroke_opacity {
            let _ = write!(a, r#" stroke-opacity="{o}""#);
        }
        if let Some(d) = self.dash {
            let _ = write!(a, r#" stroke-dasharray="{d}""#);
        }
        if let Some(r) = self.rx {
            let _ = write!(a, r#" rx="{r}""#);
        }
        if self.clipped {
            a.push_str(r#" clip-path="url(#clip)""#);
        }
        a
    }
}

/// An SVG document being written.
pub struct Doc {
    w: f64,
    h: f64,
    body: String,
}

impl Doc {
    /// A `w` × `h` page, white.
    pub fn new(w: f64, h: f64) -> Doc {
        let mut body = String::with_capacity(1 << 16);
        let _ = writeln!(
            body,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}">"#
        );
        let _ = writeln!(body, r#"<rect width="100%" height="100%" fill="white"/>"#);
        Doc { w, h, body }
    }

    pub fn width(&self) -> f64 {
        self.w
    }
    pub fn height(&self) -> f64 {
        self.h
    }

    /// The rectangle that shapes painted [`Paint::clipped`] stay inside.
    pub fn clip(&mut self, x: f64, y: f64, w: f64, h: f64) {
        let _ = writeln!(
            self.body,
            r#"<defs><clipPath id="clip"><rect x="{x}" y="{y}" width="{w}" height="{h}"/></clipPath></defs>"#
        );
    }

    pub fn text(&mut self, t: Text, content: &str) {
        let anchor = match t.anchor {
            Anchor::Start => "",
            Anchor::Middle => r#" text-anchor="middle""#,
            Anchor::End => r#" text-anchor="end""#,
        };
        let weight = if t.bold { r#" font-weight="bold""# } else { "" };
        let fill = t
            .fill
            .map(|c| format!(r#" fill="{c}""#))
            .unwrap_or_default();
        let place = if t.vertical {
            format!(
                r#"transform="translate({:.1},{:.1}) rotate(-90)""#,
                t.x, t.y
            )
        } else {
            format!(r#"x="{:.1}" y="{:.1}""#, t.x, t.y)
        };
        let _ = writeln!(
            self.body,
            r#"<text {place} font-size="{}"{anchor}{weight}{fill}>{}</text>"#,
            t.size,
            esc(content)
        );
    }

    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, p: Paint) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}"{}/>"#,
            p.attrs()
        );
    }

    pub fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), p: Paint) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}"{}/>"#,
            p.attrs()
        );
    }

    pub fn circle(&mut self, (cx, cy): (f64, f64), r: f64, p: Paint) {
        let _ = writeln!(
            self.body,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="{r}"{}/>"#,
            p.attrs()
        );
    }

    /// A path from SVG path data; nothing for empty data.
    pub fn path(&mut self, d: &str, p: Paint) {
        if !d.is_empty() {
            let _ = writeln!(self.body, r#"<path d="{d}"{}/>"#, p.attrs());
        }
    }

    /// A line through `pts`; nothing for fewer than one point.
    pub fn polyline(&mut self, pts: &[(f64, f64)], p: Paint) {
        if pts.is_empty() {
            return;
        }
        let mut d = String::with_capacity(pts.len() * 12);
        for (x, y) in pts {
            let _ = write!(d, "{x:.1},{y:.1} ");
        }
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}"{}/>"#,
            d.trim_end(),
            p.attrs()
        );
    }

    /// The finished SVG text.
    pub fn finish(mut self) -> String {
        self.body.push_str("</svg>\n");
        self.body
    }
}

/// Rasterises `svg` at its own size, with the system fonts.
pub fn png_bytes(svg: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::{bail, Context as _};
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    if opt.fontdb.is_empty() {
        bail!("no system fonts found for the PNG labels (install fonts-dejavu-core)");
    }
    let tree = usvg::Tree::from_str(svg, &opt).context("SVG not understood")?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).context("empty plot")?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().context("PNG not encoded")
}

/// Rasterises `svg` to a PNG file at `path`.
pub fn png(svg: &str, path: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let bytes = png_bytes(svg)?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
