//! The log line of SPEC §7: the one place a `DecisionEvent` becomes JSONL. A block's line carries
//! every field of its 403 body too (`blocked`, `event`, `message`; SPEC §6): `/blocked` serves these
//! lines, and a SOCKS5 client, which gets no body, finds there what an HTTP client reads in it.

use std::{borrow::Cow, net::IpAddr};

use policy::{
    escape_untrusted, AnswerEvent, ApprovedBy, AskScope, BlockReason, DecisionEvent, Mode,
    Protocol, Verdict, SCHEMA_VERSION,
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
    /// How long the request was held for an answer (SPEC §14), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    held_ms: Option<u64>,
}

/// The outcome of a held ask (SPEC §14 "Log").
#[derive(Serialize)]
struct AnswerLine<'a> {
    v: u32,
    seq: u64,
    ts: &'a str,
    kind: &'static str,
    event: u64,
    answer: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<AskScope>,
    by: ApprovedBy,
    held_ms: u64,
}

/// The JSON line for `answer` (without the newline).
pub(crate) fn render_answer(seq: u64, ts: &str, answer: &AnswerEvent) -> String {
    let line = AnswerLine {
        v: SCHEMA_VERSION,
        seq,
        ts,
        kind: "answer",
        event: answer.event.0,
        answer: answer.answer,
        scope: answer.scope,
        by: answer.by,
        held_ms: answer.held_ms,
    };
    serde_json::to_string(&line).expect("plain data serialises")
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
        // The credential's name: never its placeholder, never its secret.
        Some(BlockReason::CredentialScope { credential }) => {
            (None, Some(escape_untrusted(credential)))
        }
        Some(
            BlockReason::LocalAddress { .. }
            | BlockReason::AllowlistMiss
            | BlockReason::Denylist { .. }
            | BlockReason::MethodNotAllowed { .. }
            | BlockReason::ProtocolNotAllowed
            | BlockReason::MitmRequired
            | BlockReason::AuthFailed
            | BlockReason::HostMismatch
            | BlockReason::Declined,
        )
        | None => (None, None),
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
        held_ms: event.held_ms,
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use policy::{Decision, InvalidTarget};
    use serde_json::{json, Value};

    use super::*;

    /// A reason with every detail it can carry.
    fn detailed(reason: BlockReason) -> BlockReason {
        match reason {
            BlockReason::Denylist { .. } => BlockReason::Denylist {
                rule: "x.test".into(),
            },
            BlockReason::LocalAddress { .. } => BlockReason::LocalAddress {
                addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
            },
            BlockReason::MethodNotAllowed { .. } => BlockReason::MethodNotAllowed {
                method: "POST".into(),
            },
            BlockReason::InvalidTarget(_) => BlockReason::InvalidTarget(InvalidTarget::BadPort),
            BlockReason::InvalidRequest { .. } => BlockReason::InvalidRequest {
                detail: "bad\nchunk".into(),
            },
            BlockReason::CredentialScope { .. } => BlockReason::CredentialScope {
                credential: "github".into(),
            },
            reason @ (BlockReason::AllowlistMiss
            | BlockReason::ProtocolNotAllowed
            | BlockReason::MitmRequired
            | BlockReason::AuthFailed
            | BlockReason::HostMismatch
            | BlockReason::Declined) => reason,
        }
    }

    /// One row per reason: `reason`, `rule`, `addrs` and `detail` of its line. The exhaustive
    /// match makes a new reason state its line here.
    fn row(reason: &BlockReason) -> [Value; 4] {
        let none = Value::Null;
        match reason {
            BlockReason::AllowlistMiss => {
                [json!("allowlist_miss"), none.clone(), none.clone(), none]
            }
            BlockReason::Denylist { .. } => {
                [json!("denylist"), json!("x.test"), none.clone(), none]
            }
            BlockReason::LocalAddress { .. } => [
                json!("local_address"),
                none.clone(),
                json!(["10.0.0.1"]),
                none,
            ],
            BlockReason::MethodNotAllowed { .. } => [
                json!("method_not_allowed"),
                none.clone(),
                none.clone(),
                none,
            ],
            BlockReason::ProtocolNotAllowed => [
                json!("protocol_not_allowed"),
                none.clone(),
                none.clone(),
                none,
            ],
            BlockReason::MitmRequired => [json!("mitm_required"), none.clone(), none.clone(), none],
            BlockReason::InvalidTarget(_) => [
                json!("invalid_target"),
                none.clone(),
                none,
                json!(InvalidTarget::BadPort.to_string()),
            ],
            BlockReason::AuthFailed => [json!("auth_failed"), none.clone(), none.clone(), none],
            BlockReason::InvalidRequest { .. } => [
                json!("invalid_request"),
                none.clone(),
                none,
                json!("bad\\u{000a}chunk"),
            ],
            BlockReason::HostMismatch => [json!("host_mismatch"), none.clone(), none.clone(), none],
            BlockReason::Declined => [json!("declined"), none.clone(), none.clone(), none],
            BlockReason::CredentialScope { .. } => [
                json!("credential_scope"),
                none.clone(),
                none,
                json!("github"),
            ],
        }
    }

    #[test]
    fn every_reason_has_its_line() {
        for code in BlockReason::CODES {
            let reason = detailed(code.parse().expect("a code"));
            let expected = row(&reason);
            let event = DecisionEvent {
                decision: Decision::Deny(reason),
                host: "x.test".into(),
                port: 443,
                protocol: Protocol::Connect,
                method: "CONNECT".into(),
                mode: Mode::Full,
                attempt: None,
                client: None,
                path: None,
                held_ms: None,
            };
            let line: Value = serde_json::from_str(&render(3, "t", &event)).expect("JSON");
            let got = ["reason", "rule", "addrs", "detail"]
                .map(|k| line.get(k).cloned().unwrap_or(Value::Null));
            assert_eq!(got, expected, "{code}");
            assert_eq!(
                (&line["blocked"], &line["event"]),
                (&json!(true), &json!(3)),
                "{code}"
            );
            assert!(line["message"].is_string(), "{code}");
        }
    }
}
