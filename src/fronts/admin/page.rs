//! The status page as HTML: one self-contained document (inline CSS and SVG, no script, no
//! external asset) that refreshes itself, for a person who opens the admin port in a browser.

use std::fmt::Write as _;

use super::status::{FrontStatus, Reads, Row, Status};

/// Seconds between the page's own reloads.
pub const REFRESH_SECONDS: u32 = 10;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 20px}
header h1{font-size:18px;margin:0}header p{margin:2px 0 0;color:#b8c0cc;font-size:12px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px;padding:16px}
section{background:#fff;border-radius:6px;padding:12px 14px;box-shadow:0 1px 2px #0002}
section.wide{grid-column:1/-1}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#56607a;margin:0 0 8px}
.big{font-size:28px;font-weight:600}.muted{color:#6b7487;font-size:12px}
table{border-collapse:collapse;width:100%}td,th{padding:3px 6px;text-align:right;white-space:nowrap}
th{color:#56607a;font-weight:500;border-bottom:1px solid #e1e4ea}
td:first-child,th:first-child{text-align:left;white-space:normal;overflow-wrap:anywhere}
#errors td:first-child{white-space:nowrap}#errors td:last-child,#errors th:last-child{text-align:left;white-space:normal}
svg.spark{color:#2f6fde;vertical-align:middle}svg.bar{display:block;margin:4px 0}
.ok{color:#1a7f37}.bad{color:#c62828}
";

pub fn render(s: &Status) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>build-cache-proxy status</title><style>{STYLE}</style></head><body>\
         <header><h1>build-cache-proxy {}</h1><p>up {} · last hour = the last {} · \
         refreshes every {REFRESH_SECONDS} s · <a href=\"status.json\" style=\"color:#b8c0cc\">status.json</a></p></header><main>",
        esc(s.version),
        duration(s.uptime_seconds as f64),
        duration(s.window_seconds as f64),
    );
    saved(&mut h, s);
    hit_ratios(&mut h, s);
    bytes(&mut h, s);
    dependencies(&mut h, s);
    tables(&mut h, s);
    tiers(&mut h, s);
    remote(&mut h, s);
    errors(&mut h, s);
    h.push_str("</main></body></html>\n");
    h
}

fn saved(h: &mut String, s: &Status) {
    let g = &s.gradle;
    let gradle = &s.fronts[0];
    let _ = write!(
        h,
        "<section><h2>Build time saved by Gradle hits</h2>\
         <div class=\"big\" id=\"saved-last-hour\">{}</div><div class=\"muted\">last hour</div>\
         {}<p><b id=\"saved-since-start\">{}</b> since start · Gradle hit ratio \
         <b id=\"gradle-hit-ratio\">{}</b> (last hour <span id=\"gradle-hit-ratio-hour\">{}</span>)</p></section>",
        duration(g.saved_seconds_last_hour),
        sparkline(&g.saved_seconds_per_minute, "seconds saved per minute, last hour"),
        duration(g.saved_seconds_since_start),
        ratio(gradle.since_start.hit_ratio),
        ratio(gradle.last_hour.hit_ratio),
    );
}

fn hit_ratios(h: &mut String, s: &Status) {
    h.push_str(
        "<section class=\"wide\"><h2>Hit ratio per front and tier</h2><table id=\"fronts\">\
         <tr><th>front</th><th>hit ratio (hour)</th><th>hit ratio (start)</th>\
         <th>served locally</th><th>memory</th><th>disk</th><th>from S3</th><th>misses</th>\
         <th>hits/min, last hour</th></tr>",
    );
    for front in &s.fronts {
        front_row(h, front);
    }
    h.push_str(
        "</table><p class=\"muted\">Counts since start. A hit from S3 was filled through this \
         node; forward: S3 forward mode (a hit is a copy S3 vouched for with 304).</p></section>",
    );
}

fn front_row(h: &mut String, f: &FrontStatus) {
    let name = match f.front {
        "gradle" => "Gradle",
        "s3" => "S3 API",
        _ => "S3 forward mode",
    };
    let Reads {
        memory_hits,
        disk_hits,
        s3_hits,
        misses,
        ..
    } = f.since_start;
    let trend: Vec<f64> = f.hits_per_minute.iter().map(|&n| n as f64).collect();
    let _ = write!(
        h,
        "<tr id=\"front-{}\"><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{memory_hits}</td>\
         <td>{disk_hits}</td><td>{s3_hits}</td><td>{misses}</td><td>{}</td></tr>",
        f.front,
        ratio(f.last_hour.hit_ratio),
        ratio(f.since_start.hit_ratio),
        ratio(f.since_start.local_hit_ratio),
        sparkline(&trend, "hits per minute"),
    );
}

fn bytes(h: &mut String, s: &Status) {
    let b = &s.bytes;
    let local: Vec<f64> = b.local_per_minute.iter().map(|&n| n as f64).collect();
    let remote: Vec<f64> = b.s3_per_minute.iter().map(|&n| n as f64).collect();
    let _ = write!(
        h,
        "<section><h2>Bytes served</h2><table><tr><th></th><th>last hour</th><th>since start</th><th>per minute</th></tr>\
         <tr><td>from this node</td><td>{}</td><td>{}</td><td>{}</td></tr>\
         <tr><td>from S3</td><td>{}</td><td>{}</td><td>{}</td></tr></table></section>",
        size(b.local_last_hour),
        size(b.local_since_start),
        sparkline(&local, "bytes served locally per minute"),
        size(b.s3_last_hour),
        size(b.s3_since_start),
        sparkline(&remote, "bytes served from S3 per minute"),
    );
}

/// Dependency bytes from the node and the bucket against those from the internet.
fn dependencies(h: &mut String, s: &Status) {
    if s.dependencies.is_empty() {
        return;
    }
    h.push_str(
        "<section><h2>Dependencies served</h2><table id=\"dependencies\"><tr><th>repository</th>\
         <th>from this node</th><th>from S3</th><th>from the internet</th><th>not from the internet</th></tr>",
    );
    for d in &s.dependencies {
        let total = d.node_bytes + d.s3_bytes + d.upstream_bytes;
        let kept = (total > 0).then(|| (d.node_bytes + d.s3_bytes) as f64 / total as f64);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.repository),
            size(d.node_bytes),
            size(d.s3_bytes),
            size(d.upstream_bytes),
            ratio(kept),
        );
    }
    h.push_str("</table></section>");
}

fn tables(h: &mut String, s: &Status) {
    let g = &s.gradle;
    table(
        h,
        "top-types-saved",
        "Task types by time saved",
        &g.top_types_by_saved,
    );
    table(
        h,
        "top-types-misses",
        "Task types by misses",
        &g.top_types_by_misses,
    );
    table(
        h,
        "top-paths-saved",
        "Task paths by time saved",
        &g.top_paths_by_saved,
    );
    table(
        h,
        "top-paths-misses",
        "Task paths by misses",
        &g.top_paths_by_misses,
    );
    table(h, "projects", "Projects (first path segment)", &g.projects);
}

fn table(h: &mut String, id: &str, title: &str, rows: &[Row]) {
    let _ = write!(
        h,
        "<section><h2>{title}</h2><table id=\"{id}\"><tr><th>name</th><th>saved</th>\
         <th>hits</th><th>misses</th><th>stores</th></tr>"
    );
    if rows.is_empty() {
        h.push_str("<tr><td class=\"muted\">none yet</td></tr>");
    }
    for row in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            // Class names break at their dots, not inside a word.
            esc(&row.name).replace('.', ".<wbr>"),
            duration(row.saved_seconds),
            row.hits,
            row.misses,
            row.stores
        );
    }
    h.push_str("</table><p class=\"muted\">Since start.</p></section>");
}

