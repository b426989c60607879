//! The printable report of a project: every textual field with its label, laid out once
//! ([`Report`]) and written as HTML (the page's preview, the browser prints it) and as PDF
//! (made on the device: A4, the standard Helvetica fonts, so nothing is embedded).
//!
//! A part of the project that could not be read is named in its section ("could not be
//! read: …") instead of failing the report.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::model::{Properties, REPORT_SUBTITLE, show_value};
use crate::store::Project;

/// One line of a section.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A label and its value (`Status: In progress`).
    Pair(String, String),
    /// An entry with a heading line and a text under it (a comment, a call).
    Entry(String, String),
    /// The section has nothing to show.
    Empty(String),
    /// This part could not be read.
    Missing(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// A report laid out, ready to be written as HTML or PDF.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub title: String,
    pub subtitle: String,
    pub heading: String,
    pub sections: Vec<Section>,
    pub footer: String,
}

/// Formats times for people: in the site's time zone.
pub struct Clockface(pub jiff::tz::TimeZone);

impl Clockface {
    fn show(&self, rfc3339: &str) -> String {
        rfc3339
            .parse::<jiff::Timestamp>()
            .map(|t| {
                t.to_zoned(self.0.clone())
                    .strftime("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .unwrap_or_else(|_| rfc3339.to_string())
    }
}

/// Lays out a project's report under the properties in effect. `generated` names who made
/// it and when.
pub fn build(props: &Properties, p: &Project, tz: &Clockface, generated: &str) -> Report {
    let s = &p.summary;
    let dash = || "—".to_string();
    let mut main = vec![
        Block::Pair("Project".into(), s.id.to_string()),
        Block::Pair(
            "Name".into(),
            if s.name.is_empty() {
                dash()
            } else {
                s.name.clone()
            },
        ),
        Block::Pair("Type".into(), s.type_name.clone().unwrap_or_else(dash)),
        Block::Pair("Status".into(), s.status_name.clone()),
        Block::Pair("Created by".into(), s.created_by.clone()),
        Block::Pair("Created at".into(), tz.show(&s.created_at)),
        Block::Pair(
            "Start".into(),
            s.start.as_deref().map_or_else(dash, |t| tz.show(t)),
        ),
        Block::Pair(
            "End".into(),
            s.end.as_deref().map_or_else(dash, |t| tz.show(t)),
        ),
        Block::Pair("Last change".into(), tz.show(&s.updated_at)),
        Block::Pair("Deleted after".into(), tz.show(&s.expires_at)),
    ];
    main.retain(|b| !matches!(b, Block::Pair(_, v) if v.is_empty()));
    let mut categories: Vec<Block> = props
        .categories
        .iter()
        .map(|c| {
            let value = p
                .categories
                .get(&c.id)
                .and_then(|v| c.values.iter().find(|x| &x.id == v))
                .map_or_else(dash, |v| v.name.clone());
            Block::Pair(c.name.clone(), value)
        })
        .collect();
    if categories.is_empty() {
        categories.push(Block::Empty("No categories are defined.".into()));
    }
    let mut data: Vec<Block> = props
        .fields
        .iter()
        .filter(|f| f.enabled || p.fields.contains_key(&f.id))
        .map(|f| {
            let value = match p.fields.get(&f.id) {
                None => dash(),
                Some(v) if f.kind == crate::model::FieldKind::DateTime => tz.show(&show_value(v)),
                Some(v) => show_value(v),
            };
            Block::Pair(f.name.clone(), value)
        })
        .collect();
    if data.is_empty() {
        data.push(Block::Empty("No data fields are defined.".into()));
    }
    let missing = |part: &str| {
        p.unreadable
            .iter()
            .find(|u| u.starts_with(&format!("{part}:")))
            .map(|u| Block::Missing(format!("This part could not be read ({u}).")))
    };
    let listed = |part: &str, blocks: Vec<Block>, none: &str| -> Vec<Block> {
        if let Some(m) = missing(part) {
            vec![m]
        } else if blocks.is_empty() {
            vec![Block::Empty(none.into())]
        } else {
            blocks
        }
    };
    let comments = listed(
        "comments",
        p.comments
            .iter()
            .map(|c| {
                let edited = c
                    .edited_at
                    .as_deref()
                    .map(|t| format!(" (edited {})", tz.show(t)))
                    .unwrap_or_default();
                Block::Entry(
                    format!("{}, {}{edited}", c.author, tz.show(&c.at)),
                    c.text.clone(),
                )
            })
            .collect(),
        "No comments.",
    );
    let calls = listed(
        "calls",
        p.calls
            .iter()
            .map(|c| {
                let phone = if c.phone.is_empty() {
                    String::new()
                } else {
                    format!(", {}", c.phone)
                };
                Block::Entry(
                    format!(
                        "{}: {} called {}{phone}",
                        tz.show(&c.at),
                        c.caller,
                        c.callee
                    ),
                    c.notes.clone(),
                )
            })
            .collect(),
        "No calls.",
    );
    let sequences = listed(
        "sequence list",
        p.sequences
            .iter()
            .map(|q| {
                let secs = (q.to_ms - q.from_ms) / 1000;
                Block::Pair(
                    q.camera.clone(),
                    format!(
                        "{} – {} ({}:{:02}:{:02})",
                        tz.show(&q.from),
                        tz.show(&q.to),
                        secs / 3600,
                        secs / 60 % 60,
                        secs % 60
                    ),
                )
            })
            .collect(),
        "No sequences.",
    );
    let activity = listed(
        "activity log",
        p.activity
            .iter()
            .map(|a| {
                Block::Pair(
                    tz.show(&a.at),
                    format!("{}: {}: {}", a.by, a.action.replace('_', " "), a.detail),
                )
            })
            .collect(),
        "No activity.",
    );
    let section = |title: &str, blocks| Section {
        title: title.into(),
        blocks,
    };
    Report {
        title: props.report_title.clone(),
        subtitle: REPORT_SUBTITLE.into(),
        heading: if s.name.is_empty() {
            format!("Project {}", s.id)
        } else {
            format!("Project {}: {}", s.id, s.name)
        },
        sections: vec![
            section("Main details", main),
            section("Categories", categories),
            section("Incident data", data),
            section("Comments", comments),
            section("Calls", calls),
            section("Sequence list", sequences),
            section("Activity log", activity),
        ],
        footer: generated.into(),
    }
}

/// What an export of a project carries besides its footage: the report as PDF and the
/// project's data (`project.json`: the project, the properties its ids refer to, and the case
/// the evidence belongs to).
pub fn export_bundle(
    props: &Properties,
    p: &Project,
    tz: &Clockface,
    made: &str,
    case: &serde_json::Value,
) -> (Vec<u8>, Vec<u8>) {
    let pdf = pdf(&build(props, p, tz, made));
    let data = serde_json::json!({
        "format": "veil-incident/1",
        "case": case,
        "project": p,
        "properties": props,
    });
    let json = serde_json::to_vec_pretty(&data).expect("JSON values serialize");
    (pdf, json)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The report as a standalone HTML page (inline style only, so it prints as it shows).
pub fn html(r: &Report) -> String {
    let mut out = String::new();
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str(&format!(
        "<title>{} – {}</title>",
        escape(&r.title),
        escape(&r.heading)
    ));
    out.push_str(
        "<style>body{font-family:Helvetica,Arial,sans-serif;max-width:48rem;margin:2rem auto;\
         padding:0 1rem;color:#111}h1{margin:0}p.sub{margin:.2rem 0 1.5rem;color:#555}\
         h2{border-bottom:1px solid #999;margin-top:1.5rem}dl{display:grid;\
         grid-template-columns:minmax(8rem,max-content) 1fr;gap:.25rem 1rem}dt{font-weight:bold}\
         dd{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}.entry{margin:.5rem 0}\
         .entry p{margin:.2rem 0 0;white-space:pre-wrap;overflow-wrap:anywhere}\
         .missing{color:#a00;font-weight:bold}footer{margin-top:2rem;color:#555;font-size:.85rem}\
         @media print{body{margin:0}}</style></head><body>",
    );
    out.push_str(&format!(
        "<h1>{}</h1><p class=\"sub\">{}<br>{}</p>",
        escape(&r.title),
        escape(&r.subtitle),
        escape(&r.heading)
    ));
    for s in &r.sections {
        out.push_str(&format!("<section><h2>{}</h2>", escape(&s.title)));
        let mut in_dl = false;
        for b in &s.blocks {
            let pair = matches!(b, Block::Pair(..));
            if pair && !in_dl {
                out.push_str("<dl>");
                in_dl = true;
            } else if !pair && in_dl {
                out.push_str("</dl>");
                in_dl = false;
            }
            match b {
                Block::Pair(k, v) => {
                    out.push_str(&format!("<dt>{}</dt><dd>{}</dd>", escape(k), escape(v)))
                }
                Block::Entry(h, t) => out.push_str(&format!(
                    "<div class=\"entry\"><strong>{}</strong><p>{}</p></div>",
                    escape(h),
                    escape(t)
                )),
                Block::Empty(t) => out.push_str(&format!("<p>{}</p>", escape(t))),
                Block::Missing(t) => {
                    out.push_str(&format!("<p class=\"missing\">{}</p>", escape(t)))
                }
            }
        }
        if in_dl {
            out.push_str("</dl>");
        }
        out.push_str("</section>");
    }
    out.push_str(&format!(
        "<footer>{}</footer></body></html>",
        escape(&r.footer)
    ));
    out
}

// Helvetica and Helvetica-Bold advance widths (1/1000 em) for ASCII 32–126, from the
// standard fonts' metrics: text is measured to wrap it, since nothing is embedded.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
    611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
    278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
];

/// A character in WinAnsiEncoding (what the standard fonts draw), `?` when it has none.
fn win_ansi(c: char) -> u8 {
    match c {
        ' '..='~' => c as u8,
        '\u{a0}'..='\u{ff}' => c as u32 as u8,
        '€' => 0x80,
        '‚' => 0x82,
        '„' => 0x84,
        '…' => 0x85,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        'Œ' => 0x8c,
        'œ' => 0x9c,
        'Š' => 0x8a,
        'š' => 0x9a,
        'Ž' => 0x8e,
        'ž' => 0x9e,
        'Ÿ' => 0x9f,
        _ => b'?',
    }
}

/// Text as the PDF shows it: WinAnsi bytes; an arrow becomes `->`.
fn encode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '→' => out.extend_from_slice(b"->"),
            '\t' => out.push(b' '),
            c => out.push(win_ansi(c)),
        }
    }
    out
}

