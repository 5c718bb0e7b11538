use std::{net::SocketAddr, sync::Arc, thread};

use policy::{BlockReason, Decision, Mode, Protocol};

use super::*;

fn event(host: &str, decision: Decision) -> DecisionEvent {
    DecisionEvent {
        decision,
        host: host.to_owned(),
        port: 443,
        protocol: Protocol::Connect,
        method: "CONNECT".to_owned(),
        mode: Mode::Full,
        attempt: Some("a1".to_owned()),
        client: Some(SocketAddr::from(([127, 0, 0, 1], 5555))),
        path: None,
        held_ms: None,
    }
}

fn options(dir: &tempfile::TempDir) -> LogOptions {
    LogOptions {
        path: dir.path().join("v.jsonl"),
        rotation: Rotation::Never,
        log_allowed: false,
        ring: 100,
    }
}

#[test]
fn every_event_is_one_json_line_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(ViolationLog::open(&options(&dir)).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    log.record(&event(
                        &format!("h{t}-{i}.test"),
                        Decision::Ask(BlockReason::AllowlistMiss),
                    ));
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    log.close();
    let text = std::fs::read_to_string(dir.path().join("v.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 400);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as u64 + 1);
        assert_eq!(line["v"], 1);
        assert_eq!(line["decision"], "ask");
        assert_eq!(line["reason"], "allowlist_miss");
        assert_eq!(line["attempt"], "a1");
        assert_eq!(line["client"], "127.0.0.1:5555");
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(log.page(398, 10).events.len(), 2);
    let stats = log.stats();
    assert_eq!(
        (stats.events, stats.written, stats.queued, stats.errors),
        (400, 400, 0, 0)
    );
}

#[test]
fn untrusted_text_is_escaped_and_addresses_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = ViolationLog::open(&options(&dir)).unwrap();
    let mut forged = event(
        "evil\r\n{\"seq\":1}",
        Decision::Deny(BlockReason::LocalAddress {
            addrs: vec!["127.0.0.1".parse().unwrap()],
        }),
    );
    forged.attempt = Some("a\u{202e}b".to_owned());
    assert_eq!(log.record(&forged), EventId(1));
    log.close();
    let text = std::fs::read_to_string(dir.path().join("v.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(line["host"], "evil\\u{000d}\\u{000a}{\"seq\":1}");
    assert_eq!(line["attempt"], "a\\u{202e}b");
    assert_eq!(line["addrs"][0], "127.0.0.1");
    assert_eq!(line["reason"], "local_address");
}

#[test]
fn writes_after_close_are_counted_not_silently_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = ViolationLog::open(&options(&dir)).unwrap();
    log.close();
    log.record(&event(
        "late.test",
        Decision::Ask(BlockReason::AllowlistMiss),
    ));
    let stats = log.stats();
    assert_eq!((stats.events, stats.unrecorded), (1, 1));
    assert_eq!(log.page(0, 10).events.len(), 1, "the ring still has it");
}

#[test]
fn a_line_is_in_the_file_when_record_returns() {
    let dir = tempfile::tempdir().unwrap();
    let log = ViolationLog::open(&options(&dir)).unwrap();
    for seq in 1..=20u64 {
        let id = log.record(&event(
            "now.test",
            Decision::Ask(BlockReason::AllowlistMiss),
        ));
        // Read before close: nothing may still sit in a queue or a buffer of this process.
        let text = std::fs::read_to_string(dir.path().join("v.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!((id, &last["seq"]), (EventId(seq), &seq.into()));
    }
}

#[test]
fn rotation_writes_into_the_dated_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(&dir);
    options.rotation = Rotation::Hourly;
    let log = ViolationLog::open(&options).unwrap();
    log.record(&event("h.test", Decision::Ask(BlockReason::AllowlistMiss)));
    log.close();
    // Two files only if the hour turned between opening and writing.
    let mut lines = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("v.jsonl.20") && name.len() == "v.jsonl.2026-12-31-23".len(),
            "{name}"
        );
        lines += std::fs::read_to_string(dir.path().join(name))
            .unwrap()
            .lines()
            .count();
    }
    assert_eq!(lines, 1);
}