fn tiers(h: &mut String, s: &Status) {
    let m = &s.memory;
    let d = &s.disk;
    let _ = write!(
        h,
        "<section id=\"tiers\"><h2>Memory and disk</h2>\
         <div>memory: {} of {} · {} entries</div>{}\
         <div>disk: {} of {} · {} entries</div>{}\
         <div class=\"muted\">{} pinned until uploaded · {} evictions</div></section>",
        size(m.bytes),
        size(m.max_bytes),
        m.entries,
        bar(m.bytes, m.max_bytes),
        size(d.usage.bytes),
        size(d.usage.max_bytes),
        d.usage.entries,
        bar(d.usage.bytes, d.usage.max_bytes),
        size(d.pinned_bytes),
        d.evictions,
    );
}

fn remote(h: &mut String, s: &Status) {
    h.push_str("<section id=\"s3\"><h2>S3 and write-back</h2>");
    match &s.s3 {
        None => h.push_str("<p>No S3 tier configured: a local cache only.</p>"),
        Some(s3) => {
            let (class, word) = match s3.breaker {
                "closed" => ("ok", "up"),
                _ => (
                    "bad",
                    "down: circuit breaker open, misses skip S3, writes queue",
                ),
            };
            let errors: Vec<f64> = s3.errors_per_minute.iter().map(|&n| n as f64).collect();
            let _ = write!(
                h,
                "<p>bucket <b>{}</b>: <span class=\"{class}\" id=\"s3-state\">{word}</span></p>\
                 <p>S3 errors: {} last hour, {} since start {}</p>",
                esc(&s3.bucket),
                s3.errors_last_hour,
                s3.errors_since_start,
                sparkline(&errors, "S3 errors per minute"),
            );
        }
    }
    if let Some(q) = &s.write_back {
        let depth: Vec<f64> = q.entries_per_minute.iter().map(|&n| n as f64).collect();
        let _ = write!(
            h,
            "<p>write-back queue: <b id=\"queue-entries\">{}</b> entries, {}, oldest {} {}</p>",
            q.entries,
            size(q.bytes),
            duration(q.oldest_age_seconds as f64),
            sparkline(&depth, "queue depth per minute"),
        );
    }
    if let Some(line) = &s.node_local {
        let _ = write!(h, "<p>{}</p>", esc(line.trim()));
    }
    h.push_str("</section>");
}