fn width(bytes: &[u8], size: f32, bold: bool) -> f32 {
    let table = if bold { &HELVETICA_BOLD } else { &HELVETICA };
    let units: u32 = bytes
        .iter()
        .map(|&b| match b {
            32..=126 => u32::from(table[usize::from(b - 32)]),
            0x97 | 0x85 => 1000,
            _ => 556,
        })
        .sum();
    units as f32 * size / 1000.0
}

/// Splits text into lines at most `max` wide (words longer than a line are cut).
fn wrap(text: &str, max: f32, size: f32, bold: bool) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line: Vec<u8> = Vec::new();
        for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
            let mut word = encode(word);
            loop {
                let joined = if line.is_empty() {
                    word.clone()
                } else {
                    [line.as_slice(), b" ", word.as_slice()].concat()
                };
                if width(&joined, size, bold) <= max {
                    line = joined;
                    break;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                    continue;
                }
                // A word wider than a line: cut it where it stops fitting.
                let mut cut = word.len();
                while cut > 1 && width(&word[..cut], size, bold) > max {
                    cut -= 1;
                }
                lines.push(word[..cut].to_vec());
                word = word[cut..].to_vec();
                if word.is_empty() {
                    break;
                }
            }
        }
        lines.push(line);
    }
    lines
}

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 56.0;
const BOTTOM: f32 = 64.0;

