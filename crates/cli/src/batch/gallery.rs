//! The gallery: one self-contained `index.html` in the output folder to review a
//! batch — a card per line with its reference thumbnail, its result images, the
//! prompt, size, seed, cost and status, failures with their error — and filters
//! for ok/failed. Inline CSS and script only: it opens from disk, with no server
//! and no network (URL-only results, from `--no-download`, are the exception).

use crate::error::CliError;
use crate::output::dollars;
use crate::reader::Lines;
use runware_jobs::record::{JobState as LineState, Status};
use runware_jobs::store::journal;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One card.
#[derive(Debug, Default)]
struct Card {
    line: usize,
    prompt: String,
    size: String,
    references: Vec<String>,
    images: Vec<(String, Option<u64>, Option<f64>)>,
    status: &'static str,
    error: Option<String>,
}

/// Writes `out_dir/index.html` for the batch `input` journaled in `results`
/// (blocking); returns its path and how many cards it has.
pub fn write(input: &Path, results: &Path, out_dir: &Path) -> Result<(PathBuf, usize), CliError> {
    let loaded = journal::load(results)?;
    let base = input.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut cards = Vec::new();
    let mut lines = Lines::open(input)?;
    while let Some(s) = lines.next_line()? {
        let state = loaded.line(&s.key);
        cards.push(card(s.line, s.parsed.as_ref().ok(), state, &base));
    }
    std::fs::create_dir_all(out_dir).map_err(|source| CliError::Write { path: out_dir.to_path_buf(), source })?;
    let path = out_dir.join("index.html");
    let html = render(input, &cards, out_dir);
    std::fs::write(&path, html).map_err(|source| CliError::Write { path: path.clone(), source })?;
    Ok((path, cards.len()))
}

fn card(line: usize, value: Option<&Value>, state: Option<&LineState>, base: &Path) -> Card {
    let text = |k: &str| value.and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_string);
    let num = |k: &str| value.and_then(|v| v.get(k)).and_then(Value::as_u64);
    let size = text("size").or_else(|| Some(format!("{}x{}", num("width")?, num("height")?))).unwrap_or_default();
    let references = value
        .and_then(|v| v.pointer("/inputs/referenceImages"))
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(Value::as_str).map(|r| reference_src(r, base)).collect())
        .unwrap_or_default();
    let images = state
        .map(|s| {
            s.images
                .iter()
                .filter_map(|i| {
                    let src = i.path.as_deref().map(file_src).or_else(|| i.image_url.clone())?;
                    Some((src, i.seed, i.cost))
                })
                .collect()
        })
        .unwrap_or_default();
    let result = state.and_then(|s| s.result.as_ref());
    let (status, error) = match result {
        Some(r) if r.status == Status::Ok => ("ok", None),
        Some(r) => (
            "failed",
            Some(format!("{}: {}", r.code.as_deref().unwrap_or("error"), r.message.as_deref().unwrap_or(""))),
        ),
        None if value.is_none() => ("failed", Some("the line is not valid JSON".to_string())),
        None => ("pending", None),
    };
    Card { line, prompt: text("positivePrompt").unwrap_or_default(), size, references, images, status, error }
}

/// A local reference as a `file:` URL; URLs and data URIs as they are.
fn reference_src(r: &str, base: &Path) -> String {
    let lower = r.get(..8).unwrap_or(r).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("data:") {
        return r.to_string();
    }
    file_src(&base.join(r).display().to_string())
}

