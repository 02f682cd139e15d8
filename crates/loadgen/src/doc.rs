//! Markdown tables and PNG plots: `docs/performance-load.md` ([`write`]),
//! the `sip` block of `docs/performance.md` ([`write_sip`]) and the
//! `cluster` block of `docs/performance-cluster.md` ([`write_cluster`]).
//!
//! The Markdown file keeps its hand-written text: only the blocks between
//! `<!-- loadgen:begin NAME -->` and `<!-- loadgen:end NAME -->` are
//! replaced (a block that is missing is appended). A missing
//! `performance-load.md` is created from a skeleton with every block.
//! Plots use plotters' bitmap backend with the DejaVu Sans font embedded
//! from the `dejavu` crate (ab_glyph): no fontconfig or freetype needed.

use crate::cluster::{ClusterRun, ClusterStep};
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
    let load: LoadRun = read_json(load)?;
    let stacks: Option<StackRun> = match stacks {
        Some(p) if p.exists() => Some(read_json(p)?),
        _ => None,
    };
    let mut images = draw(
        &load.steps,
        img_dir,
        &[
            (
                "load-latency.png",
                "Relay delay and echo round trip against concurrent calls",
                plot_latency,
            ),
            (
                "load-cpu.png",
                "Server and load-generator CPU, server RSS against concurrent calls",
                plot_cpu,
            ),
            (
                "load-cpu-per-call.png",
                "Server and load-generator CPU per call-second against concurrent calls",
                plot_cpu_per_call,
            ),
            (
                "load-memory.png",
                "Server RSS per call, with and without the operator's presence session",
                plot_memory,
            ),
        ],
    )?;
    if let Some(s) = &stacks {
        images.extend(draw(
            &s.results,
            img_dir,
            &[(
                "ws-stacks.png",
                "Relay server CPU and RSS per WebSocket stack",
                plot_stacks,
            )],
        )?);
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
            "plots" => image_refs(&rel, &images),
            _ => unreachable!(),
        };
        text = replace_block(&text, name, &body);
    }
    std::fs::write(markdown, text).with_context(|| format!("writing {}", markdown.display()))?;
    Ok(())
}

/// Writes the `sip` block of `markdown` (an existing file: its text is
/// kept) from the JSON of `audin-loadgen run --far-end sipp`: the table,
/// and the plots (`sip-*.png` in `img_dir`) it references.
pub fn write_sip(load: &Path, markdown: &Path, img_dir: &Path) -> Result<()> {
    let load: LoadRun = read_json(load)?;
    let images = draw(
        &load.steps,
        img_dir,
        &[
            (
                "sip-cpu.png",
                "SIP path: server and SIPp CPU per call-second against concurrent calls",
                plot_sip_cpu,
            ),
            (
                "sip-latency.png",
                "SIP path: relay delay p50 and p99 against concurrent calls",
                plot_sip_latency,
            ),
            (
                "sip-memory.png",
                "SIP path: server RSS per call against concurrent calls",
                plot_sip_memory,
            ),
        ],
    )?;
    let m = &load.machine;
    let body = format!(
        "Machine: {} CPUs ({}), Linux {}; load generator, server and SIPp on the same machine.\n\n{}\n{}",
        m.cpus,
        m.cpu_model,
        m.kernel,
        sip_table(&load.steps),
        image_refs(&relative_dir(markdown, img_dir), &images),
    );
    write_block(markdown, "sip", &body)
}

/// Writes the `cluster` block of `markdown` (an existing file: its text is
/// kept) from the JSON of `audin-relay-latency --json`: the table, and the
/// plots (`cluster-*.png` in `img_dir`) it references.
pub fn write_cluster(load: &Path, markdown: &Path, img_dir: &Path) -> Result<()> {
    let run: ClusterRun = read_json(load)?;
    let images = draw(
        &run.steps,
        img_dir,
        &[
            (
                "cluster-cpu.png",
                "Cluster: servers + NATS and nats-server CPU per call-second against concurrent calls, per mode",
                plot_cluster_cpu,
            ),
            (
                "cluster-latency.png",
                "Cluster: frame round trip p50 and p99 against concurrent calls, per mode",
                plot_cluster_latency,
            ),
            (
                "cluster-memory.png",
                "Cluster: server and nats-server RSS per call against concurrent calls, per mode",
                plot_cluster_memory,
            ),
        ],
    )?;
    let m = &run.machine;
    let nodes = run.steps.iter().map(|s| s.nodes).max().unwrap_or(0);
    let body = format!(
        "Machine: {} CPUs ({}), Linux {}; `{}` with a {} `audin-server`, up to {nodes} nodes, {} s per run; nodes, nats-server, PostgreSQL and the SDK operators on the same machine.\n\n{}\n{}",
        m.cpus,
        m.cpu_model,
        m.kernel,
        if run.tool.is_empty() {
            "audin-relay-latency"
        } else {
            &run.tool
        },
        if run.server_build.is_empty() {
            "release"
        } else {
            &run.server_build
        },
        run.secs,
        cluster_table(&run.steps),
        image_refs(&relative_dir(markdown, img_dir), &images),
    );
    write_block(markdown, "cluster", &body)
}