struct Layout {
    pages: Vec<Content>,
    y: f32,
}

impl Layout {
    fn page(&mut self) -> &mut Content {
        self.pages.last_mut().expect("a page is open")
    }

    /// Room for `height` more points, on a new page if needed.
    fn room(&mut self, height: f32) {
        if self.y - height < BOTTOM {
            self.pages.push(Content::new());
            self.y = PAGE_H - MARGIN;
        }
    }

    fn text(&mut self, x: f32, bytes: &[u8], size: f32, bold: bool, gray: f32) {
        let y = self.y;
        let c = self.page();
        c.set_fill_gray(gray);
        c.begin_text();
        c.set_font(Name(if bold { b"F2" } else { b"F1" }), size);
        c.next_line(x, y);
        c.show(Str(bytes));
        c.end_text();
    }

    /// Writes wrapped text at `x`, `width` wide, moving down line by line.
    fn paragraph(&mut self, x: f32, width: f32, text: &str, size: f32, bold: bool, gray: f32) {
        for line in wrap(text, width, size, bold) {
            self.room(size * 1.35);
            self.y -= size * 1.35;
            self.text(x, &line, size, bold, gray);
        }
    }

    fn rule(&mut self) {
        let y = self.y;
        let c = self.page();
        c.set_stroke_gray(0.6);
        c.set_line_width(0.6);
        c.move_to(MARGIN, y);
        c.line_to(PAGE_W - MARGIN, y);
        c.stroke();
    }
}

