//! The timeline picture: spans per thread over time, as SVG (written by hand) and PNG
//! (the SVG rendered by `resvg`).
//!
//! One lane group per thread that has spans (a span is drawn on the thread it began on): a row
//! per depth of the thread's scopes (`t1`, `t2`, …), then a row per async depth (`d0`, …); colour by name (a stable colour per name for the [`SvgOptions::legend`] names
//! with the longest total time, grey for the others); a time axis relative to the left edge.
//! What cannot be drawn is aggregated: the spans of a row narrower than a pixel become one dark
//! bar per run of pixels they cover. Spans drawn with an end or begin they do not have (never
//! finished, or cut by the range) are hatched and outlined in red.

use super::{Span, SpanKind, Thread, Timeline, stable_hash};
use datafusion::common::{Result, exec_err};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// How the picture is drawn.
#[derive(Debug, Clone)]
pub struct SvgOptions {
    /// Width in pixels (at least 400); the height follows from the threads and depths.
    pub width: u32,
    /// Names with a colour of their own in the legend (the others are grey, "other").
    pub legend: usize,
    /// Title at the top.
    pub title: String,
}

impl Default for SvgOptions {
    fn default() -> Self {
        Self {
            width: 1600,
            legend: 12,
            title: "async spans".into(),
        }
    }
}

const LEFT: f64 = 190.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 64.0;
const ROW: f64 = 14.0;
const BAR: f64 = 12.0;
const GROUP_GAP: f64 = 10.0;
/// Rows a depth of a thread may take for spans that overlap.
const SUB_ROWS: usize = 4;
const OTHER: &str = "#a0a0a0";
const MERGED: &str = "#404040";

/// Escapes text for SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Distinct colours for the legend's names.
const PALETTE: [&str; 16] = [
    "#3f74b5", "#f08c2e", "#d9453f", "#5bb0a8", "#4f9b45", "#e6c23a", "#9f6b9b", "#f59aa6",
    "#8d6a55", "#2f4f8f", "#9ad27e", "#c05683", "#2f8a84", "#b8b830", "#7c5fd0", "#e07a1f",
];

/// Colours of the names (most drawn first): a palette slot picked by the name's hash (the next
/// free one when taken), so that a name keeps its colour from one picture to the next unless
/// another name took the slot; past the palette, a hue from the hash.
pub fn legend_colours(names: &[&str]) -> Vec<String> {
    let mut taken = [false; PALETTE.len()];
    names
        .iter()
        .map(|name| {
            let start = (stable_hash(name) % PALETTE.len() as u64) as usize;
            match (0..PALETTE.len())
                .map(|k| (start + k) % PALETTE.len())
                .find(|&slot| !taken[slot])
            {
                Some(slot) => {
                    taken[slot] = true;
                    PALETTE[slot].to_owned()
                }
                None => name_colour(name),
            }
        })
        .collect()
}

/// Whether text on `fill` (`#rrggbb`) reads better dark than white.
fn dark_text_on(fill: &str) -> bool {
    let channel = |i: usize| {
        fill.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map_or(0.0, f64::from)
    };
    0.299 * channel(1) + 0.587 * channel(3) + 0.114 * channel(5) > 150.0
}

/// The colour of a name: a hue from its hash, stable across runs.
pub fn name_colour(name: &str) -> String {
    let h = stable_hash(name);
    let hue = (h % 360) as f64;
    let sat = 0.55 + ((h >> 16) % 20) as f64 / 100.0;
    let light = 0.45 + ((h >> 24) % 15) as f64 / 100.0;
    let (r, g, b) = hsl_to_rgb(hue, sat, light);
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn hsl_to_rgb(h: f64, s: f64, l: f64) -> (u8, u8, u8) {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = l - c / 2.0;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let to = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    (to(r), to(g), to(b))
}

/// A duration in ns as text with a unit fit for `step` (the tick spacing).
fn duration_text(ns: f64, step: f64) -> String {
    let (div, unit) = if step >= 1e9 {
        (1e9, "s")
    } else if step >= 1e6 {
        (1e6, "ms")
    } else if step >= 1e3 {
        (1e3, "µs")
    } else {
        (1.0, "ns")
    };
    let v = ns / div;
    let digits = if (step / div).fract().abs() > 1e-9 || step / div < 1.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {unit}")
}

fn tick_step(range: f64, ticks: f64) -> f64 {
    let raw = (range / ticks).max(1.0);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow)
}

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else if chars <= 1 {
        String::new()
    } else {
        let mut t: String = text.chars().take(chars - 1).collect();
        t.push('…');
        t
    }
}

