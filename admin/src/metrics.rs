//! `/metrics` in the Prometheus text format, from counters that are atomics on the hot path.

use std::fmt::Write;

use listeners::Tunnels;
use policy::Protocol;
use violations::ViolationLog;

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
        "Violation-log lines that could not be written.",
    );
    let _ = writeln!(
        out,
        "leash_log_errors_total {}",
        log.map_or(0, ViolationLog::log_errors)
    );
    out
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