/// A JSON results file.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Rewrites (or appends) the block `name` of the existing file `markdown`;
/// the rest of its text is kept.
fn write_block(markdown: &Path, name: &str, body: &str) -> Result<()> {
    let text = std::fs::read_to_string(markdown)
        .with_context(|| format!("reading {}", markdown.display()))?;
    std::fs::write(markdown, replace_block(&text, name, body))
        .with_context(|| format!("writing {}", markdown.display()))
}

/// One plot: its file name, its alt text, and how it is drawn.
type Plot<T> = (&'static str, &'static str, fn(&[T], &Path) -> Result<()>);

/// Draws `plots` of `steps` into `img_dir` (none when there are no
/// steps); their file names and alt texts, for [`image_refs`].
fn draw<T>(
    steps: &[T],
    img_dir: &Path,
    plots: &[Plot<T>],
) -> Result<Vec<(&'static str, &'static str)>> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(img_dir)?;
    register_font()?;
    plots
        .iter()
        .map(|(file, alt, plot)| {
            plot(steps, &img_dir.join(file))?;
            Ok((*file, *alt))
        })
        .collect()
}

/// Markdown image references, one paragraph each.
fn image_refs(rel: &str, images: &[(&str, &str)]) -> String {
    images
        .iter()
        .map(|(f, alt)| format!("![{alt}]({rel}{f})\n"))
        .collect::<Vec<_>>()
        .join("\n")
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

/// The cluster runs: one row per mode × calls.
fn cluster_table(steps: &[ClusterStep]) -> String {
    let mut s = String::from(
        "| calls | mode | nodes | relayed calls | frames sent / lost / altered | RTT ms p50 / p99, all calls | local calls p50 / p99 | relayed calls p50 / p99 | CPU ms per call-second: nodes (1 / 2 / …) | nats-server | servers + NATS | generator (SDK operators) | whole machine (% of all cores) | nodes' RSS MiB | RSS KiB per call: nodes (with its operator) | nats-server | rest of the machine, % of a core |\n\
         |---:|---|---:|---:|---|---|---|---|---|---:|---:|---:|---|---:|---|---:|---:|\n",
    );
    let pp = |r: Option<crate::cluster::Rtt>| {
        r.map_or("–".to_owned(), |r| {
            format!("{} / {}", f2(r.p50), f2(r.p99))
        })
    };
    let opt = |v: Option<f64>| v.map_or("–".to_owned(), f2);
    for r in steps {
        let c = &r.cpu_ms_per_call_second;
        let nodes_cpu = c.nodes.iter().map(|&v| f2(v)).collect::<Vec<_>>();
        let rest = if r.window_s > 0.0 {
            format!("{:.0}%", r.cpu_s.rest_of_machine / r.window_s * 100.0)
        } else {
            "–".to_owned()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} | {} | {} | {} ({:.0}%) | {:.1} | {} ({}) | {} | {} |",
            r.calls,
            r.mode,
            r.nodes,
            r.relayed_calls,
            r.frames.sent,
            r.frames.lost,
            r.frames.altered,
            pp(r.rtt_ms),
            pp(r.rtt_local_ms),
            pp(r.rtt_relayed_ms),
            nodes_cpu.join(" / "),
            opt(c.nats_server),
            f2(c.servers_and_nats),
            f2(c.generator),
            f2(c.whole_machine),
            r.whole_machine_share * 100.0,
            r.nodes_rss_kb() as f64 / 1024.0,
            f1(r.rss_per_call_kb.nodes),
            f1(r.rss_per_call_kb.nodes_with_operator),
            r.rss_per_call_kb.nats_server.map_or("–".to_owned(), f1),
            rest,
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

/// 0, or below it when a value is (an RSS difference can be).
fn axis_min(v: impl Iterator<Item = f64>) -> f64 {
    let m = v.fold(0.0f64, f64::min);
    if m < 0.0 { m * 1.15 } else { 0.0 }
}

/// A line's label, colour and (x, y) points.
type Series = (String, RGBColor, Vec<(f64, f64)>);

/// The upper corner the lines leave free: upper left when they end higher
/// than they start (latency, CPU against calls), upper right when they
/// fall (costs per call, as fixed costs spread over more calls).
fn legend_corner(series: &[Series]) -> SeriesLabelPosition {
    let (mut first, mut last) = (0.0, 0.0);
    for (_, _, p) in series {
        if let (Some(a), Some(b)) = (p.first(), p.last()) {
            first += a.1;
            last += b.1;
        }
    }
    if first > last {
        SeriesLabelPosition::UpperRight
    } else {
        SeriesLabelPosition::UpperLeft
    }
}

fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = axis_max(series.iter().flat_map(|s| s.2.iter().map(|p| p.0)));
    let y_max = axis_max(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)));
    let y_min = axis_min(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, y_min..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    for (name, color, points) in series.iter().filter(|s| !s.2.is_empty()) {
        let c = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(legend_corner(series))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

/// A measured step, placed on the x axis by its concurrent calls.
trait AtCalls {
    fn calls(&self) -> usize;
}

impl AtCalls for LoadReport {
    fn calls(&self) -> usize {
        self.config.calls
    }
}

impl AtCalls for ClusterStep {
    fn calls(&self) -> usize {
        self.calls
    }
}

/// (calls, `f`) of every step `f` has a value for, by calls.
fn pts<T: AtCalls>(steps: &[T], f: impl Fn(&T) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = steps
        .iter()
        .filter_map(|r| f(r).map(|y| (r.calls() as f64, y)))
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p
}

/// What a line plots of a step (`None`: no point for it).
type Value<'a, T> = &'a dyn Fn(&T) -> Option<f64>;

/// `(label, colour, f)` for each line of a plot over `steps`.
fn series<T: AtCalls>(steps: &[T], lines: &[(&str, RGBColor, Value<'_, T>)]) -> Vec<Series> {
    lines
        .iter()
        .map(|(name, color, f)| ((*name).to_owned(), *color, pts(steps, f)))
        .collect()
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const GREY_: RGBColor = RGBColor(110, 110, 110);
/// One colour per group (stack, mode), in order.
const PALETTE: [RGBColor; 5] = [BLUE_, ORANGE_, GREEN_, RED_, GREY_];

/// A lighter shade of `c`, for a group's secondary line.
fn light(c: RGBColor) -> RGBColor {
    RGBColor(c.0 / 2 + 100, c.1 / 2 + 100, c.2 / 2 + 100)
}

fn plot_latency(steps: &[LoadReport], path: &Path) -> Result<()> {
    line_plot(
        path,
        "audin-server: delay against concurrent calls",
        "concurrent calls",
        "milliseconds",
        &series(
            steps,
            &[
                ("relay p50", BLUE_, &|r| Some(r.latency.relay_ms.p50)),
                ("relay p99", ORANGE_, &|r| Some(r.latency.relay_ms.p99)),
                ("relay p99.9", RED_, &|r| Some(r.latency.relay_ms.p999)),
                ("echo round trip p50", GREY_, &|r| {
                    Some(r.latency.rtt_ms.p50)
                }),
            ],
        ),
    )
}

fn plot_cpu(steps: &[LoadReport], path: &Path) -> Result<()> {
    line_plot(
        path,
        "CPU (% of one core) and server RSS (MiB) against concurrent calls",
        "concurrent calls",
        "% of one core  /  MiB",
        &series(
            steps,
            &[
                ("server CPU %", BLUE_, &|r| {
                    r.server.as_ref().map(|s| s.cpu_cores * 100.0)
                }),
                ("load generator CPU %", ORANGE_, &|r| {
                    Some(r.loadgen.cpu_cores * 100.0)
                }),
                ("server RSS MiB at window start", GREEN_, &|r| {
                    r.server
                        .as_ref()
                        .map(|s| s.rss_window_start_kb as f64 / 1024.0)
                }),
            ],
        ),
    )
}

fn plot_cpu_per_call(steps: &[LoadReport], path: &Path) -> Result<()> {
    line_plot(
        path,
        "CPU per call-second against concurrent calls",
        "concurrent calls",
        "ms of CPU per call-second",
        &series(
            steps,
            &[
                ("audin-server", BLUE_, &|r| {
                    r.server.as_ref().map(|s| s.cpu_ms_per_call_second)
                }),
                ("load generator", ORANGE_, &|r| {
                    Some(r.generator_ms_per_call_second())
                }),
            ],
        ),
    )
}

fn plot_memory(steps: &[LoadReport], path: &Path) -> Result<()> {
    line_plot(
        path,
        "Server RSS per call against concurrent calls",
        "concurrent calls",
        "KiB per call",
        &series(
            steps,
            &[
                ("call path", GREEN_, &|r| {
                    r.server.as_ref().map(|s| s.rss_per_call_kb)
                }),
                ("with the operator's presence session", BLUE_, &|r| {
                    r.server
                        .as_ref()
                        .map(|s| s.rss_per_call_kb + s.rss_per_operator_kb)
                }),
            ],
        ),
    )
}

fn plot_sip_cpu(steps: &[LoadReport], path: &Path) -> Result<()> {
    line_plot(
        path,
        "SIP path: CPU per call-second against concurrent calls",
        "concurrent SIP calls",
        "ms of CPU per call-second",
        &series(
            steps,
            &[
                ("audin-server", BLUE_, &|r| {
                    r.server.as_ref().map(|s| s.cpu_ms_per_call_second)
                }),
                ("SIPp (far end, echo)", GREY_, &|r| {
                    r.far_end
                        .as_ref()
                        .map(|fe| fe.cpu_cores * 1000.0 / r.config.calls.max(1) as f64)
                }),
            ],
        ),
    )
}

fn plot_sip_latency(steps: &[LoadReport], path: &Path) -> Result<()> {
    line_plot(
        path,
        "SIP path: relay delay against concurrent calls",
        "concurrent SIP calls",
        "milliseconds",
        &series(
            steps,
            &[
                ("relay p50", BLUE_, &|r| Some(r.latency.relay_ms.p50)),
                ("relay p99", ORANGE_, &|r| Some(r.latency.relay_ms.p99)),
            ],
        ),
    )
}

fn plot_sip_memory(steps: &[LoadReport], path: &Path) -> Result<()> {
    line_plot(
        path,
        "SIP path: server RSS per call against concurrent calls",
        "concurrent SIP calls",
        "KiB per call",
        &series(
            steps,
            &[("audin-server RSS per call", GREEN_, &|r| {
                r.server.as_ref().map(|s| s.rss_per_call_kb)
            })],
        ),
    )
}

/// The modes of `steps`, in the order they first appear.
fn modes(steps: &[ClusterStep]) -> Vec<&str> {
    let mut m: Vec<&str> = Vec::new();
    for s in steps {
        if !m.contains(&s.mode.as_str()) {
            m.push(&s.mode);
        }
    }
    m
}

/// Per mode: a main line (`main`, the mode's colour) and a secondary one
/// (`second`, a lighter shade; left out where it has no values).
fn per_mode(
    steps: &[ClusterStep],
    main: (&str, Value<'_, ClusterStep>),
    second: (&str, Value<'_, ClusterStep>),
) -> Vec<Series> {
    let mut out = Vec::new();
    for (i, mode) in modes(steps).into_iter().enumerate() {
        let of: Vec<ClusterStep> = steps.iter().filter(|s| s.mode == mode).cloned().collect();
        let c = PALETTE[i % PALETTE.len()];
        out.push((format!("{mode}: {}", main.0), c, pts(&of, main.1)));
        let p = pts(&of, second.1);
        if !p.is_empty() {
            out.push((format!("{mode}: {}", second.0), light(c), p));
        }
    }
    out
}

fn plot_cluster_cpu(steps: &[ClusterStep], path: &Path) -> Result<()> {
    line_plot(
        path,
        "Cluster: CPU per call-second against concurrent calls",
        "concurrent calls",
        "ms of CPU per call-second",
        &per_mode(
            steps,
            ("servers + NATS", &|r| {
                Some(r.cpu_ms_per_call_second.servers_and_nats)
            }),
            ("nats-server", &|r| r.cpu_ms_per_call_second.nats_server),
        ),
    )
}

fn plot_cluster_latency(steps: &[ClusterStep], path: &Path) -> Result<()> {
    line_plot(
        path,
        "Cluster: frame round trip against concurrent calls",
        "concurrent calls",
        "milliseconds",
        &per_mode(
            steps,
            ("round trip p99", &|r| r.rtt_ms.map(|t| t.p99)),
            ("round trip p50", &|r| r.rtt_ms.map(|t| t.p50)),
        ),
    )
}

fn plot_cluster_memory(steps: &[ClusterStep], path: &Path) -> Result<()> {
    line_plot(
        path,
        "Cluster: RSS per call against concurrent calls",
        "concurrent calls",
        "KiB per call",
        &per_mode(
            steps,
            ("nodes, call with its operator", &|r| {
                Some(r.rss_per_call_kb.nodes_with_operator)
            }),
            ("nats-server", &|r| r.rss_per_call_kb.nats_server),
        ),
    )
}

fn plot_stacks(results: &[StackResult], path: &Path) -> Result<()> {
    let mut names: Vec<&str> = results.iter().map(|r| r.stack.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let of = |n: &str, f: &dyn Fn(&StackResult) -> f64| -> Vec<(f64, f64)> {
        results
            .iter()
            .filter(|r| r.stack == n)
            .map(|r| (r.connections as f64, f(r)))
            .collect()
    };
    let mut series = Vec::new();
    for (i, n) in names.iter().enumerate() {
        series.push((
            format!("{n}: server CPU %"),
            PALETTE[i % PALETTE.len()],
            of(n, &|r| r.server_cpu_cores * 100.0),
        ));
    }
    for (i, n) in names.iter().enumerate() {
        series.push((
            format!("{n}: RSS MiB"),
            light(PALETTE[i % PALETTE.len()]),
            of(n, &|r| r.server_rss_kb as f64 / 1024.0),
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
    use crate::report::{FarEndFigures, LoadReport, LoadRun, ServerFigures};
    use std::path::PathBuf;

    /// A fresh temp dir for one test.
    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("audin-loadgen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("img")).unwrap();
        d
    }

    #[test]
    fn sip_block_has_its_table_and_plots() {
        let d = tmp("sip");
        let steps = [100, 200, 400]
            .into_iter()
            .map(|calls| {
                let mut r = LoadReport::default();
                r.config.calls = calls;
                r.latency.relay_ms.p50 = 1.0;
                r.latency.relay_ms.p99 = calls as f64 / 100.0;
                r.server = Some(ServerFigures {
                    cpu_ms_per_call_second: 1.2,
                    rss_per_call_kb: 80.0,
                    ..ServerFigures::default()
                });
                r.far_end = Some(FarEndFigures {
                    cpu_cores: 0.07,
                    ..FarEndFigures::default()
                });
                r
            })
            .collect();
        let run = LoadRun {
            steps,
            ..LoadRun::default()
        };
        std::fs::write(d.join("sip.json"), serde_json::to_vec(&run).unwrap()).unwrap();
        let md = d.join("perf.md");
        std::fs::write(
            &md,
            "# Perf\n\n<!-- loadgen:begin sip -->\n<!-- loadgen:end sip -->\nend\n",
        )
        .unwrap();
        super::write_sip(&d.join("sip.json"), &md, &d.join("img")).unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        assert!(text.contains("| 400 (0) |"), "{text}");
        for png in ["sip-cpu.png", "sip-latency.png", "sip-memory.png"] {
            assert!(text.contains(&format!("](img/{png})")), "{text}");
            assert!(std::fs::metadata(d.join("img").join(png)).unwrap().len() > 1000);
        }
        assert!(text.ends_with("<!-- loadgen:end sip -->\nend\n"), "{text}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn cluster_block_has_its_table_and_plots() {
        let d = tmp("cluster");
        let step = |mode: &str, calls: usize, p99: f64| {
            format!(
                r#"{{"mode":"{mode}","nodes":3,"calls":{calls},"windowS":2.0,"relayedCalls":0,
                "frames":{{"sent":{calls}00,"lost":0}},
                "rttMs":{{"count":10,"p50":0.1,"p90":0.2,"p99":{p99},"max":1.0}},
                "cpuMsPerCallSecond":{{"nodes":[1.0,1.0,1.0],"natsServer":0.5,"serversAndNats":3.5}},
                "rssKb":{{"nodes":[{{"windowStart":2048}}]}},
                "rssPerCallKb":{{"nodes":50.0,"nodesWithOperator":120.0,"natsServer":-3.0}}}}"#
            )
        };
        let json = format!(
            r#"{{"secs":2,"steps":[{},{},{},{}]}}"#,
            step("spread", 3, 0.5),
            step("spread-steered", 3, 0.3),
            step("spread", 9, 0.7),
            step("spread-steered", 9, 0.4)
        );
        std::fs::write(d.join("c.json"), json).unwrap();
        let md = d.join("cluster.md");
        std::fs::write(&md, "# Cluster\n").unwrap();
        super::write_cluster(&d.join("c.json"), &md, &d.join("img")).unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        assert!(
            text.contains("| 9 | spread-steered | 3 | 0 | 900 / 0 / 0 | 0.10 / 0.40 |"),
            "{text}"
        );
        for png in [
            "cluster-cpu.png",
            "cluster-latency.png",
            "cluster-memory.png",
        ] {
            assert!(text.contains(&format!("](img/{png})")), "{text}");
            assert!(std::fs::metadata(d.join("img").join(png)).unwrap().len() > 1000);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

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
