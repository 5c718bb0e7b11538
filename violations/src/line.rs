//! The log line of SPEC §7: the one place a `DecisionEvent` becomes JSONL. A block's line carries
//! every field of its 403 body too (`blocked`, `event`, `message`; SPEC §6): `/blocked` serves these
//! lines, and a SOCKS5 client, which gets no body, finds there what an HTTP client reads in it.

use std::{borrow::Cow, net::IpAddr};

use policy::{
    escape_untrusted, BlockReason, DecisionEvent, Mode, Protocol, Verdict, SCHEMA_VERSION,
};
use serde::Serialize;

use crate::queue::Gap;

#[derive(Serialize)]
struct LogLine<'a> {
    v: u32,
    seq: u64,
    ts: &'a str,
    blocked: bool,
    decision: Verdict,
    reason: Option<&'static str>,
    rule: Option<&'a str>,
    host: Cow<'a, str>,
    port: u16,
    protocol: Protocol,
    method: Cow<'a, str>,
    mode: Mode,
    attempt: Option<Cow<'a, str>>,
    /// The same number as `seq`, under the name the 403 body gives it.
    event: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    client: Option<String>,
    path: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    addrs: Option<&'a [IpAddr]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Cow<'a, str>>,
}

/// The JSON line for `event` (without the newline).
pub(crate) fn render(seq: u64, ts: &str, event: &DecisionEvent) -> String {
    let decision = &event.decision;
    let (addrs, detail) = match decision.reason() {
        Some(BlockReason::LocalAddress { addrs }) if !addrs.is_empty() => {
            (Some(addrs.as_slice()), None)
        }
        Some(BlockReason::InvalidRequest { detail }) => (None, Some(escape_untrusted(detail))),
        Some(BlockReason::InvalidTarget(error)) => (None, Some(Cow::Owned(error.to_string()))),
        _ => (None, None),
    };
    let (host, method) = (
        escape_untrusted(&event.host),
        escape_untrusted(&event.method),
    );
    let line = LogLine {
        v: SCHEMA_VERSION,
        seq,
        ts,
        blocked: !decision.is_allowed(),
        decision: decision.verdict(),
        reason: decision.reason().map(BlockReason::code),
        rule: decision.rule().map(|r| &**r),
        message: decision.message(&host, &method),
        host,
        port: event.port,
        protocol: event.protocol,
        method,
        mode: event.mode,
        attempt: event.attempt.as_deref().map(escape_untrusted),
        event: seq,
        client: event.client.map(|c| c.to_string()),
        path: event.path.as_deref().map(escape_untrusted),
        addrs,
        detail,
    };
    serde_json::to_string(&line).expect("plain data serialises")
}

/// A gap line: events `first_seq..=last_seq` that could not be written and are lost. It has no
/// `seq` of its own; `kind` tells it from an event line (which has no `kind`).
#[derive(Serialize)]
struct GapLine<'a> {
    v: u32,
    kind: &'static str,
    ts: &'a str,
    first_seq: u64,
    last_seq: u64,
    lost: u64,
    reason: &'a str,
}

/// The JSON line for `gap` (without the newline).
pub(crate) fn render_gap(ts: &str, gap: &Gap) -> String {
    let line = GapLine {
        v: SCHEMA_VERSION,
        kind: "gap",
        ts,
        first_seq: gap.first,
        last_seq: gap.last,
        lost: gap.lost(),
        reason: &gap.reason,
    };
    serde_json::to_string(&line).expect("plain data serialises")
}
