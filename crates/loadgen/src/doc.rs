//! Markdown tables and PNG plots for `docs/performance-load.md`.
//!
//! The Markdown file keeps its hand-written text: only the blocks between
//! `<!-- loadgen:begin NAME -->` and `<!-- loadgen:end NAME -->` are
//! replaced. A missing file is created from a skeleton with every block.
//! Plots use plotters' bitmap backend with the DejaVu Sans font embedded
//! from the `dejavu` crate (ab_glyph): no fontconfig or freetype needed.

use crate::report::{LoadReport, LoadRun};
use crate::stack::{StackResult, StackRun};
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Block names, in skeleton order.
const BLOCKS: &[&str] = &["machine", "load", "setup", "stacks", "anchors", "plots"];

/// Writes the generated blocks of `markdown` and the plots into `img_dir`.
pub fn write(load: &Path, stacks: Option<&Path>, markdown: &Path, img_dir: &Path) -> Result<()> {
    let load: LoadRun = serde_json::from_slice(
        &std::fs::read(load).with_context(|| format!("reading {}", load.display()))?,
    )?;
    let stacks: Option<StackRun> = match stacks {
        Some(p) if p.exists() => Some(serde_json::from_slice(&std::fs::read(p)?)?),
        _ => None,
    };
    std::fs::create_dir_all(img_dir)?;
    register_font()?;
    let mut images = Vec::new();
    if !load.steps.is_empty() {
        plot_latency(&load.steps, &img_dir.join("load-latency.png"))?;
        plot_cpu(&load.steps, &img_dir.join("load-cpu.png"))?;
        images.push((
            "load-latency.png",
            "Relay delay and echo round trip against concurrent calls",
        ));
        images.push((
            "load-cpu.png",
            "Server and load-generator CPU, server RSS against concurrent calls",
        ));
    }
    if let Some(s) = &stacks {
        plot_stacks(&s.results, &img_dir.join("ws-stacks.png"))?;
        images.push((
            "ws-stacks.png",
            "Relay server CPU and RSS per WebSocket stack",
        ));
    }
    let rel = relative_dir(markdown, img_dir);
    let mut text = std::fs::read_to_string(markdown).unwrap_or_else(|_| skeleton());
    for name in BLOCKS {
        let body = match *name {
            "machine" => machine_block(&load),
            "load" => load_table(&load.steps),
            "setup" => setup_table(&load.steps),
            "stacks" => stacks.as_ref().map_or_else(
                || "_No ws_stack_bench results in this run._\n".to_owned(),
                |s| stack_table(&s.results),
            ),
            "anchors" => anchors(&load.steps, stacks.as_ref()),
            "plots" => images
                .iter()
                .map(|(f, alt)| format!("![{alt}]({rel}{f})\n"))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => unreachable!(),
        };
        text = replace_block(&text, name, &body);
    }
    std::fs::write(markdown, text).with_context(|| format!("writing {}", markdown.display()))?;
    Ok(())
}

/// Writes the `sip` block of `markdown` (an existing file: its text is
/// kept) from the JSON of `audin-loadgen run --far-end sipp`.
pub fn write_sip(load: &Path, markdown: &Path) -> Result<()> {
    let load: LoadRun = serde_json::from_slice(
        &std::fs::read(load).with_context(|| format!("reading {}", load.display()))?,
    )?;
    let text = std::fs::read_to_string(markdown)
        .with_context(|| format!("reading {}", markdown.display()))?;
    let m = &load.machine;
    let body = format!(
        "Machine: {} CPUs ({}), Linux {}; load generator, server and SIPp on the same machine.\n\n{}",
        m.cpus,
        m.cpu_model,
        m.kernel,
        sip_table(&load.steps)
    );
    let text = replace_block(&text, "sip", &body);
    std::fs::write(markdown, text).with_context(|| format!("writing {}", markdown.display()))?;
    Ok(())
}