/// The report as a PDF (A4, page numbers in the footer).
pub fn pdf(r: &Report) -> Vec<u8> {
    let mut l = Layout {
        pages: vec![Content::new()],
        y: PAGE_H - MARGIN,
    };
    let full = PAGE_W - 2.0 * MARGIN;
    l.paragraph(MARGIN, full, &r.title, 22.0, true, 0.0);
    l.y -= 4.0;
    l.paragraph(MARGIN, full, &r.subtitle, 13.0, false, 0.3);
    l.paragraph(MARGIN, full, &r.heading, 13.0, true, 0.0);
    let label_w = 150.0;
    for s in &r.sections {
        l.room(60.0);
        l.y -= 14.0;
        l.paragraph(MARGIN, full, &s.title, 14.0, true, 0.0);
        l.y -= 4.0;
        l.rule();
        l.y -= 2.0;
        for b in &s.blocks {
            match b {
                Block::Pair(k, v) => {
                    let keys = wrap(k, label_w - 8.0, 10.0, true);
                    let values = wrap(v, full - label_w, 10.0, false);
                    for i in 0..keys.len().max(values.len()) {
                        l.room(13.5);
                        l.y -= 13.5;
                        if let Some(k) = keys.get(i) {
                            l.text(MARGIN, k, 10.0, true, 0.0);
                        }
                        if let Some(v) = values.get(i) {
                            l.text(MARGIN + label_w, v, 10.0, false, 0.0);
                        }
                    }
                }
                Block::Entry(h, t) => {
                    l.room(30.0);
                    l.y -= 4.0;
                    l.paragraph(MARGIN, full, h, 10.0, true, 0.0);
                    l.paragraph(MARGIN + 12.0, full - 12.0, t, 10.0, false, 0.0);
                }
                Block::Empty(t) => l.paragraph(MARGIN, full, t, 10.0, false, 0.35),
                Block::Missing(t) => l.paragraph(MARGIN, full, t, 10.0, true, 0.0),
            }
        }
    }

    let n = l.pages.len();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let font = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let page_ids: Vec<Ref> = (0..n).map(|i| Ref::new(6 + 2 * i as i32)).collect();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(n as i32);
    pdf.type1_font(font)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr(&format!("{} – {}", r.title, r.heading)))
        .subject(TextStr(&r.subtitle))
        .producer(TextStr("veild"));
    for (i, mut content) in l.pages.into_iter().enumerate() {
        let footer = encode(&format!("{}  ·  page {} of {n}", r.footer, i + 1));
        content.set_fill_gray(0.35);
        content.begin_text();
        content.set_font(Name(b"F1"), 8.0);
        content.next_line(MARGIN, BOTTOM - 28.0);
        content.show(Str(&footer));
        content.end_text();
        let page_id = page_ids[i];
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(page_id);
        page.parent(tree)
            .media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
            .contents(content_id);
        page.resources()
            .fonts()
            .pair(Name(b"F1"), font)
            .pair(Name(b"F2"), bold);
        page.finish();
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_never_run_past_the_width() {
        let text = "Trapped between objects near the loading bay; Überwachungskamera-Aufzeichnungsgerät \
                    supercalifragilisticexpialidocious-and-then-some-more-without-a-space €42";
        for line in wrap(text, 120.0, 10.0, false) {
            assert!(width(&line, 10.0, false) <= 120.0);
        }
        assert_eq!(wrap("a\n\nb", 100.0, 10.0, false).len(), 3);
    }

    #[test]
    fn html_escapes_everything_it_shows() {
        let r = Report {
            title: "<script>alert(1)</script>".into(),
            subtitle: REPORT_SUBTITLE.into(),
            heading: "Project 1".into(),
            sections: vec![Section {
                title: "Comments".into(),
                blocks: vec![Block::Entry("a&b".into(), "\"x\" <img>".into())],
            }],
            footer: String::new(),
        };
        let h = html(&r);
        assert!(!h.contains("<script>") && !h.contains("<img>"));
        assert!(h.contains("&lt;script&gt;") && h.contains("a&amp;b"));
    }

    #[test]
    fn a_long_report_spans_pages_with_numbers() {
        let r = Report {
            title: "Site 7".into(),
            subtitle: REPORT_SUBTITLE.into(),
            heading: "Project 1".into(),
            sections: vec![Section {
                title: "Comments".into(),
                blocks: (0..200)
                    .map(|i| Block::Entry(format!("olga {i}"), "word ".repeat(40)))
                    .collect(),
            }],
            footer: "made by olga".into(),
        };
        let bytes = pdf(&r);
        assert!(bytes.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&bytes);
        let pages = text.matches("/Type /Page").count() - text.matches("/Type /Pages").count();
        assert!(pages > 5, "200 comments take many pages, not {pages}");
    }
}
