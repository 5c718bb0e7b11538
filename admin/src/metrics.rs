//! `/metrics`: the counters live as atomics on the hot path (the violation log's `DecisionCounts`,
//! the dialer's `Tunnels`); a scrape reads them into prometheus-client's encoder, which owns the
//! exposition format (OpenMetrics text: `# HELP`/`# TYPE`, label escaping, `_total`, `# EOF`).

use std::sync::Arc;

use listeners::{Pending, Tunnels};
use policy::Protocol;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::ConstCounter,
        gauge::ConstGauge,
        MetricType::{Counter, Gauge},
    },
    registry::Registry,
};
use violations::{LogStats, ViolationLog};

/// The content type of what [`render`] returns.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders every metric.
pub(crate) fn render(
    log: Option<Arc<ViolationLog>>,
    tunnels: Arc<Tunnels>,
    pending: Option<Arc<Pending>>,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        log,
        tunnels,
        pending,
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// What one scrape reads.
#[derive(Debug)]
struct Scrape {
    log: Option<Arc<ViolationLog>>,
    tunnels: Arc<Tunnels>,
    pending: Option<Arc<Pending>>,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let rows = self
            .log
            .as_ref()
            .map(|log| log.counts().snapshot())
            .unwrap_or_default();
        let requests = Protocol::ALL.map(|protocol| {
            let total = rows
                .iter()
                .filter(|r| r.protocol == protocol)
                .map(|r| r.count);
            (vec![("protocol", protocol.as_str())], total.sum())
        });
        let help = "Requests and connections decided, by protocol.";
        counters(&mut encoder, "leash_requests", help, &requests)?;

        let decisions: Vec<(Labels<'_>, u64)> = rows
            .iter()
            .map(|row| {
                let labels = vec![
                    ("protocol", row.protocol.as_str()),
                    ("decision", row.verdict.as_str()),
                    ("reason", row.reason.unwrap_or("")),
                ];
                (labels, row.count)
            })
            .collect();
        let help = "Decisions by protocol, verdict and reason.";
        counters(&mut encoder, "leash_decisions", help, &decisions)?;

        let tunnels = &self.tunnels;
        let help = "Bytes relayed through tunnels.";
        let bytes = [(up(), tunnels.bytes_up()), (down(), tunnels.bytes_down())];
        counters(&mut encoder, "leash_tunnel_bytes", help, &bytes)?;
        let help = "HTTP body bytes forwarded (absolute-form and intercepted requests).";
        let bytes = [
            (up(), tunnels.forwarded_up()),
            (down(), tunnels.forwarded_down()),
        ];
        counters(&mut encoder, "leash_forwarded_bytes", help, &bytes)?;

        let open = ConstGauge::new(i64::try_from(tunnels.open_count()).unwrap_or(i64::MAX));
        open.encode(encoder.encode_descriptor(
            "leash_open_tunnels",
            "Tunnels open now.",
            None,
            Gauge,
        )?)?;

        held(&mut encoder, self.pending.as_deref())?;
        let stats = self.log.as_ref().map(|log| log.stats()).unwrap_or_default();
        log_lines(&mut encoder, &stats)
    }
}

/// Held asks (SPEC §14): held, timed out, answered by answer, scope and approver.
fn held(encoder: &mut DescriptorEncoder<'_>, pending: Option<&Pending>) -> std::fmt::Result {
    let counts = pending.map(Pending::counts).unwrap_or_default();
    let help = "Requests held for an answer.";
    counters(encoder, "leash_held", help, &[(vec![], counts.held)])?;
    let help = "Held requests nobody answered within ask.hold.";
    counters(
        encoder,
        "leash_held_timed_out",
        help,
        &[(vec![], counts.timed_out)],
    )?;
    let answered: Vec<(Labels<'_>, u64)> = counts
        .answered
        .iter()
        .map(|((answer, scope, by), count)| {
            let labels = vec![
                ("answer", answer.as_str()),
                ("scope", scope.as_str()),
                ("by", by.as_str()),
            ];
            (labels, *count)
        })
        .collect();
    let help = "Answers to held asks, by answer, scope and approver.";
    counters(encoder, "leash_answered", help, &answered)
}

/// Where every event went: `events = written + in_gaps + queued + unrecorded`.
fn log_lines(encoder: &mut DescriptorEncoder<'_>, stats: &LogStats) -> std::fmt::Result {
    let families = [
        (
            "leash_log_errors",
            "Failed writes to the violation log.",
            stats.errors,
        ),
        (
            "leash_log_events",
            "Events numbered for the violation log.",
            stats.events,
        ),
        (
            "leash_log_lines_written",
            "Event lines written to the violation log.",
            stats.written,
        ),
        (
            "leash_log_lines_in_gaps",
            "Events lost but named by a gap line in the log.",
            stats.in_gaps,
        ),
        (
            "leash_log_lines_unrecorded",
            "Events lost without a gap line.",
            stats.unrecorded,
        ),
    ];
    for (name, help, value) in families {
        counters(encoder, name, help, &[(vec![], value)])?;
    }
    let queued = ConstGauge::new(i64::try_from(stats.queued).unwrap_or(i64::MAX));
    let help = "Events waiting in memory for the log file.";
    queued.encode(encoder.encode_descriptor("leash_log_lines_queued", help, None, Gauge)?)
}

fn up() -> Labels<'static> {
    vec![("direction", "up")]
}

fn down() -> Labels<'static> {
    vec![("direction", "down")]
}

/// One counter family: a `# HELP`/`# TYPE` pair, then a sample per label set.
fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels<'_>, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, Counter)?;
    if let [(labels, value)] = samples {
        if labels.is_empty() {
            return ConstCounter::new(*value).encode(family);
        }
    }
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}