fn relative_dir(markdown: &Path, img_dir: &Path) -> String {
    let md_dir = markdown.parent().unwrap_or(Path::new("."));
    match img_dir.strip_prefix(md_dir) {
        Ok(r) if r.as_os_str().is_empty() => String::new(),
        Ok(r) => format!("{}/", r.display()),
        Err(_) => format!("{}/", img_dir.display()),
    }
}

fn register_font() -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow::anyhow!("the embedded DejaVu Sans font did not load"))
}

/// Replaces (or appends) the block `name` in `text`.
pub fn replace_block(text: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- loadgen:begin {name} -->");
    let end = format!("<!-- loadgen:end {name} -->");
    let block = format!("{begin}\n{}{end}", ensure_nl(body));
    match (text.find(&begin), text.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &text[..a], block, &text[b + end.len()..]),
        _ => format!("{}\n{}\n", ensure_nl(text), block),
    }
}

fn ensure_nl(s: &str) -> String {
    if s.ends_with('\n') || s.is_empty() {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

fn skeleton() -> String {
    let mut s = String::from(
        "# Performance at scale (generated by `cargo xtask bench`)\n\n\
         Tables and plots below are rewritten by `audin-loadgen report`; text outside the\n\
         `loadgen:begin/end` markers is kept.\n\n",
    );
    for b in BLOCKS {
        let _ = writeln!(
            s,
            "## {b}\n\n<!-- loadgen:begin {b} -->\n<!-- loadgen:end {b} -->\n"
        );
    }
    s
}

fn machine_block(load: &LoadRun) -> String {
    let m = &load.machine;
    format!(
        "Machine: {} CPUs ({}), Linux {}; load generator and server on the same machine.\n",
        m.cpus, m.cpu_model, m.kernel
    )
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn f2(x: f64) -> String {
    format!("{x:.2}")
}

/// The load generator's column: which one, its CPU, its CPU per call-second.
fn generator(r: &LoadReport) -> String {
    format!(
        "({}) {:.0}%, {}",
        r.mode,
        r.loadgen.cpu_cores * 100.0,
        f2(r.generator_ms_per_call_second())
    )
}

fn load_table(steps: &[LoadReport]) -> String {
    let mut s = String::from(
        "| calls (held min) | frames/s (both ways) | relay delay ms p50 / p99 / p99.9 | echo RTT ms p50 / p99 | lost (not counted by server or SDK) | late > 20 ms | server CPU (% of a core) | CPU ms per call-second | server RSS KiB per call (sim recording) | load generator (kind): CPU, ms per call-second | other processes | calls | 2,000-call targets met (p99 ≤ 10 ms, 0 lost, ≤ 50 KB/call) |\n\
         |---|---:|---|---|---:|---:|---:|---:|---|---:|---:|---|---|\n",
    );
    for r in steps {
        let (cpu, ms, rss) =
            r.server
                .as_ref()
                .map_or(("–".into(), "–".into(), "–".into()), |sv| {
                    (
                        format!("{:.0}%", sv.cpu_cores * 100.0),
                        f2(sv.cpu_ms_per_call_second),
                        format!(
                            "{:.0} (~{:.0})",
                            sv.rss_per_call_kb, sv.sim_recording_per_call_kb_est
                        ),
                    )
                });
        let l = &r.latency;
        let _ = writeln!(
            s,
            "| {} ({}) | {:.0} | {} / {} / {} | {} / {} | {} ({}) | {} | {} | {} | {} | {} | {:.0}% | {} | {} |",
            r.config.calls,
            r.concurrent_calls.min,
            r.frames.relayed_per_second,
            f2(l.relay_ms.p50),
            f2(l.relay_ms.p99),
            f2(l.relay_ms.p999),
            f1(l.rtt_ms.p50),
            f1(l.rtt_ms.p99),
            r.frames.lost,
            r.frames.lost_outside_server,
            r.frames.late,
            cpu,
            ms,
            rss,
            generator(r),
            r.loadgen.other_processes_cores * 100.0,
            if r.ok {
                "all ok".to_owned()
            } else {
                format!("{} failed", r.calls_failed)
            },
            targets(r)
        );
    }
    s
}

/// The SIP step: the same figures as the load table, with SIPp's CPU kept
/// apart from the server's and from other processes'.
fn sip_table(steps: &[LoadReport]) -> String {
    let mut s = String::from(
        "| calls (held min) | frames/s (WebSocket, both ways) | relay delay ms p50 / p99 / p99.9 | echo RTT ms p50 / p99 (floor) | lost (not counted by server or SDK) / altered | late > 20 ms | server CPU (% of a core) | server CPU ms per call-second | SIPp CPU (% of a core) | load generator (kind): CPU, ms per call-second | other processes | calls |\n\
         |---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in steps {
        let (cpu, ms) = r.server.as_ref().map_or(("–".into(), "–".into()), |sv| {
            (
                format!("{:.0}%", sv.cpu_cores * 100.0),
                f2(sv.cpu_ms_per_call_second),
            )
        });
        let sipp = r
            .far_end
            .as_ref()
            .map_or("–".into(), |fe| format!("{:.0}%", fe.cpu_cores * 100.0));
        let l = &r.latency;
        let _ = writeln!(
            s,
            "| {} ({}) | {:.0} | {} / {} / {} | {} / {} ({}) | {} ({}) / {} | {} | {} | {} | {} | {} | {:.0}% | {} |",
            r.config.calls,
            r.concurrent_calls.min,
            r.frames.relayed_per_second,
            f2(l.relay_ms.p50),
            f2(l.relay_ms.p99),
            f2(l.relay_ms.p999),
            f1(l.rtt_ms.p50),
            f1(l.rtt_ms.p99),
            f1(l.rtt_floor_ms),
            r.frames.lost,
            r.frames.lost_outside_server,
            r.frames.altered,
            r.frames.late,
            cpu,
            ms,
            sipp,
            generator(r),
            r.loadgen.other_processes_cores * 100.0,
            sip_verdict(r),
        );
    }
    s
}

fn sip_verdict(r: &LoadReport) -> String {
    if r.ok {
        return "all ok".to_owned();
    }
    if r.calls_failed > 0 {
        return format!("{} failed", r.calls_failed);
    }
    // Every call of ours passed, but SIPp saw a call go wrong.
    match r.far_end.as_ref().and_then(|fe| fe.exit_code) {
        Some(code) => format!("SIPp exit code {code}"),
        None => "SIPp killed".to_owned(),
    }
}

fn targets(r: &LoadReport) -> String {
    let lat = r.latency.relay_ms.p99 <= 10.0;
    let lost = r.frames.lost == 0;
    let mem = r
        .server
        .as_ref()
        .map(|s| s.rss_per_call_kb - s.sim_recording_per_call_kb_est <= 50.0 * 1000.0 / 1024.0);
    let yes = |b: bool| if b { "yes" } else { "no" };
    format!(
        "latency {}, loss {}, memory {}",
        yes(lat),
        yes(lost),
        mem.map_or("–", yes)
    )
}

fn setup_table(steps: &[LoadReport]) -> String {
    let mut s = String::from(
        "| calls | inbound offer → started ms p50 / p99 | inbound POST → started ms p50 / p99 | outbound dial → started ms p50 / p99 (sim answers after 300 ms) | go online ms p50 / p99 | all operators online (s) | server RSS per operator online (KiB) |\n\
         |---:|---|---|---|---|---:|---:|\n",
    );
    for r in steps {
        let st = &r.setup_ms;
        let _ = writeln!(
            s,
            "| {} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} |",
            r.config.calls,
            f1(st.inbound_offer_to_started.p50),
            f1(st.inbound_offer_to_started.p99),
            f1(st.inbound_total.p50),
            f1(st.inbound_total.p99),
            f1(st.outbound_dial_to_started.p50),
            f1(st.outbound_dial_to_started.p99),
            f1(r.go_online_ms.p50),
            f1(r.go_online_ms.p99),
            f1(r.go_online_total_s),
            r.server
                .as_ref()
                .map_or("–".into(), |sv| f1(sv.rss_per_operator_kb)),
        );
    }
    s
}

fn stack_table(results: &[StackResult]) -> String {
    let mut s = String::from(
        "| stack | connections | server CPU (% of a core) | server RSS MiB | RSS KiB per connection | one-way latency ms p50 / p99 / p99.9 / max | lost | other processes |\n\
         |---|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0}% | {:.1} | {:.1} | {} / {} / {} / {} | {} | {:.0}% |",
            r.stack,
            r.connections,
            r.server_cpu_cores * 100.0,
            r.server_rss_kb as f64 / 1024.0,
            r.rss_per_connection_kb,
            f2(r.latency_ms.p50),
            f2(r.latency_ms.p99),
            f2(r.latency_ms.p999),
            f2(r.latency_ms.max),
            r.lost,
            r.other_processes_cores * 100.0
        );
    }
    s
}

fn anchors(steps: &[LoadReport], stacks: Option<&StackRun>) -> String {
    let stack_at = |name: &str, k: usize| {
        stacks.and_then(|s| {
            s.results
                .iter()
                .find(|r| r.stack == name && r.connections == k)
        })
    };
    let ours = |name: &str| {
        stack_at(name, 1000).map_or("–".to_owned(), |r| {
            format!(
                "{:.0}% of a core, {:.1} MiB RSS",
                r.server_cpu_cores * 100.0,
                r.server_rss_kb as f64 / 1024.0
            )
        })
    };
    let best = steps
        .iter()
        .filter(|r| r.ok && r.latency.relay_ms.p99 <= 20.0)
        .max_by_key(|r| r.concurrent_calls.min);
    // On the wire per direction: 160 B payload + 6 B WebSocket header (4 B
    // mask from the client) + 20 B TCP + 20 B IPv4 + 12 B timestamps option
    // + 38 B Ethernet framing = 256 B every 20 ms.
    let kbps = 256.0 * 8.0 * 50.0 / 1000.0;
    let mut s = String::from("| reference | their figure | ours |\n|---|---|---|\n");
    let _ = writeln!(
        s,
        "| fastwebsockets, 1,000 connections × 160 B / 20 ms (field notes) | 55% of a core, 13 MB RSS | relay harness `fastws`: {} |",
        ours("fastws")
    );
    let _ = writeln!(
        s,
        "| tokio-tungstenite default settings, 1,000 connections (field notes) | ~90% of a core, 136 MB RSS | relay harness `axum-default`: {}; with the server's 4 KiB buffers (`axum`): {} |",
        ours("axum-default"),
        ours("axum")
    );
    let _ = writeln!(
        s,
        "| FreeSWITCH: ~10,500 G.711 calls per gigabit | 95 kbit/s per call and direction with RTP/UDP/IP/Ethernet | {kbps:.0} kbit/s per call and direction (160 B + WebSocket + TCP/IP + Ethernet): ~{:.0} calls per gigabit, network is not our limit at 2 cores |",
        1_000_000.0 / kbps
    );
    let _ = writeln!(
        s,
        "| ITU-T G.114: one-way delay < 150 ms acceptable | 150 ms mouth-to-ear budget | {} |",
        best.map_or("–".to_owned(), |r| format!(
            "server relay (round trip above the best) adds p99 {:.1} ms at {} calls: {:.0}% of the budget",
            r.latency.relay_ms.p99,
            r.concurrent_calls.min,
            r.latency.relay_ms.p99 / 150.0 * 100.0
        ))
    );
    s
}

// ── plots ──────────────────────────────────────────────────────────────────

const W: u32 = 960;
const H: u32 = 540;

fn axis_max(v: impl Iterator<Item = f64>) -> f64 {
    let m = v.fold(0.0f64, f64::max);
    if m <= 0.0 { 1.0 } else { m * 1.15 }
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> Result<()> {
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = axis_max(series.iter().flat_map(|s| s.2.iter().map(|p| p.0)));
    let y_max = axis_max(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    for (name, color, points) in series {
        let c = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

fn pts(steps: &[LoadReport], f: impl Fn(&LoadReport) -> Option<f64>) -> Vec<(f64, f64)> {
    steps
        .iter()
        .filter_map(|r| f(r).map(|y| (r.config.calls as f64, y)))
        .collect()
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const GREY_: RGBColor = RGBColor(110, 110, 110);

fn plot_latency(steps: &[LoadReport], path: &Path) -> Result<()> {
    line_plot(
        path,
        "audin-server: delay against concurrent calls",
        "concurrent calls",
        "milliseconds",
        &[
            (
                "relay p50",
                BLUE_,
                pts(steps, |r| Some(r.latency.relay_ms.p50)),
            ),
            (
                "relay p99",
                ORANGE_,
                pts(steps, |r| Some(r.latency.relay_ms.p99)),
            ),
            (
                "relay p99.9",
                RED_,
                pts(steps, |r| Some(r.latency.relay_ms.p999)),
            ),
            (
                "echo round trip p50",
                GREY_,
                pts(steps, |r| Some(r.latency.rtt_ms.p50)),
            ),
        ],
    )
}

fn plot_cpu(steps: &[LoadReport], path: &Path) -> Result<()> {
    line_plot(
        path,
        "CPU (% of one core) and server RSS (MiB) against concurrent calls",
        "concurrent calls",
        "% of one core  /  MiB",
        &[
            (
                "server CPU %",
                BLUE_,
                pts(steps, |r| r.server.as_ref().map(|s| s.cpu_cores * 100.0)),
            ),
            (
                "load generator CPU %",
                ORANGE_,
                pts(steps, |r| Some(r.loadgen.cpu_cores * 100.0)),
            ),
            (
                "server RSS MiB at window start",
                GREEN_,
                pts(steps, |r| {
                    r.server
                        .as_ref()
                        .map(|s| s.rss_window_start_kb as f64 / 1024.0)
                }),
            ),
        ],
    )
}

fn plot_stacks(results: &[StackResult], path: &Path) -> Result<()> {
    let mut names: Vec<&str> = results.iter().map(|r| r.stack.as_str()).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    let colors = [BLUE_, ORANGE_, GREEN_, RED_, GREY_];
    let mut series = Vec::new();
    let labels: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("{n}: server CPU %"), format!("{n}: RSS MiB")))
        .collect();
    for (i, n) in names.iter().enumerate() {
        let of = |f: &dyn Fn(&StackResult) -> f64| -> Vec<(f64, f64)> {
            results
                .iter()
                .filter(|r| r.stack == *n)
                .map(|r| (r.connections as f64, f(r)))
                .collect()
        };
        series.push((
            labels[i].0.as_str(),
            colors[i % colors.len()],
            of(&|r| r.server_cpu_cores * 100.0),
        ));
    }
    for (i, n) in names.iter().enumerate() {
        let p: Vec<(f64, f64)> = results
            .iter()
            .filter(|r| r.stack == *n)
            .map(|r| (r.connections as f64, r.server_rss_kb as f64 / 1024.0))
            .collect();
        let c = colors[i % colors.len()];
        series.push((
            labels[i].1.as_str(),
            RGBColor(c.0 / 2 + 100, c.1 / 2 + 100, c.2 / 2 + 100),
            p,
        ));
    }
    line_plot(
        path,
        "Relay harness: 160 B every 20 ms per connection",
        "WebSocket connections",
        "% of one core  /  MiB",
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::replace_block;

    #[test]
    fn blocks_are_replaced_or_appended() {
        let t = "intro\n<!-- loadgen:begin a -->\nold\n<!-- loadgen:end a -->\noutro\n";
        let r = replace_block(t, "a", "new");
        assert_eq!(
            r,
            "intro\n<!-- loadgen:begin a -->\nnew\n<!-- loadgen:end a -->\noutro\n"
        );
        let r = replace_block("x", "b", "y\n");
        assert!(r.ends_with("<!-- loadgen:begin b -->\ny\n<!-- loadgen:end b -->\n"));
    }
}
