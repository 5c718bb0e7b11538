//! The request-head rules of RFC 9112 and RFC 9110 as one table, run on every path a request head
//! can take into leash: the listener (absolute-form) and the inside of an intercepted tunnel
//! (origin-form). Each row is a raw head, the clause it tests, and what each path must do with it:
//! refuse it (status, the JSON body's reason, and a log line with that event number and detail),
//! or forward it (and the origin gets exactly the method, request-target and `Host` expected).
//!
//! HTTP/2 does not exist in leash yet. When it does, it becomes a third `Path`: most rows (the
//! line-level ones) have no h2 form, so `Row` will grow an `h2: Option<Expect>` column and the rows
//! that have one (Host, request-target forms, fragments, CONNECT) will be sent as h2 frames.

use tests::{closed, exchange, log_line, Intercepting, Origin, RawResponse, SeenRequest, TestCa};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

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

/// leash, with an origin behind each path.
struct Bench {
    leash: Intercepting,
    plain: Origin,
    secure: Origin,
    plain_host: String,
}

/// What one head did on one path.
struct Outcome {
    what: String,
    response: Option<RawResponse>,
    closed: bool,
    /// The requests the path's origin got meanwhile.
    reached: Vec<SeenRequest>,
    host: String,
    protocol: &'static str,
}

impl Bench {
    async fn start() -> Bench {
        let ca = TestCa::new("origin CA");
        let plain = Origin::http().await;
        let secure = Origin::https(ca.server_config(&["secure.test"], &[])).await;
        let leash = Intercepting::start(secure.addr, &ca, &plain).await;
        let plain_host = format!("origin.test:{}", plain.port());
        Bench {
            leash,
            plain,
            secure,
            plain_host,
        }
    }

    async fn run(&self, row: &Row, path: Path) -> Outcome {
        let (origin, host, absolute, protocol) = match path {
            Path::Listener => {
                let host = self.plain_host.clone();
                (&self.plain, host.clone(), format!("http://{host}"), "http")
            }
            Path::Intercepted => {
                let host = "secure.test".to_owned();
                (
                    &self.secure,
                    host,
                    "https://secure.test".to_owned(),
                    "https",
                )
            }
        };
        // A refused `CONNECT` on the listener is logged as a `connect`, whatever its form.
        let protocol = match row.head.starts_with("CONNECT") {
            true if protocol == "http" => "connect",
            _ => protocol,
        };
        let target = match path {
            Path::Listener => format!("{absolute}/p"),
            Path::Intercepted => "/p".to_owned(),
        };
        let head = (row.head.replace("{t}", &target))
            .replace("{a}", &absolute)
            .replace("{h}", &host);
        let before = origin.seen.requests().len();
        let must_close = matches!(path.expect(row), Refused(_, "invalid_request", _));
        let (response, closed) = match path {
            Path::Listener => {
                let tcp = TcpStream::connect(self.leash.proxy.http).await.unwrap();
                send(tcp, &head, must_close).await
            }
            Path::Intercepted => send(self.leash.tunnel().await, &head, must_close).await,
        };
        Outcome {
            what: format!("{path:?}: {} ({head:?})", row.clause),
            response,
            closed,
            reached: origin.seen.requests().split_off(before),
            host,
            protocol,
        }
    }
}

/// Whether `outcome` is what `expect` says; a refusal comes back to be found in the log.
fn judge(expect: Expect, outcome: Outcome) -> Result<Option<Logged>, String> {
    let what = outcome.what;
    let Some(response) = outcome.response else {
        return Err(format!("{what}: no response"));
    };
    let fail = |why: &str| Err(format!("{what}: {why}: {response:?}"));
    match expect {
        Refused(status, reason, detail) => {
            let body: serde_json::Value =
                serde_json::from_slice(&response.body).unwrap_or_default();
            if response.status != status || body["reason"] != reason {
                return fail(&format!("expected {status} {reason}"));
            }
            if !outcome.reached.is_empty() || !outcome.closed {
                return fail("the origin got it, or the connection stayed open");
            }
            Ok(Some(Logged {
                event: body["event"].as_u64().unwrap_or_default(),
                what,
                reason,
                detail,
                protocol: outcome.protocol,
            }))
        }
        Forwarded(method, uri) => {
            let [got] = outcome.reached.as_slice() else {
                return fail(&format!(
                    "{} requests reached the origin",
                    outcome.reached.len()
                ));
            };
            let hosts: Vec<&str> = (got.headers.iter())
                .filter(|(k, _)| k == "host")
                .map(|(_, v)| v.as_str())
                .collect();
            match (
                response.status,
                got.method.as_str(),
                got.uri.as_str(),
                hosts.as_slice(),
            ) {
                (200, m, u, [h]) if m == method && u == uri && *h == outcome.host => Ok(None),
                _ => fail(&format!(
                    "expected {method} {uri} with Host {}, got {got:?}",
                    outcome.host
                )),
            }
        }
    }
}

/// Whether the log has `refusal`'s line, with its reason, protocol and detail.
fn in_log(lines: &[serde_json::Value], refusal: &Logged) -> Result<(), String> {
    let what = &refusal.what;
    let Some(line) = log_line(lines, refusal.event) else {
        return Err(format!("{what}: no log line"));
    };
    let detail = line["detail"].as_str().unwrap_or_default();
    match line["reason"] == refusal.reason
        && line["protocol"] == refusal.protocol
        && detail.contains(refusal.detail)
    {
        true => Ok(()),
        false => Err(format!("{what}: {line}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_rules_hold_on_every_path() {
    let bench = Bench::start().await;
    let (mut failures, mut logged) = (Vec::new(), Vec::new());
    for row in rows() {
        for path in [Path::Listener, Path::Intercepted] {
            match judge(path.expect(&row), bench.run(&row, path).await) {
                Ok(refusal) => logged.extend(refusal),
                Err(failure) => failures.push(failure),
            }
        }
    }
    let lines = bench.leash.proxy.stop().await;
    failures.extend(
        logged
            .iter()
            .filter_map(|refusal| in_log(&lines, refusal).err()),
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        2 * rows().len(),
        failures.join("\n")
    );
}

/// A client that sends a bad head and stops sending (`printf … | nc`) still gets the refusal: the
/// end of its stream must not make the proxy drop the connection before answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_head_is_answered_after_the_client_stops_sending() {
    use tokio::io::AsyncWriteExt;
    let bench = Bench::start().await;
    let host = &bench.plain_host;
    for (head, status) in [
        (
            format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nX: a\r\n b\r\n\r\n"),
            400,
        ),
        (
            format!("GET http://{host}/ HTTP/2.0\r\nHost: {host}\r\n\r\n"),
            505,
        ),
        (format!("GET http://{host}/ HTTP/1.1\r\n\r\n"), 400),
    ] {
        let mut tcp = TcpStream::connect(bench.leash.proxy.http).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.shutdown().await.unwrap();
        let answer = tests::read_response(&mut tcp).await;
        let answer = answer.unwrap_or_else(|| panic!("{head:?}: no answer"));
        assert_eq!(answer.status, status, "{head:?}: {answer:?}");
        assert_eq!(answer.json()["reason"], "invalid_request", "{head:?}");
    }
}
