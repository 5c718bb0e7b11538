//! The request-head rules of RFC 9112 and RFC 9110 as one table, run on every path a request head
//! can take into leash: the listener (absolute-form) and the inside of an intercepted tunnel
//! (origin-form). Each row is a raw head, the clause it tests, and what each path must do with it:
//! refuse it (status, the JSON body's reason, and a log line with that event number and detail),
//! or forward it (and the origin gets exactly the method, request-target and `Host` expected).
//!
//! HTTP/2 does not exist in leash yet. When it does, it becomes a third `Path`: most rows (the
//! line-level ones) have no h2 form, so `Row` will grow an `h2: Option<Expect>` column and the rows
//! that have one (Host, request-target forms, fragments, CONNECT) will be sent as h2 frames.

use tests::{closed, exchange, log_line, Intercepting, Origin, RawResponse, TestCa};
use tokio::io::{AsyncRead, AsyncWrite};

/// What a path must do with a head.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Refused with this status, JSON `reason` and a log line whose `detail` contains the text.
    Refused(u16, &'static str, &'static str),
    /// Forwarded: the origin sees this method and request-target, and `Host` naming the target.
    Forwarded(&'static str, &'static str),
}

use Expect::{Forwarded, Refused};

const fn bad(detail: &'static str) -> Expect {
    Refused(400, "invalid_request", detail)
}

const fn unsupported(detail: &'static str) -> Expect {
    Refused(505, "invalid_request", detail)
}

/// One head. `{t}` is the natural target of `/p` on the path (`http://origin.test:PORT/p` on the
/// listener, `/p` in a tunnel), `{a}` the absolute URI's scheme and authority (`http://…` or
/// `https://secure.test`), `{h}` the target's authority as `Host` names it.
struct Row {
    head: &'static str,
    clause: &'static str,
    listener: Expect,
    intercepted: Expect,
}

const fn row(head: &'static str, clause: &'static str, both: Expect) -> Row {
    Row {
        head,
        clause,
        listener: both,
        intercepted: both,
    }
}

