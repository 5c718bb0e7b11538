use std::{
    io::{Read, Write},
    os::fd::AsRawFd,
};

use super::*;

#[track_caller]
fn parses(text: &str, expected: Option<DeciderAddr>) {
    let parsed = text.parse::<DeciderAddr>().ok();
    assert_eq!(parsed, expected, "{text}");
    if let Some(addr) = parsed {
        assert_eq!(addr.to_string(), text, "Display gives back what was parsed");
    }
}

#[test]
fn decider_addresses() {
    parses(
        "unix:/run/decider.sock",
        Some(DeciderAddr::Unix("/run/decider.sock".into())),
    );
    parses(
        "unix:rel/d.sock",
        Some(DeciderAddr::Unix("rel/d.sock".into())),
    );
    parses("fd:3", Some(DeciderAddr::Fd(3)));
    parses("fd:0", Some(DeciderAddr::Fd(0)));
    for bad in [
        "unix:",
        "fd:",
        "fd:-1",
        "fd:x",
        "fd:99999999999",
        "/run/d.sock",
        "tcp:1.2.3.4:5",
        "",
    ] {
        parses(bad, None);
    }
    let error = "nope".parse::<DeciderAddr>().unwrap_err().to_string();
    assert!(
        error.contains("unix:PATH") && error.contains("`nope`"),
        "{error}"
    );
}

fn split(chunks: &[&[u8]]) -> Vec<Line> {
    let mut lines = Lines::default();
    let mut out = Vec::new();
    for chunk in chunks {
        lines.push(chunk, |line| out.push(line));
    }
    out
}

fn text(s: &str) -> Line {
    Line::Text(s.as_bytes().to_vec())
}

#[test]
fn lines_join_chunks_and_split_at_newlines() {
    assert_eq!(
        split(&[b"a\nb", b"c\n", b"\nd"]),
        vec![text("a"), text("bc"), text("")]
    );
    assert_eq!(split(&[b"no newline yet"]), vec![]);
}

#[test]
fn an_oversize_line_is_reported_once_and_skipped_to_its_end() {
    let long = vec![b'x'; MAX_LINE + 1];
    let fits = vec![b'y'; MAX_LINE];
    let out = split(&[&long[..10], &long[10..], &long, b"\nok\n"]);
    assert_eq!(out, vec![Line::Oversize, text("ok")]);
    let mut exact = fits.clone();
    exact.push(b'\n');
    assert_eq!(split(&[&exact]), vec![Line::Text(fits)]);
}

#[test]
fn fd_takes_a_unix_stream_socket_by_its_number() {
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut taken = take_fd(ours.as_raw_fd()).expect("a socket of this process");
    drop(ours);
    taken.write_all(b"hi\n").unwrap();
    let mut buf = [0u8; 3];
    theirs.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi\n");
}

#[test]
fn fd_refuses_what_is_not_a_unix_stream_socket() {
    let file = tempfile::tempfile().unwrap();
    let error = take_fd(file.as_raw_fd()).unwrap_err();
    assert_eq!(error.to_string(), "not a unix stream socket");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let error = take_fd(udp.as_raw_fd()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    // A number no descriptor has.
    let error = take_fd(1 << 20).unwrap_err();
    assert_eq!(error.to_string(), "not an open descriptor");
}

#[track_caller]
fn wire(message: Message<'_>, expected: &str) {
    let line = Outgoing {
        v: VERSION,
        message,
    };
    assert_eq!(serde_json::to_string(&line).unwrap(), expected);
}

#[test]
fn lines_leash_writes_start_with_the_version_and_type() {
    wire(Message::Hello, r#"{"v":1,"type":"hello"}"#);
    wire(
        Message::Withdrawn { id: 7 },
        r#"{"v":1,"type":"withdrawn","id":7}"#,
    );
    let item = PendingItem {
        id: 3,
        host: "pypi.org".into(),
        port: 443,
        protocol: Protocol::Connect,
        method: "CONNECT".into(),
        path: None,
        attempt: Some("a1".into()),
        waiting: 2,
        since: 1_700_000_000,
        event: 41,
    };
    wire(
        Message::Ask((&item).into()),
        r#"{"v":1,"type":"ask","id":3,"host":"pypi.org","port":443,"protocol":"connect","method":"CONNECT","path":null,"attempt":"a1","since":1700000000,"event":41}"#,
    );
}
