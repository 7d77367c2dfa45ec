//! Markdown tables from `report.json` files, for bench/RESULTS.md.

use std::fmt::Write as _;

use serde_json::Value;

/// One table row per group of each report, then verification, idle and
/// target lines.
pub fn summarize(reports: &[(String, Value)]) -> String {
    let mut out = String::new();
    out.push_str("| run | group | protocol | conns | mode | batch | req/s | records/s | p50 ms | p99 ms | p99.9 ms | errors | loadgen / gateway CPU s | steal % |\n");
    out.push_str("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut notes = String::new();
    for (label, r) in reports {
        let cpu = format!(
            "{:.1} / {}",
            r["resources"]["loadgen_cpu_secs"].as_f64().unwrap_or(0.0),
            r["resources"]["server_cpu_secs"]
                .as_f64()
                .map_or("-".to_owned(), |v| format!("{v:.1}"))
        );
        let steal = r["machine"]["steal_pct"]
            .as_f64()
            .map_or("-".to_owned(), |v| format!("{v:.0}"));
        for g in r["groups"].as_array().into_iter().flatten() {
            let s = &g["summary"];
            let lat = if s["latency_ms"].is_null() {
                &s["e2e_ms"]
            } else {
                &s["latency_ms"]
            };
            let ms = |k: &str| {
                lat[k]
                    .as_f64()
                    .map_or("-".to_owned(), |v| format!("{v:.2}"))
            };
            let errors: u64 = s["errors"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
            let mode = match g["mode"].as_str().unwrap_or("-") {
                "open" => format!("open {:.0}/s", g["rate_per_sec"].as_f64().unwrap_or(0.0)),
                m => m.to_owned(),
            };
            let role = g["role"].as_str().unwrap_or("");
            let _ = writeln!(
                out,
                "| {label} | {}{} | {} | {} | {mode} | {} | {:.0} | {:.0} | {} | {} | {} | {errors} | {cpu} | {steal} |",
                g["name"].as_str().unwrap_or(""),
                if role == "subscriber" { " (e2e)" } else { "" },
                g["protocol"].as_str().unwrap_or(""),
                g["connections"],
                g["batch"],
                g["requests_per_sec"].as_f64().unwrap_or(0.0),
                g["records_per_sec"].as_f64().unwrap_or(0.0),
                ms("p50"),
                ms("p99"),
                ms("p999"),
            );
        }
        let v = &r["verification"];
        if !v.is_null() {
            let _ = writeln!(
                notes,
                "- {label}: verification {} — {} acknowledged records, {} of {} subscribers complete; lost {}, duplicates {}, out of order {}.",
                if v["ok"].as_bool() == Some(true) { "passed" } else { "FAILED" },
                v["acknowledged"],
                v["subscribers_complete"],
                v["subscribers"],
                v["lost"],
                v["duplicates"],
                v["out_of_order"]
            );
        }
        let i = &r["idle"];
        if !i.is_null() {
            let _ = writeln!(
                notes,
                "- {label}: {} of {} idle connections open ({} failed, {} processes, {:.1} s to open); gateway RSS {} → {} KiB, **{} KiB per connection**, {} file descriptors.",
                i["opened"],
                i["asked"],
                i["failed"],
                i["processes"],
                i["open_secs"].as_f64().unwrap_or(0.0),
                i["server_rss_before_kib"],
                i["server_rss_open_kib"],
                i["server_kib_per_connection"]
                    .as_f64()
                    .map_or("-".to_owned(), |v| format!("{v:.1}")),
                i["server_fds_open"]
            );
        }
        for t in r["targets"].as_array().into_iter().flatten() {
            let bound = match (t["min"].as_f64(), t["max"].as_f64()) {
                (Some(min), _) => format!("≥ {min}"),
                (_, Some(max)) => format!("≤ {max}"),
                _ => String::new(),
            };
            let _ = writeln!(
                notes,
                "- {label}: target {} {bound}: {}",
                t["figure"].as_str().unwrap_or(""),
                match (t["measured"].as_f64(), t["met"].as_bool()) {
                    (Some(m), Some(true)) => format!("{m:.2}, met"),
                    (Some(m), _) => format!("{m:.2}, **not met**"),
                    _ => "not measured".to_owned(),
                }
            );
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    out
}
