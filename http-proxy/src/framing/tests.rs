use super::*;

const MAX: usize = 8192;

/// Feeds `input` at once and byte by byte; checks which heads were refused (in order) and what
/// reached hyper.
#[track_caller]
fn check(input: &[u8], refused: &[bool], released: &[u8]) {
    let run = |chunk: usize| {
        let mut tracker = Tracker::new(MAX);
        for piece in input.chunks(chunk) {
            tracker.feed(piece);
        }
        let notes: Vec<bool> = tracker.notes.iter().map(Result::is_err).collect();
        (notes, tracker.out.to_vec())
    };
    for chunk in [input.len().max(1), 1, 7] {
        let (notes, out) = run(chunk);
        let what = String::from_utf8_lossy(input);
        assert_eq!(notes, refused, "fed in {chunk}s: {what:?}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(released),
            "fed in {chunk}s"
        );
    }
}

#[test]
fn good_heads_and_bodies_pass_unchanged() {
    let two = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
    check(two, &[false, false], two);
    let chunked = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
    check(chunked, &[false, false], chunked);
    // Empty lines before a request are skipped, not passed on.
    check(
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &[false],
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    );
}

#[test]
fn refused_heads_become_the_stand_in_and_nothing_follows() {
    let smuggle = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
    check(smuggle, &[true], STAND_IN);
    check(b"GET http://a/ HTTP/1.1\nHost: a\n\n", &[true], STAND_IN);
    check(
        b"GET http://a/ HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
        &[true],
        STAND_IN,
    );
    let ok = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut then_bad = ok.to_vec();
    then_bad.extend_from_slice(b"GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n");
    check(&then_bad, &[false, true], &[&ok[..], STAND_IN].concat());
}