const GET: Expect = Forwarded("GET", "/p");

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        row("GET {t} HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3: a plain request", GET),
        // Host.
        row("GET {t} HTTP/1.1\r\n\r\n", "RFC 9112 §3.2: HTTP/1.1 without Host", bad("without Host")),
        row("GET {t} HTTP/1.1\r\nHost: {h}\r\nHost: {h}\r\n\r\n", "RFC 9112 §3.2: Host twice, equal", bad("more than one Host")),
        row("GET {t} HTTP/1.1\r\nHost: {h}\r\nhost: other.test\r\n\r\n", "RFC 9112 §3.2: Host twice, different", bad("more than one Host")),
        row("GET {t} HTTP/1.1\r\nHost: a b\r\n\r\n", "RFC 9112 §3.2: invalid Host (space)", bad("invalid Host")),
        row("GET {t} HTTP/1.1\r\nHost: user@{h}\r\n\r\n", "RFC 9112 §3.2: invalid Host (userinfo)", bad("invalid Host")),
        row("GET {t} HTTP/1.1\r\nHost: {h}:x\r\n\r\n", "RFC 9112 §3.2: invalid Host (port)", bad("invalid Host")),
        Row { head: "GET {t} HTTP/1.0\r\n\r\n", clause: "RFC 9112 §3.2: HTTP/1.0 may leave Host out; inside, it then names no host",
              listener: GET, intercepted: Refused(421, "host_mismatch", "") },
        Row { head: "GET {t} HTTP/1.1\r\nHost: \r\n\r\n", clause: "RFC 9110 §7.2: an empty Host is valid; inside, it names no host",
              listener: GET, intercepted: Refused(421, "host_mismatch", "") },
        Row { head: "GET {a}/p HTTP/1.1\r\nHost: other.test\r\n\r\n", clause: "RFC 9112 §3.2.2: the absolute-form target wins over Host",
              listener: GET, intercepted: GET },
        // Request-target forms.
        Row { head: "GET /p HTTP/1.1\r\nHost: {h}\r\n\r\n", clause: "RFC 9112 §3.2.1: origin-form is for origin servers, not a proxy",
              listener: bad("origin-form"), intercepted: GET },
        row("GET {a}/p HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3.2.2: absolute-form", GET),
        row("GET {a}?q=1 HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3.2.1: an empty path is sent as /", Forwarded("GET", "/?q=1")),
        row("OPTIONS {a} HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3.2.4: OPTIONS of a bare authority goes as *", Forwarded("OPTIONS", "*")),
        Row { head: "OPTIONS * HTTP/1.1\r\nHost: {h}\r\n\r\n", clause: "RFC 9112 §3.2.4: asterisk-form names no target at a proxy",
              listener: bad("origin-form"), intercepted: Forwarded("OPTIONS", "*") },
        row("GET * HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3.2.4: asterisk-form only with OPTIONS", bad("asterisk-form")),
        row("GET {h} HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3.2.3: authority-form only with CONNECT", bad("form")),
        row("GET p HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3.2: a relative path is no form", bad("form")),
        row("CONNECT {a}/ HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9110 §9.3.6: CONNECT with absolute-form", bad("authority-form")),
        row("CONNECT {a} HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9110 §9.3.6: CONNECT with a bare absolute URI", bad("authority-form")),
        row("CONNECT /p HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9110 §9.3.6: CONNECT with origin-form", bad("authority-form")),
        row("GET {t}#frag HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9110 §4.2.5: a fragment is never sent", bad("fragment")),
        row("GET #frag HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9110 §4.2.5: a target that is only a fragment", bad("fragment")),
        row("GET {a}#frag HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9110 §4.2.5: an empty path and a fragment", bad("fragment")),
        // Versions.
        row("GET {t} HTTP/1.2\r\nHost: {h}\r\n\r\n", "RFC 9110 §15.6.6: HTTP/1.2", unsupported("HTTP/1.2")),
        row("GET {t} HTTP/2.0\r\nHost: {h}\r\n\r\n", "RFC 9110 §15.6.6: HTTP/2.0 in an HTTP/1 head", unsupported("HTTP/2.0")),
        row("GET {t} HTTP/3.0\r\nHost: {h}\r\n\r\n", "RFC 9110 §15.6.6: HTTP/3.0 in an HTTP/1 head", unsupported("HTTP/3.0")),
        row("GET {t} http/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §2.3: the version is case-sensitive", bad("version")),
        row("GET {t} HTTP/11\r\nHost: {h}\r\n\r\n", "RFC 9112 §2.3: HTTP-version syntax", bad("version")),
        row("GET {t} HTTP/1.1x\r\nHost: {h}\r\n\r\n", "RFC 9112 §2.3: junk after the version", bad("malformed")),
        row("GET {t}\r\nHost: {h}\r\n\r\n", "RFC 9112 §3: no version (HTTP/0.9)", bad("malformed")),
        // Whitespace.
        row("GET {t} HTTP/1.1\r\nHost : {h}\r\n\r\n", "RFC 9112 §5.1: whitespace before the colon", bad("malformed")),
        row("GET {t} HTTP/1.1\r\nHost: {h}\r\nX-A: a\r\n b\r\n\r\n", "RFC 9112 §5.2: obs-fold", bad("malformed")),
        row("GET {t} HTTP/1.1\r\n X-A: a\r\nHost: {h}\r\n\r\n", "RFC 9112 §2.2: whitespace before the first field", bad("malformed")),
        row("GET {t}/a b HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3.2: whitespace in the request-target", bad("request line")),
        row("GET  {t} HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3: two spaces after the method", bad("malformed")),
        row(" GET {t} HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3: whitespace before the method", bad("malformed")),
        row("GET\t{t} HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §3: a tab for a space", bad("malformed")),
        // Line endings.
        row("GET {t} HTTP/1.1\rHost: {h}\r\n\r\n", "RFC 9112 §2.2: a bare CR", bad("malformed")),
        row("GET {t} HTTP/1.1\r\nHost: {h}\rX: 1\r\n\r\n", "RFC 9112 §2.2: a bare CR in a field", bad("malformed")),
        row("GET {t} HTTP/1.1\nHost: {h}\n\n", "RFC 9112 §2.2: bare LF (a MAY; leash refuses)", bad("bare LF")),
        row("GET {t} HTTP/1.1\r\nHost: {h}\nX: 1\r\n\r\n", "RFC 9112 §2.2: one bare LF among CRLFs", bad("bare LF")),
        row("\r\nGET {t} HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9112 §2.2: an empty line before the request", GET),
        // Fields and framing.
        row("G(T {t} HTTP/1.1\r\nHost: {h}\r\n\r\n", "RFC 9110 §9.1: the method is a token", bad("malformed")),
        row("GET {t} HTTP/1.1\r\nHost: {h}\r\nX\u{1}Y: 1\r\n\r\n", "RFC 9110 §5.1: a field name is a token", bad("malformed")),
        row("GET {t} HTTP/1.1\r\nHost: {h}\r\nX: a\u{0}b\r\n\r\n", "RFC 9110 §5.5: NUL in a field value", bad("malformed")),
        row("POST {t} HTTP/1.1\r\nHost: {h}\r\nContent-Length: abc\r\n\r\n", "RFC 9112 §6.3: an invalid Content-Length", bad("Content-Length")),
        row("POST {t} HTTP/1.1\r\nHost: {h}\r\nContent-Length: -1\r\n\r\n", "RFC 9112 §6.3: a negative Content-Length", bad("Content-Length")),
        row("POST {t} HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: gzip\r\n\r\n", "RFC 9112 §6.3: chunked is not the final coding", bad("final coding")),
        row("POST {t} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0", bad("HTTP/1.0")),
        row("POST {t} HTTP/1.1\r\nHost: {h}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "RFC 9112 §6.1: both framings", bad("smuggling")),
    ]
}

