//! A self-contained HTML page: summary tables, throughput over time and the
//! latency percentile curves as inline SVG (no scripts, no fetches).

use std::fmt::Write as _;

use super::Report;
use crate::stats::{error_total, Role};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 280.0;
const MARGIN: f64 = 56.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A line chart; `x_labels` maps an x value to its tick label.
fn chart(
    title: &str,
    x_name: &str,
    y_name: &str,
    series: &[Series],
    x_ticks: &[(f64, String)],
    id: &str,
) -> String {
    let mut svg = String::new();
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let x_max = xs.fold(0.0f64, f64::max).max(1e-9);
    let x_max = x_ticks.iter().map(|t| t.0).fold(x_max, f64::max);
    let y_max = ys.fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let (w, h) = (WIDTH - 2.0 * MARGIN, HEIGHT - 2.0 * MARGIN);
    let px = |x: f64| MARGIN + x / x_max * w;
    let py = |y: f64| HEIGHT - MARGIN - y / y_max * h;
    let _ = write!(
        svg,
        r#"<svg id="{id}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="18" font-size="14" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        esc(title)
    );
    let _ = write!(
        svg,
        r##"<line x1="{MARGIN}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{}" stroke="#333"/>"##,
        HEIGHT - MARGIN,
        WIDTH - MARGIN,
        HEIGHT - MARGIN,
        HEIGHT - MARGIN
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{MARGIN}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(y),
            WIDTH - MARGIN,
            MARGIN - 4.0,
            py(y) + 4.0,
            short(y)
        );
    }
    let ticks: Vec<(f64, String)> = if x_ticks.is_empty() {
        (0..=5)
            .map(|i| {
                let x = x_max * f64::from(i) / 5.0;
                (x, format!("{x:.0}"))
            })
            .collect()
    } else {
        x_ticks.to_vec()
    };
    for (x, label) in ticks {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            px(x),
            HEIGHT - MARGIN + 16.0,
            esc(&label)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        HEIGHT - 12.0,
        esc(x_name),
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        esc(y_name)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            MARGIN + 8.0,
            MARGIN + 14.0 * i as f64,
            esc(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Percentile to the x axis of a percentile plot: 90 % → 1, 99 % → 2, ...
fn nines(p: f64) -> f64 {
    (-(1.0 - p / 100.0).max(1e-5).log10()).min(5.0)
}

/// The page.
pub fn render(r: &Report) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>sluice-loadtest: {}</title><style>body{{font-family:sans-serif;margin:24px;max-width:1000px}}table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}td:first-child,th:first-child{{text-align:left}}.ok{{color:#080}}.bad{{color:#b00}}</style></head><body>",
        esc(&r.scenario)
    );
    let _ = write!(
        page,
        "<h1>{}</h1><p>{}</p><p>Target <code>{}</code>, topic <code>{}</code>, seed {}, {:.1} s. Machine: {} CPUs, kernel {}, load average {:.2} → {:.2}, CPU steal {:.1} %.</p>",
        esc(&r.scenario),
        esc(r.goal.trim()),
        esc(&r.url),
        esc(&r.topic),
        r.seed,
        r.elapsed_secs,
        r.machine.cpus,
        esc(&r.machine.kernel),
        r.machine.load_start,
        r.machine.load_end,
        r.machine.steal_pct
    );
    if !r.command.is_empty() {
        let _ = write!(page, "<p>Command: <code>{}</code></p>", esc(&r.command));
    }
    page.push_str("<h2>Groups</h2><table><tr><th>group</th><th>role</th><th>protocol</th><th>conns</th><th>mode</th><th>req/s</th><th>records/s</th><th>MB/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>");
    for g in &r.groups {
        let p = g.summary.latency_ms.as_ref().or(g.summary.e2e_ms.as_ref());
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.name),
            g.role,
            esc(&g.protocol),
            g.connections,
            esc(&g.mode),
            g.requests_per_sec,
            g.records_per_sec,
            g.mb_per_sec,
            error_total(&g.summary.errors),
            f(p.map(|p| p.p50)),
            f(p.map(|p| p.p99)),
            f(p.map(|p| p.p999)),
            f(p.map(|p| p.max)),
        );
    }
    page.push_str("</table><p>Producer latency is from the intended send time in open loop (coordinated omission corrected), from the actual send in closed loop; subscriber latency is end to end, from the send time stamped in each record.</p>");
    if r.clients.len() > 1 {
        page.push_str("<h2>Per client</h2><table><tr><th>group/client</th><th>principal</th><th>per s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th></tr>");
        for c in &r.clients {
            let p = c.summary.latency_ms.as_ref().or(c.summary.e2e_ms.as_ref());
            let _ = write!(
                page,
                "<tr><td>{}/{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.group),
                c.client,
                esc(&c.principal),
                c.requests_per_sec,
                error_total(&c.summary.errors),
                p.map_or("-".into(), |p| format!("{:.2}", p.p50)),
                p.map_or("-".into(), |p| format!("{:.2}", p.p99)),
            );
        }
        page.push_str("</table>");
    }
    // Throughput over time.
    let mut groups: Vec<(String, Role)> = Vec::new();
    for t in &r.timeline {
        if !groups.iter().any(|g| g.0 == t.group && g.1 == t.role) {
            groups.push((t.group.clone(), t.role));
        }
    }
    let throughput: Vec<Series> = groups
        .iter()
        .map(|(g, role)| Series {
            name: format!(
                "{g} ({})",
                if *role == Role::Producer {
                    "records acked/s"
                } else {
                    "deliveries/s"
                }
            ),
            points: r
                .timeline
                .iter()
                .filter(|t| &t.group == g && t.role == *role)
                .map(|t| (t.t, t.records_per_sec))
                .collect(),
        })
        .collect();
    page.push_str("<h2>Throughput over time</h2>");
    page.push_str(&chart(
        "records per second",
        "seconds",
        "records/s",
        &throughput,
        &[],
        "throughput",
    ));
    let p99: Vec<Series> = groups
        .iter()
        .map(|(g, _)| Series {
            name: format!("{g} p99"),
            points: r
                .timeline
                .iter()
                .filter(|t| &t.group == g)
                .filter_map(|t| t.p99_ms.map(|v| (t.t, v)))
                .collect(),
        })
        .collect();
    page.push_str(&chart(
        "p99 latency per second",
        "seconds",
        "ms",
        &p99,
        &[],
        "p99-over-time",
    ));
    // Percentile curves.
    let curves: Vec<Series> = r
        .latency_curves
        .iter()
        .map(|c| Series {
            name: format!("{} ({})", c.group, c.kind),
            points: c.points.iter().map(|(p, ms)| (nines(*p), *ms)).collect(),
        })
        .collect();
    let ticks: Vec<(f64, String)> = [0.0, 90.0, 99.0, 99.9, 99.99, 99.999]
        .iter()
        .map(|p| (nines(*p), format!("{p}%")))
        .collect();
    page.push_str("<h2>Latency by percentile</h2>");
    page.push_str(&chart(
        "latency percentile curve",
        "percentile",
        "ms",
        &curves,
        &ticks,
        "latency-percentiles",
    ));
    if let Some(v) = &r.verification {
        let _ = write!(
            page,
            "<h2>Verification</h2><p class=\"{}\">{}: {} acknowledged records, {} subscribers ({} complete); lost {}, duplicates {}, out of order {}, unexpected {}, uncertain {}, misplaced {}.</p>",
            if v.ok { "ok" } else { "bad" },
            if v.ok { "PASSED" } else { "FAILED" },
            v.acknowledged,
            v.subscribers,
            v.subscribers_complete,
            v.lost,
            v.duplicates,
            v.out_of_order,
            v.unexpected,
            v.uncertain,
            v.placement_mismatches
        );
        for p in &v.problems {
            let _ = write!(page, "<p>{}</p>", esc(p));
        }
    }
    if let Some(i) = &r.idle {
        let _ = write!(
            page,
            "<h2>Idle connections</h2><p>{} of {} open ({} failed), {} processes, {:.1} s to open. Gateway RSS {} → {} KiB: {} KiB per connection; {} file descriptors.</p>",
            i.opened,
            i.asked,
            i.failed,
            i.processes,
            i.open_secs,
            i.server_rss_before_kib.map_or("-".into(), |v| v.to_string()),
            i.server_rss_open_kib.map_or("-".into(), |v| v.to_string()),
            i.server_kib_per_connection.map_or("-".into(), |v| format!("{v:.1}")),
            i.server_fds_open.map_or("-".into(), |v| v.to_string()),
        );
    }
    let _ = write!(
        page,
        "<h2>Resources</h2><p>Load generator CPU {:.1} s{}.</p>",
        r.resources.loadgen_cpu_secs,
        r.resources
            .server_cpu_secs
            .map_or(String::new(), |s| format!("; gateway CPU {s:.1} s"))
    );
    page.push_str("<pre>");
    page.push_str(&esc(&r.to_text()));
    page.push_str("</pre></body></html>\n");
    page
}