#[test]
fn bodies_that_look_like_heads_are_not_heads() {
    let body = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut input = format!(
        "POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    input.extend_from_slice(body);
    input.extend_from_slice(
        b"\r\n0\r\nX-Trailer: 1\r\n\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    check(&input, &[false, false], &input);
}

#[test]
fn a_bad_chunk_size_ends_what_reaches_hyper() {
    let head = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    let mut input = head.to_vec();
    input.extend_from_slice(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
    check(&input, &[false], head);
}

#[test]
fn what_follows_a_connect_waits_for_its_answer() {
    let connect = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
    let next = b"GET http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let input = [&connect[..], &next[..]].concat();
    check(&input, &[false], connect);
    // Refused: what followed is the next request, checked like any other.
    let notes = FramingNotes::new(MAX);
    notes.lock().feed(&input);
    notes.answered(false);
    let tracker = notes.lock();
    let refused: Vec<bool> = tracker.notes.iter().map(Result::is_err).collect();
    assert_eq!(refused, [false, true]);
    assert_eq!(tracker.out.to_vec(), [&connect[..], STAND_IN].concat());
    drop(tracker);
    // A tunnel: what followed is the tunnel's, untouched.
    let notes = FramingNotes::new(MAX);
    notes.lock().feed(&input);
    notes.answered(true);
    notes.lock().feed(b"\x16\x03\x01 more tunnel bytes\r\n\r\n");
    let tracker = notes.lock();
    assert_eq!(tracker.notes.len(), 1);
    assert_eq!(
        tracker.out.to_vec(),
        [&input[..], b"\x16\x03\x01 more tunnel bytes\r\n\r\n"].concat()
    );
}

#[test]
fn an_endless_head_is_refused_at_the_limit() {
    let mut input = b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    input.resize(MAX + 10, b'a');
    check(&input, &[true], STAND_IN);
}

/// The status a head gets from the rules (`None`: accepted), for the cases the end-to-end table
/// (`tests/e2e/head_rules.rs`) cannot tell apart by status alone.
#[track_caller]
fn status(head: &str) -> Option<HeadStatus> {
    head::check(head.as_bytes(), MAX).err().map(|r| r.status)
}

#[test]
fn versions_are_505_only_when_well_formed() {
    use HeadStatus::*;
    for (version, expected) in [
        ("HTTP/1.1", None),
        ("HTTP/1.0", None),
        ("HTTP/1.2", Some(VersionNotSupported)),
        ("HTTP/2.0", Some(VersionNotSupported)),
        ("HTTP/9.9", Some(VersionNotSupported)),
        ("HTTP/2", Some(BadRequest)),
        ("HTTP/10.0", Some(BadRequest)),
        ("HTTPS/1.1", Some(BadRequest)),
        ("HTTP/1.1 x", Some(BadRequest)),
    ] {
        let head = format!("GET / {version}\r\nHost: a\r\n\r\n");
        assert_eq!(status(&head), expected, "{head:?}");
    }
    // A space inside the target pushes a word into the version's place: 400, not 505.
    assert_eq!(
        status("GET /a HTTP/2.0 HTTP/1.1\r\nHost: a\r\n\r\n"),
        Some(HeadStatus::BadRequest)
    );
}

#[test]
fn hosts_must_be_one_valid_authority() {
    for (host, ok) in [
        ("a", true),
        ("a:80", true),
        ("a:", true),
        ("[::1]", true),
        ("[::1]:8080", true),
        ("", true),
        ("a:x", false),
        ("a b", false),
        ("u@a", false),
        ("a/b", false),
    ] {
        let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(status(&head).is_none(), ok, "{head:?}");
    }
}

#[test]
fn options_of_a_bare_authority_is_marked() {
    let accepted = |head: &str| head::check(head.as_bytes(), MAX).unwrap().options_asterisk;
    assert!(accepted("OPTIONS http://a HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(accepted(
        "OPTIONS http://a:8080 HTTP/1.1\r\nHost: a\r\n\r\n"
    ));
    assert!(!accepted("OPTIONS http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!accepted("OPTIONS http://a?q HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!accepted("GET http://a HTTP/1.1\r\nHost: a\r\n\r\n"));
}

/// A WebSocket handshake is held like a `CONNECT`: after a `101` what follows is the WebSocket's
/// (frames are never read as requests), after anything else it is the next request.
#[test]
fn what_follows_a_websocket_handshake_waits_for_its_answer() {
    let handshake = b"GET http://a/ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let frames = b"\x81\x85GET http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let input = [&handshake[..], &frames[..]].concat();
    check(&input, &[false], handshake);
    let notes = FramingNotes::new(MAX);
    notes.lock().feed(&input);
    let mut req = hyper::Request::new(());
    assert!(notes.take_note(&mut req).is_none());
    assert!(req.extensions().get::<WebSocketHandshake>().is_some());
    notes.answered(true);
    assert_eq!(
        notes.lock().out.to_vec(),
        input,
        "the frames pass untouched"
    );
    // Refused (or answered without a `101`): the bytes are the next head, checked.
    let notes = FramingNotes::new(MAX);
    notes.lock().feed(&input);
    notes.answered(false);
    let refused: Vec<bool> = notes.lock().notes.iter().map(Result::is_err).collect();
    assert_eq!(refused, [false, true]);
}

/// Only a real handshake is held: another upgrade token, a method other than `GET`, HTTP/1.0, a
/// body, or no `Connection: upgrade` is an ordinary request (its `Upgrade` is stripped).
#[test]
fn only_websocket_handshakes_are_marked() {
    let framing = |head: &str| head::check(head.as_bytes(), MAX).unwrap().framing;
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    assert_eq!(
        framing(&format!("GET http://a/ HTTP/1.1\r\nHost: a\r\n{ws}\r\n")),
        Framing::WebSocket
    );
    for head in [
        "GET http://a/ HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
            .to_owned(),
        "GET http://a/ HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n"
            .to_owned(),
        format!("POST http://a/ HTTP/1.1\r\nHost: a\r\n{ws}\r\n"),
        format!("GET http://a/ HTTP/1.0\r\nHost: a\r\n{ws}\r\n"),
    ] {
        assert_eq!(framing(&head), Framing::Empty, "{head:?}");
    }
    let with_body = format!("GET http://a/ HTTP/1.1\r\nHost: a\r\n{ws}Content-Length: 2\r\n\r\n");
    assert_eq!(framing(&with_body), Framing::Length(2));
}