/// A name without its module path (`a::b::c` → `c`), for labels inside bars.
fn short_name(name: &str) -> &str {
    name.rsplit("::").next().unwrap_or(name)
}

/// A span placed on the picture (times clipped to the range).
struct Placed<'a> {
    span: &'a Span,
    begin: i64,
    end: i64,
}

/// Renders the timeline as an SVG document.
pub fn render_svg(timeline: &Timeline, options: &SvgOptions) -> String {
    let width = f64::from(options.width.max(400));
    let plot = width - LEFT - RIGHT;
    // The time range: the one asked for, else the spans'.
    let lo = timeline.range.begin.or_else(|| {
        timeline
            .spans
            .iter()
            .filter_map(|s| s.begin.or(s.end))
            .min()
    });
    let hi_seen = timeline
        .spans
        .iter()
        .filter_map(|s| s.end.or(s.begin))
        .max();
    let hi = timeline.range.end.or(hi_seen);
    let (t0, t1) = match (lo, hi) {
        (Some(a), Some(b)) if b > a => (a, b),
        (Some(a), _) => (a.saturating_sub(1), a),
        _ => (0, 1),
    };
    let scale = plot / t1.saturating_sub(t0) as f64;
    let x_of = |t: i64| LEFT + t.clamp(t0, t1).saturating_sub(t0) as f64 * scale;

    // Per thread, per kind (thread scopes first) and depth: the spans.
    let mut groups: BTreeMap<&str, BTreeMap<(bool, u32), Vec<Placed>>> = BTreeMap::new();
    let mut totals: HashMap<&str, f64> = HashMap::new();
    for span in &timeline.spans {
        let begin = span.begin.unwrap_or(t0).max(t0);
        let end = span.end.unwrap_or(t1).min(t1).max(begin);
        if span.begin.unwrap_or(t0) > t1 || span.end.unwrap_or(t1) < t0 {
            continue;
        }
        *totals.entry(span.name.as_str()).or_default() += end.saturating_sub(begin) as f64;
        groups
            .entry(span.stream_id.as_str())
            .or_default()
            .entry((span.kind == SpanKind::Async, span.depth))
            .or_default()
            .push(Placed { span, begin, end });
    }
    let mut names: Vec<(&str, f64)> = totals.into_iter().collect();
    names.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let top_names: Vec<&str> = names.iter().take(options.legend).map(|(n, _)| *n).collect();
    let top_colours = legend_colours(&top_names);
    let top: HashMap<&str, String> = top_names
        .iter()
        .copied()
        .zip(top_colours.iter().cloned())
        .collect();
    let colour = |name: &str| top.get(name).map_or(OTHER, String::as_str);

    let thread_of: HashMap<&str, &Thread> = timeline
        .threads
        .iter()
        .map(|t| (t.stream_id.as_str(), t))
        .collect();
    let mut order: Vec<&str> = groups.keys().copied().collect();
    order.sort_by_key(|s| {
        (
            thread_of.get(s).map_or((*s).to_owned(), |t| t.name.clone()),
            (*s).to_owned(),
        )
    });

    let mut body = String::new();
    let mut y = TOP;
    let mut shown = 0usize;
    for stream in &order {
        let rows = &groups[stream];
        // The thread's scope depths, then every async depth up to the deepest.
        let mut keys: Vec<(bool, u32)> = rows.keys().copied().filter(|k| !k.0).collect();
        if let Some(&(_, max)) = rows.keys().filter(|k| k.0).max() {
            keys.extend((0..=max).map(|d| (true, d)));
        }
        // Rows of each depth: spans overlapping on screen go to rows of their own (at most
        // SUB_ROWS; past that, over the row that frees first).
        let mut layout: Vec<(String, Vec<Vec<&Placed>>)> = Vec::new();
        for key in keys {
            let mut spans: Vec<&Placed> = rows.get(&key).map_or(Vec::new(), |v| v.iter().collect());
            spans.sort_by_key(|p| (p.begin, p.end));
            let mut sub: Vec<Vec<&Placed>> = Vec::new();
            let mut ends: Vec<f64> = Vec::new();
            for p in spans {
                let (x0, x1) = (x_of(p.begin), x_of(p.end).max(x_of(p.begin) + 1.0));
                let row = match ends.iter().position(|&e| e <= x0 + 0.01) {
                    Some(r) => r,
                    None if ends.len() < SUB_ROWS => {
                        ends.push(f64::MIN);
                        sub.push(Vec::new());
                        ends.len() - 1
                    }
                    None => (0..ends.len())
                        .min_by(|&a, &b| ends[a].total_cmp(&ends[b]))
                        .unwrap_or(0),
                };
                ends[row] = ends[row].max(x1);
                sub[row].push(p);
            }
            if sub.is_empty() {
                sub.push(Vec::new());
            }
            let label = match key {
                (false, depth) => format!("t{depth}"),
                (true, depth) => format!("d{depth}"),
            };
            layout.push((label, sub));
        }
        let row_count: usize = layout.iter().map(|(_, sub)| sub.len()).sum();
        let height = (row_count as f64 * ROW).max(2.0 * ROW);
        let (name, tid) = match thread_of.get(stream) {
            Some(t) => (
                t.name.clone(),
                t.thread_id
                    .as_ref()
                    .map_or(String::new(), |id| format!("tid {id}")),
            ),
            None => (format!("stream {stream}"), String::new()),
        };
        let _ = writeln!(
            body,
            r##"<rect x="0" y="{:.1}" width="{width}" height="{:.1}" fill="#f4f6f8"/><text x="8" y="{:.1}" class="thread">{}</text><text x="8" y="{:.1}" class="small">{}</text>"##,
            y - 3.0,
            height + 6.0,
            y + 11.0,
            escape(&truncate(&name, 20)),
            y + 24.0,
            escape(&truncate(&tid, 26)),
        );
        let mut row_y = y;
        for (label, sub) in &layout {
            let _ = write!(
                body,
                r#"<text x="{:.1}" y="{:.1}" class="depth">{label}</text>"#,
                LEFT - 4.0,
                row_y + 10.0
            );
            for spans in sub {
                let top_y = row_y;
                row_y += ROW;
                let mut bins = vec![0u32; plot.ceil() as usize + 1];
                for p in spans {
                    let (x0, x1) = (x_of(p.begin), x_of(p.end));
                    if x1 - x0 < 1.0 && !p.span.is_partial() {
                        let i = ((x0 - LEFT).max(0.0) as usize).min(bins.len() - 1);
                        bins[i] += 1;
                        continue;
                    }
                    shown += 1;
                    let w = (x1 - x0).max(1.0);
                    let name = &p.span.name;
                    let fill = colour(name);
                    let tip = format!(
                        "{name} ({}, finished={})",
                        duration_text(
                            p.end.saturating_sub(p.begin) as f64,
                            p.end.saturating_sub(p.begin) as f64,
                        ),
                        p.span.finished_text()
                    );
                    let _ = write!(
                        body,
                        r#"<rect x="{x0:.2}" y="{top_y:.1}" width="{w:.2}" height="{BAR}" fill="{fill}" class="span"><title>{}</title></rect>"#,
                        escape(&tip)
                    );
                    if p.span.is_partial() {
                        let _ = write!(
                            body,
                            r##"<rect x="{x0:.2}" y="{:.1}" width="{w:.2}" height="{:.1}" fill="url(#hatch)" stroke="#d01010" stroke-width="1.2"/>"##,
                            top_y + 0.6,
                            BAR - 1.2
                        );
                    }
                    let chars = ((w - 4.0) / 5.5).floor();
                    if chars >= 4.0 {
                        let class = if dark_text_on(fill) {
                            "label dark"
                        } else {
                            "label"
                        };
                        let _ = write!(
                            body,
                            r#"<text x="{:.2}" y="{:.1}" class="{class}">{}</text>"#,
                            x0 + 2.0,
                            top_y + 9.5,
                            escape(&truncate(short_name(name), chars as usize))
                        );
                    }
                    body.push('\n');
                }
                // Runs of pixels holding spans narrower than a pixel: one bar each.
                let mut i = 0;
                while i < bins.len() {
                    if bins[i] == 0 {
                        i += 1;
                        continue;
                    }
                    let start = i;
                    let mut count = 0u64;
                    while i < bins.len() && bins[i] > 0 {
                        count += u64::from(bins[i]);
                        i += 1;
                    }
                    let _ = writeln!(
                        body,
                        r#"<rect x="{:.1}" y="{:.1}" width="{}" height="{BAR}" fill="{MERGED}" opacity="0.75"><title>{count} spans narrower than a pixel</title></rect>"#,
                        LEFT + start as f64,
                        top_y,
                        i - start
                    );
                }
            }
        }
        y += height + GROUP_GAP;
    }
    let lanes_bottom = y;

    // Time axis and grid.
    let range = t1.saturating_sub(t0) as f64;
    let step = tick_step(range, (plot / 110.0).max(2.0));
    let mut axis = String::new();
    let _ = writeln!(
        axis,
        r##"<line x1="{LEFT}" y1="{lanes_bottom:.1}" x2="{:.1}" y2="{lanes_bottom:.1}" stroke="#333"/>"##,
        LEFT + plot
    );
    let mut k = 0.0;
    while k * step <= range + 0.5 {
        let x = LEFT + k * step * scale;
        let _ = writeln!(
            axis,
            r##"<line x1="{x:.1}" y1="{TOP:.1}" x2="{x:.1}" y2="{lanes_bottom:.1}" stroke="#000" stroke-opacity="0.08"/><line x1="{x:.1}" y1="{lanes_bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" class="tick">{}</text>"##,
            lanes_bottom + 5.0,
            lanes_bottom + 17.0,
            escape(&duration_text(k * step, step))
        );
        k += 1.0;
    }

    // Legend.
    let mut legend = String::new();
    let ly = lanes_bottom + 36.0;
    let column = 300.0;
    let per_row = ((width - 16.0) / column).floor().max(1.0) as usize;
    let mut entries: Vec<(String, String)> = names
        .iter()
        .take(options.legend)
        .zip(&top_colours)
        .map(|((n, _), c)| (c.clone(), truncate(n, 40)))
        .collect();
    if names.len() > options.legend {
        entries.push((
            OTHER.into(),
            format!("other ({} names)", names.len() - options.legend),
        ));
    }
    entries.push((MERGED.into(), "spans narrower than a pixel (merged)".into()));
    entries.push((
        "url(#hatch)".into(),
        "unfinished or cut by the range".into(),
    ));
    for (i, (fill, text)) in entries.iter().enumerate() {
        let x = 16.0 + (i % per_row) as f64 * column;
        let y = ly + (i / per_row) as f64 * 18.0;
        let stroke = if fill.starts_with("url") {
            r##" stroke="#d01010""##
        } else {
            ""
        };
        let _ = writeln!(
            legend,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{fill}"{stroke}/><text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
            y - 10.0,
            x + 18.0,
            y,
            escape(text)
        );
    }
    let height = (ly + (entries.len().div_ceil(per_row)) as f64 * 18.0 + 8.0).ceil();

    let start = chrono::DateTime::from_timestamp_nanos(t0)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let subtitle = format!(
        "{} spans on {} threads from {start}, over {}; {} drawn, the rest merged",
        timeline.spans.len(),
        order.len(),
        duration_text(range, range),
        shown
    );
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="DejaVu Sans, Verdana, Arial, sans-serif">
<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff" fill-opacity="0.35"/><line x1="0" y1="0" x2="0" y2="6" stroke="#d01010" stroke-width="2"/></pattern>
<style>.thread{{font-size:12px;font-weight:bold;fill:#222}} .small{{font-size:10px;fill:#666}} .label{{font-size:9px;fill:#fff}} .dark{{fill:#111}} .depth{{font-size:9px;fill:#888;text-anchor:end}} .tick{{font-size:10px;fill:#333;text-anchor:middle}} .legend{{font-size:11px;fill:#222}} .span{{stroke:#fff;stroke-width:0.5}}</style></defs>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="16" y="24" font-size="16" font-weight="bold" fill="#111">{}</text>
<text x="16" y="44" font-size="11" fill="#555">{}</text>
"##,
        escape(&options.title),
        escape(&subtitle),
        w = options.width.max(400),
    );
    svg.push_str(&body);
    svg.push_str(&axis);
    svg.push_str(&legend);
    svg.push_str("</svg>\n");
    svg
}

/// Renders an SVG document to PNG bytes at its own size, with the system's fonts for text
/// (none installed: the picture has no text, e.g. install `fonts-dejavu-core`).
pub fn render_png(svg: &str) -> Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let tree = match usvg::Tree::from_str(svg, &options) {
        Ok(t) => t,
        Err(e) => return exec_err!("timeline: the SVG does not parse: {e}"),
    };
    let size = tree.size().to_int_size();
    let Some(mut pixmap) = tiny_skia::Pixmap::new(size.width(), size.height()) else {
        return exec_err!(
            "timeline: cannot make a {}x{} picture",
            size.width(),
            size.height()
        );
    };
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    match pixmap.encode_png() {
        Ok(png) => Ok(png),
        Err(e) => exec_err!("timeline: PNG encoding failed: {e}"),
    }
}