/// A saved file as a `file:` URL (absolute, so the page works wherever it is opened from).
fn file_src(path: &str) -> String {
    let p = Path::new(path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    };
    let mut url = String::from("file://");
    for b in abs.display().to_string().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => url.push(b as char),
            other => {
                let _ = write!(url, "%{other:02X}");
            }
        }
    }
    url
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn render(input: &Path, cards: &[Card], out_dir: &Path) -> String {
    let count = |s: &str| cards.iter().filter(|c| c.status == s).count();
    let mut h = String::with_capacity(4096 + cards.len() * 1024);
    let title = format!("runware batch — {}", input.display());
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n<header><h1>{}</h1><p>{} lines · {} ok · {} failed · {} pending · images in {}</p>\n<nav><button data-show=\"all\" class=\"on\">all</button><button data-show=\"ok\">ok</button><button data-show=\"failed\">failed</button><button data-show=\"pending\">pending</button></nav></header>\n<main>\n",
        esc(&title),
        esc(&title),
        cards.len(),
        count("ok"),
        count("failed"),
        count("pending"),
        esc(&out_dir.display().to_string())
    );
    for c in cards {
        let _ =
            write!(h, "<article class=\"card {}\" data-status=\"{}\" data-line=\"{}\">", c.status, c.status, c.line);
        let _ = write!(
            h,
            "<h2>line {} <span class=\"status\">{}</span></h2><p class=\"prompt\">{}</p>",
            c.line,
            c.status,
            esc(&c.prompt)
        );
        h.push_str("<div class=\"row\">");
        for r in &c.references {
            let _ = write!(
                h,
                "<figure class=\"ref\"><img src=\"{}\" alt=\"reference\"><figcaption>reference</figcaption></figure>",
                esc(r)
            );
        }
        for (src, seed, cost) in &c.images {
            let mut caption = String::new();
            if let Some(s) = seed {
                let _ = write!(caption, "seed {s}");
            }
            if let Some(c) = cost {
                let _ = write!(caption, " · {}", dollars(*c));
            }
            let _ = write!(
                h,
                "<figure class=\"result\"><img src=\"{}\" alt=\"result\"><figcaption>{}</figcaption></figure>",
                esc(src),
                esc(caption.trim_start_matches(" · "))
            );
        }
        h.push_str("</div>");
        let _ = write!(h, "<p class=\"meta\">{}</p>", esc(&c.size));
        if let Some(e) = &c.error {
            let _ = write!(h, "<p class=\"error\">{}</p>", esc(e));
        }
        h.push_str("</article>\n");
    }
    h.push_str("</main>\n<script>");
    h.push_str(SCRIPT);
    h.push_str("</script>\n</body></html>\n");
    h
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;background:#f4f4f5;color:#18181b}\
header{padding:16px 24px;background:#fff;border-bottom:1px solid #e4e4e7;position:sticky;top:0}\
h1{font-size:18px;margin:0 0 4px}nav button{margin-right:6px;padding:4px 10px;border:1px solid #d4d4d8;\
background:#fff;border-radius:6px;cursor:pointer}nav button.on{background:#18181b;color:#fff}\
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:16px;padding:16px 24px}\
.card{background:#fff;border:1px solid #e4e4e7;border-radius:10px;padding:12px}\
.card.failed{border-color:#ef4444}.card h2{font-size:14px;margin:0 0 6px}\
.status{font-weight:normal;color:#71717a}.failed .status{color:#b91c1c}\
.row{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}figure img{height:120px;border-radius:6px;\
background:#e4e4e7}.ref img{outline:2px solid #a1a1aa}figcaption{font-size:11px;color:#71717a}\
.prompt{margin:0 0 8px}.meta{color:#71717a;margin:6px 0 0}.error{color:#b91c1c;margin:6px 0 0}";

const SCRIPT: &str = "document.querySelectorAll('img').forEach(function(i){\
function done(ok){i.dataset.loaded=ok?'1':'0';}\
if(i.complete&&i.naturalWidth>0){done(true);}else{i.addEventListener('load',function(){done(true);});\
i.addEventListener('error',function(){done(false);});}});\
document.querySelectorAll('nav button').forEach(function(b){b.addEventListener('click',function(){\
var s=b.dataset.show;document.querySelectorAll('nav button').forEach(function(o){o.classList.toggle('on',o===b);});\
document.querySelectorAll('.card').forEach(function(c){c.style.display=(s==='all'||c.dataset.status===s)?'':'none';});});});";
