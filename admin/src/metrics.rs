//! `/metrics` in the Prometheus text format, from counters that are atomics on the hot path.

use std::fmt::Write;

use listeners::Tunnels;
use policy::Protocol;
use violations::{LogStats, ViolationLog};

/// Renders every metric.
pub(crate) fn render(log: Option<&ViolationLog>, tunnels: &Tunnels) -> String {
    let rows = log.map(|log| log.counts().snapshot()).unwrap_or_default();
    let mut out = String::new();
    metric(
        &mut out,
        "leash_requests_total",
        "counter",
        "Requests and connections decided, by protocol.",
    );
    for protocol in Protocol::ALL {
        let total: u64 = rows
            .iter()
            .filter(|(p, _, _)| *p == protocol)
            .map(|(_, _, n)| n)
            .sum();
        let _ = writeln!(
            out,
            "leash_requests_total{{protocol=\"{protocol}\"}} {total}"
        );
    }
    metric(
        &mut out,
        "leash_decisions_total",
        "counter",
        "Decisions by protocol, verdict and reason.",
    );
    for (protocol, outcome, count) in &rows {
        let (decision, reason) = match *outcome {
            "allow" => ("allow", ""),
            "allowlist_miss" => ("ask", "allowlist_miss"),
            reason => ("deny", reason),
        };
        let _ = writeln!(
            out,
            "leash_decisions_total{{protocol=\"{protocol}\",decision=\"{decision}\",reason=\"{reason}\"}} {count}"
        );
    }
    metric(
        &mut out,
        "leash_tunnel_bytes_total",
        "counter",
        "Bytes relayed through tunnels.",
    );
    let _ = writeln!(
        out,
        "leash_tunnel_bytes_total{{direction=\"up\"}} {}",
        tunnels.bytes_up()
    );
    let _ = writeln!(
        out,
        "leash_tunnel_bytes_total{{direction=\"down\"}} {}",
        tunnels.bytes_down()
    );
    metric(
        &mut out,
        "leash_forwarded_bytes_total",
        "counter",
        "HTTP body bytes forwarded (absolute-form and intercepted requests).",
    );
    let _ = writeln!(
        out,
        "leash_forwarded_bytes_total{{direction=\"up\"}} {}",
        tunnels.forwarded_up()
    );
    let _ = writeln!(
        out,
        "leash_forwarded_bytes_total{{direction=\"down\"}} {}",
        tunnels.forwarded_down()
    );
    metric(&mut out, "leash_open_tunnels", "gauge", "Tunnels open now.");
    let _ = writeln!(out, "leash_open_tunnels {}", tunnels.open_count());
    metric(
        &mut out,
        "leash_log_errors_total",
        "counter",
        "Failed writes to the violation log.",
    );
    let stats = log.map(ViolationLog::stats).unwrap_or_default();
    let _ = writeln!(out, "leash_log_errors_total {}", stats.errors);
    log_lines(&mut out, &stats);
    out
}

/// Where every event went: `events = written + in_gaps + queued + unrecorded`.
fn log_lines(out: &mut String, stats: &LogStats) {
    let families = [
        (
            "leash_log_events_total",
            "counter",
            "Events numbered for the violation log.",
            stats.events,
        ),
        (
            "leash_log_lines_written_total",
            "counter",
            "Event lines written to the violation log.",
            stats.written,
        ),
        (
            "leash_log_lines_in_gaps_total",
            "counter",
            "Events lost but named by a gap line in the log.",
            stats.in_gaps,
        ),
        (
            "leash_log_lines_queued",
            "gauge",
            "Events waiting in memory for the log file.",
            stats.queued,
        ),
        (
            "leash_log_lines_unrecorded_total",
            "counter",
            "Events lost without a gap line.",
            stats.unrecorded,
        ),
    ];
    for (name, kind, help, value) in families {
        metric(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
