use super::*;

#[track_caller]
fn check(input: &[u8], expected: &[bool]) {
    let flagged =
        |notes: &VecDeque<Option<&str>>| notes.iter().map(Option::is_some).collect::<Vec<bool>>();
    let mut whole = Tracker::default();
    whole.feed(input);
    assert_eq!(
        flagged(&whole.notes),
        expected,
        "fed at once: {:?}",
        String::from_utf8_lossy(input)
    );
    let mut bytewise = Tracker::default();
    for byte in input {
        bytewise.feed(std::slice::from_ref(byte));
    }
    assert_eq!(flagged(&bytewise.notes), expected, "fed byte by byte");
}

#[test]
fn bare_lf_heads_are_noted() {
    check(b"GET http://a/ HTTP/1.1\nHost: a\n\n", &[true]);
    check(b"GET http://a/ HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", &[true]);
    check(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", &[false]);
}

#[test]
fn notes_each_head_in_order() {
    check(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", &[false]);
    check(b"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[true]);
    check(b"POST http://a/ HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n0\r\n\r\n", &[true]);
    check(
        b"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        &[false, false],
    );
}

#[test]
fn bodies_that_look_like_heads_are_not_heads() {
    let body = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut input = format!(
        "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    input.extend_from_slice(body);
    input.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\nGET http://a/ HTTP/1.1\r\n\r\n");
    check(&input, &[false, false]);
    let mut fixed = format!(
        "PUT http://a/ HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    fixed.extend_from_slice(body);
    fixed.extend_from_slice(
        b"GET http://a/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    check(&fixed, &[false, true]);
}

#[test]
fn tunnels_and_garbage_stop_the_notes() {
    check(b"CONNECT a:443 HTTP/1.1\r\n\r\nGET x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", &[false]);
    check(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET http://a/ HTTP/1.1\r\n\r\n", &[false]);
}