/// Where a head is sent.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// The proxy listener, absolute-form towards `origin.test` over plain HTTP.
    Listener,
    /// Inside an intercepted tunnel to `secure.test:443`.
    Intercepted,
}

impl Path {
    fn expect(self, row: &Row) -> Expect {
        match self {
            Path::Listener => row.listener,
            Path::Intercepted => row.intercepted,
        }
    }
}

/// Sends `head` and reads the answer; then, if `must_close`, whether the proxy closed.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &str,
    must_close: bool,
) -> (Option<RawResponse>, bool) {
    let response = exchange(&mut stream, head.as_bytes()).await;
    let closed = !must_close || closed(&mut stream).await;
    (response, closed)
}

/// A refusal seen on the wire, to find in the log once the proxy has stopped.
struct Logged {
    what: String,
    event: u64,
    reason: &'static str,
    detail: &'static str,
    protocol: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_rules_hold_on_every_path() {
    let ca = TestCa::new("origin CA");
    let plain = Origin::http().await;
    let secure = Origin::https(ca.server_config(&["secure.test"], &[])).await;
    let leash = Intercepting::start(secure.addr, &ca, &plain).await;
    let plain_host = format!("origin.test:{}", plain.port());
    let mut logged = Vec::new();
    for row in rows() {
        for path in [Path::Listener, Path::Intercepted] {
            let (origin, host, absolute, target) = match path {
                Path::Listener => (
                    &plain,
                    plain_host.as_str(),
                    format!("http://{plain_host}"),
                    format!("http://{plain_host}/p"),
                ),
                Path::Intercepted => (
                    &secure,
                    "secure.test",
                    "https://secure.test".to_owned(),
                    "/p".to_owned(),
                ),
            };
            let head = row
                .head
                .replace("{t}", &target)
                .replace("{a}", &absolute)
                .replace("{h}", host);
            let what = format!("{path:?}: {} ({head:?})", row.clause);
            let before = origin.seen.requests().len();
            let must_close = matches!(path.expect(&row), Refused(_, "invalid_request", _));
            let (response, closed) = match path {
                Path::Listener => {
                    let tcp = tokio::net::TcpStream::connect(leash.proxy.http)
                        .await
                        .unwrap();
                    send(tcp, &head, must_close).await
                }
                Path::Intercepted => send(leash.tunnel().await, &head, must_close).await,
            };
            let response = response.unwrap_or_else(|| panic!("{what}: no response"));
            let seen = origin.seen.requests();
            match path.expect(&row) {
                Refused(status, reason, detail) => {
                    assert_eq!(response.status, status, "{what}: {response:?}");
                    let body = response.json();
                    assert_eq!(body["reason"], reason, "{what}: {body}");
                    assert_eq!(seen.len(), before, "{what}: the origin got a request");
                    assert!(closed, "{what}: the connection stays open");
                    logged.push(Logged {
                        what,
                        event: body["event"].as_u64().expect("an event number"),
                        reason,
                        detail,
                        protocol: match path {
                            Path::Listener => "http",
                            Path::Intercepted => "https",
                        },
                    });
                }
                Forwarded(method, uri) => {
                    assert_eq!(response.status, 200, "{what}: {response:?}");
                    assert_eq!(
                        seen.len(),
                        before + 1,
                        "{what}: one request reaches the origin"
                    );
                    let got = seen.last().unwrap();
                    assert_eq!(
                        (got.method.as_str(), got.uri.as_str()),
                        (method, uri),
                        "{what}"
                    );
                    let hosts: Vec<&str> = got
                        .headers
                        .iter()
                        .filter(|(k, _)| k == "host")
                        .map(|(_, v)| v.as_str())
                        .collect();
                    assert_eq!(hosts, [host], "{what}: Host names the target, once");
                }
            }
        }
    }
    let lines = leash.proxy.stop().await;
    for refusal in logged {
        let what = &refusal.what;
        let line = log_line(&lines, refusal.event).unwrap_or_else(|| panic!("{what}: no log line"));
        assert_eq!(line["reason"], refusal.reason, "{what}: {line}");
        assert_eq!(line["protocol"], refusal.protocol, "{what}: {line}");
        let detail = line["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(refusal.detail), "{what}: {line}");
    }
}
