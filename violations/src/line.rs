//! The log line of SPEC §7: the one place a `DecisionEvent` becomes JSONL.

use std::{borrow::Cow, net::IpAddr};

use policy::{
    escape_untrusted, BlockReason, DecisionEvent, Mode, Protocol, Verdict, SCHEMA_VERSION,
};
use serde::Serialize;

#[derive(Serialize)]
struct LogLine<'a> {
    v: u32,
    seq: u64,
    ts: &'a str,
    decision: Verdict,
    reason: Option<&'static str>,
    rule: Option<&'a str>,
    host: Cow<'a, str>,
    port: u16,
    protocol: Protocol,
    method: Cow<'a, str>,
    mode: Mode,
    attempt: Option<Cow<'a, str>>,
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
    let line = LogLine {
        v: SCHEMA_VERSION,
        seq,
        ts,
        decision: decision.verdict(),
        reason: decision.reason().map(BlockReason::code),
        rule: decision.rule().map(|r| &**r),
        host: escape_untrusted(&event.host),
        port: event.port,
        protocol: event.protocol,
        method: escape_untrusted(&event.method),
        mode: event.mode,
        attempt: event.attempt.as_deref().map(escape_untrusted),
        client: event.client.map(|c| c.to_string()),
        path: event.path.as_deref().map(escape_untrusted),
        addrs,
        detail,
    };
    serde_json::to_string(&line).expect("plain data serialises")
}