fn errors(h: &mut String, s: &Status) {
    h.push_str("<section class=\"wide\" id=\"errors\"><h2>Last warnings and errors</h2>");
    if s.recent_errors.is_empty() {
        h.push_str("<p class=\"muted\">None since start.</p>");
    } else {
        h.push_str("<table><tr><th>when</th><th>level</th><th>message</th></tr>");
        for e in &s.recent_errors {
            let _ = write!(
                h,
                "<tr><td>{} ago</td><td>{}</td><td>{} <span class=\"muted\">{}</span></td></tr>",
                duration(s.generated_at.saturating_sub(e.at) as f64),
                e.level,
                esc(&e.message),
                esc(&e.target),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}

/// A small line chart of `values` (a flat line for fewer than two).
pub fn sparkline(values: &[f64], label: &str) -> String {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    let values: Vec<f64> = match values {
        [] => vec![0.0, 0.0],
        [one] => vec![*one, *one],
        many => many.to_vec(),
    };
    let max = values.iter().cloned().fold(0.0, f64::max);
    let step = W / (values.len() - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if max > 0.0 {
                H - 2.0 - (v / max) * (H - 4.0)
            } else {
                H - 2.0
            };
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect();
    format!(
        "<svg class=\"spark\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"{label}\"><title>{label} (max {})</title><polyline fill=\"none\" \
         stroke=\"currentColor\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        trim_number(max),
        points.join(" ")
    )
}

/// A horizontal bar: `used` of `bound`.
fn bar(used: u64, bound: u64) -> String {
    let share = if bound > 0 {
        (used as f64 / bound as f64).min(1.0)
    } else {
        0.0
    };
    let color = if share > 0.9 { "#c62828" } else { "#2f6fde" };
    format!(
        "<svg class=\"bar\" width=\"100%\" height=\"10\" role=\"img\" aria-label=\"{:.0}% used\">\
         <rect width=\"100%\" height=\"10\" rx=\"3\" fill=\"#e1e4ea\"/>\
         <rect width=\"{:.1}%\" height=\"10\" rx=\"3\" fill=\"{color}\"/></svg>",
        share * 100.0,
        share * 100.0
    )
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("–".to_string(), |r| format!("{:.1} %", r * 100.0))
}

fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Seconds for people: `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    if whole < 3600 {
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        format!("{} h {:02} min", whole / 3600, whole % 3600 / 60)
    }
}

/// Bytes for people, in binary units.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(duration(3.25), "3.2 s");
        assert_eq!(duration(125.0), "2 min 05 s");
        assert_eq!(duration(7380.0), "2 h 03 min");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(3 << 20), "3.0 MiB");
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(ratio(None), "–");
        assert_eq!(ratio(Some(0.875)), "87.5 %");
    }

    #[test]
    fn sparklines_always_draw_a_line() {
        for values in [&[][..], &[3.0][..], &[0.0, 1.0, 4.0][..]] {
            let svg = sparkline(values, "t");
            assert!(svg.starts_with("<svg class=\"spark\""), "{svg}");
            assert!(svg.contains("<polyline"), "{svg}");
        }
        let svg = sparkline(&[0.0, 2.0], "t");
        assert!(svg.contains("points=\"0.0,26.0 120.0,2.0\""), "{svg}");
    }
}
