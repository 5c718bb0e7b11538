//! Every block reason end to end (SPEC §3, §6, §7): one real request per `BlockReason` through a
//! real leash, with the HTTP status, the JSON body's reason, the log line's reason and, where
//! SOCKS5 can produce the reason, the SOCKS reply. The rows come from an exhaustive `match` on
//! `BlockReason`, so a new reason does not compile until it has a row here; and the test walks
//! `BlockReason::CODES`, so a row can be neither skipped nor counted twice.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use listeners::StaticResolver;
use policy::{Answer, AskContext, BlockReason, Decider, Mode};
use serde_json::{json, Value};
use tests::{curl, policy_config, raw_request, start_proxy_with_decider, TestProxy};

/// Declines `declined.test` when asked; keeps every other `ask`.
#[derive(Debug)]
struct DeclinesOne;

impl Decider for DeclinesOne {
    fn decide<'a>(
        &'a self,
        ask: AskContext<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + 'a>> {
        let answer = match ask.request.target.host().to_string().as_str() {
            "declined.test" => Answer::Deny,
            _ => Answer::Ask,
        };
        Box::pin(async move { answer })
    }
}

/// Which leash a row's requests go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leash {
    /// Full mode, MITM on, `evil.test` denied, `**.allowed.test` and `secure.test` allowed.
    Full,
    /// Limited mode, MITM off, `**.allowed.test` allowed.
    Limited,
}

/// How a row reaches leash over HTTP.
enum HttpProbe {
    /// curl through the proxy with these arguments; `{proxy}` and `{ca}` are filled in.
    Curl(&'static [&'static str]),
    /// These bytes, sent raw to the HTTP listener.
    Raw(&'static str),
}

/// What a SOCKS5 client sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SocksAnswer {
    /// The `CONNECT` reply code (RFC 1928 §6).
    Reply(u8),
    /// The username/password status (RFC 1929 §2): no request is read after a failure.
    AuthStatus(u8),
}

/// One row: a request that produces the reason, and what each wire format says of it.
struct Row {
    leash: Leash,
    http: Option<(HttpProbe, u16, &'static str)>,
    /// The SOCKS5 request (domain, port, password) and its answer; `None` where SOCKS5 cannot
    /// produce the reason.
    socks: Option<(&'static str, u16, &'static str, SocksAnswer)>,
}

const REFUSED: SocksAnswer = SocksAnswer::Reply(0x02);

/// The row of each reason. Exhaustive, without `_`: a new reason must be given one.
fn row(reason: &BlockReason) -> Row {
    use HttpProbe::{Curl, Raw};
    let (leash, http, socks) = match reason {
        BlockReason::AllowlistMiss => (
            Leash::Full,
            Some((Curl(&["http://unknown.test/"]), 403, "blocked-by-allowlist")),
            Some(("unknown.test", 443, "tok", REFUSED)),
        ),
        BlockReason::Denylist { .. } => (
            Leash::Full,
            Some((Curl(&["http://evil.test/"]), 403, "blocked-by-denylist")),
            Some(("evil.test", 443, "tok", REFUSED)),
        ),
        BlockReason::LocalAddress { .. } => (
            Leash::Full,
            Some((Curl(&["http://127.0.0.1:9/"]), 403, "blocked-by-local-address")),
            Some(("127.0.0.1", 9, "tok", REFUSED)),
        ),
        BlockReason::MethodNotAllowed { .. } => (
            Leash::Limited,
            Some((
                Curl(&["-d", "x", "http://a.allowed.test/"]),
                403,
                "blocked-by-method-policy",
            )),
            // SOCKS5 carries no method.
            None,
        ),
        // Only SOCKS5 (and its UDP) is refused as a protocol; HTTP is refused by method.
        BlockReason::ProtocolNotAllowed => (
            Leash::Limited,
            None,
            Some(("a.allowed.test", 443, "tok", REFUSED)),
        ),
        BlockReason::MitmRequired => (
            Leash::Limited,
            Some((
                Raw("CONNECT a.allowed.test:443 HTTP/1.1\r\nHost: a.allowed.test:443\r\nProxy-Authorization: Basic YTE6dG9r\r\nConnection: close\r\n\r\n"),
                403,
                "blocked-by-mitm-required",
            )),
            // Limited mode refuses SOCKS5 without MITM as a protocol first; SOCKS5 meets
            // `mitm_required` only with an embedder's engine and no interceptor.
            None,
        ),
        BlockReason::InvalidTarget(_) => (
            Leash::Full,
            Some((
                Raw("GET http://a..b/ HTTP/1.1\r\nHost: a..b\r\nProxy-Authorization: Basic YTE6dG9r\r\nConnection: close\r\n\r\n"),
                403,
                "invalid-target",
            )),
            Some(("a..b", 443, "tok", REFUSED)),
        ),
        BlockReason::AuthFailed => (
            Leash::Full,
            Some((
                Raw("GET http://a.allowed.test/ HTTP/1.1\r\nHost: a.allowed.test\r\nProxy-Authorization: Basic YTE6d3Jvbmc=\r\nConnection: close\r\n\r\n"),
                407,
                "auth-failed",
            )),
            Some(("a.allowed.test", 443, "wrong", SocksAnswer::AuthStatus(0x01))),
        ),
        BlockReason::InvalidRequest { .. } => (
            Leash::Full,
            Some((
                Raw("POST http://a.allowed.test/ HTTP/1.1\r\nHost: a.allowed.test\r\nProxy-Authorization: Basic YTE6dG9r\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                400,
                "invalid-request",
            )),
            // A malformed handshake is logged, but SOCKS5 has no reply code for it.
            None,
        ),
        BlockReason::HostMismatch => (
            Leash::Full,
            Some((
                Curl(&["--cacert", "{ca}", "-H", "Host: other.test", "https://secure.test/"]),
                421,
                "host-mismatch",
            )),
            // Inside an intercepted SOCKS5 stream, as with CONNECT: past the SOCKS5 reply.
            None,
        ),
        BlockReason::Declined => (
            Leash::Full,
            Some((Curl(&["http://declined.test/"]), 403, "blocked-by-decider")),
            Some(("declined.test", 443, "tok", REFUSED)),
        ),
        // A credential's placeholder (SPEC §17) sent to another host; SOCKS5 carries no header.
        BlockReason::CredentialScope { .. } => (
            Leash::Full,
            Some((
                Curl(&["-H", "Authorization: Bearer {placeholder}", "http://a.allowed.test/"]),
                403,
                "blocked-by-credential-scope",
            )),
            None,
        ),
    };
    Row { leash, http, socks }
}

/// The two leashes, and where the full one's CA is.
struct Leashes {
    full: TestProxy,
    limited: TestProxy,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Leashes {
    fn start() -> Leashes {
        let dir = tempfile::tempdir().unwrap();
        // No name resolves: every block here comes before DNS, and nothing is dialled.
        let resolver = Arc::new(StaticResolver::new());
        let mut full = policy_config(&["**.allowed.test", "secure.test"], &["evil.test"], &[]);
        full.mitm.enabled = true;
        full.mitm.ca_dir = Some(dir.path().join("ca"));
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "reason-secret").unwrap();
        full.credentials = vec![leash::CredentialConfig {
            name: "reason".into(),
            hosts: vec!["secure.test".into()],
            secret_env: None,
            secret_file: Some(secret),
            env: Some("REASON_TOKEN".into()),
        }];
        let mut limited = policy_config(&["**.allowed.test"], &[], &[]);
        limited.mode = Mode::Limited;
        let decider = Arc::new(DeclinesOne);
        Leashes {
            full: start_proxy_with_decider(full, resolver.clone(), None, decider.clone()),
            limited: start_proxy_with_decider(limited, resolver, None, decider),
            ca: dir.path().join("ca/ca.pem"),
            _dir: dir,
        }
    }

    fn get(&self, leash: Leash) -> &TestProxy {
        match leash {
            Leash::Full => &self.full,
            Leash::Limited => &self.limited,
        }
    }
}

/// Sends `probe`; returns the status, the `x-proxy-error` header and the JSON body.
async fn over_http(leashes: &Leashes, leash: Leash, probe: &HttpProbe) -> (u16, String, Value) {
    let proxy = leashes.get(leash);
    let text = match probe {
        HttpProbe::Curl(args) => {
            let ca = leashes.ca.display().to_string();
            let env = leashes.full.running().env("a1");
            let placeholder = env
                .iter()
                .find(|(name, _)| name == "REASON_TOKEN")
                .map(|(_, value)| value.clone())
                .expect("the credential's placeholder");
            let mut all = vec!["-i", "--suppress-connect-headers", "-x"]
                .into_iter()
                .map(str::to_owned)
                .chain([proxy.proxy_url("a1:tok")])
                .collect::<Vec<_>>();
            all.extend(args.iter().map(|a| {
                a.replace("{ca}", &ca)
                    .replace("{placeholder}", &placeholder)
            }));
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            curl(&refs).await.text()
        }
        HttpProbe::Raw(raw) => raw_request(proxy.http, raw.as_bytes()).await,
    };
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let code = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("x-proxy-error"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    let body = serde_json::from_str(body.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("a JSON body ({e}): {text}"));
    (
        status.unwrap_or_else(|| panic!("a status: {text}")),
        code,
        body,
    )
}

/// A raw SOCKS5 `CONNECT` to the domain `host`, user `a1` with `password`: what the client is told.
async fn over_socks(socks: SocketAddr, host: &str, port: u16, password: &str) -> SocksAnswer {
    let mut bytes = vec![5u8, 1, 2, 1, 2, b'a', b'1', password.len() as u8];
    bytes.extend_from_slice(password.as_bytes());
    bytes.extend_from_slice(&[5, 1, 0, 3, host.len() as u8]);
    bytes.extend_from_slice(host.as_bytes());
    bytes.extend_from_slice(&port.to_be_bytes());
    let answer = raw_request(socks, &bytes).await.into_bytes();
    match answer.as_slice() {
        [5, 2, 1, 0, 5, reply, ..] => SocksAnswer::Reply(*reply),
        [5, 2, 1, status, ..] => SocksAnswer::AuthStatus(*status),
        other => panic!("not a SOCKS5 answer: {other:?}"),
    }
}

/// A block expected in one leash's log, in order.
struct Expected {
    leash: Leash,
    reason: &'static str,
    protocol: String,
    /// The event id the 403 body named, for blocks answered over HTTP.
    event: Option<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_block_reason_is_answered_and_logged_on_every_wire_that_can_carry_it() {
    let leashes = Leashes::start();
    let mut expected = Vec::new();
    for code in BlockReason::CODES {
        let reason: BlockReason = code.parse().expect("every code parses");
        let row = row(&reason);
        assert!(
            row.http.is_some() || row.socks.is_some(),
            "{code}: a row with no request"
        );
        if let Some((probe, status, header)) = &row.http {
            let (got, got_header, body) = over_http(&leashes, row.leash, probe).await;
            assert_eq!(
                (got, got_header.as_str()),
                (*status, *header),
                "{code}: {body}"
            );
            assert_eq!(
                (&body["blocked"], &body["reason"]),
                (&json!(true), &json!(code))
            );
            let protocol = body["protocol"].as_str().expect("a protocol").to_owned();
            expected.push(Expected {
                leash: row.leash,
                reason: code,
                protocol,
                event: Some(body["event"].as_u64().expect("an event id")),
            });
        }
        if let Some((host, port, password, answer)) = row.socks {
            let socks = leashes.get(row.leash).socks.expect("a SOCKS5 listener");
            let got = over_socks(socks, host, port, password).await;
            assert_eq!(got, answer, "{code} over SOCKS5 ({host}:{port})");
            expected.push(Expected {
                leash: row.leash,
                reason: code,
                protocol: "socks5".to_owned(),
                event: None,
            });
        }
    }
    let Leashes { full, limited, .. } = leashes;
    let logs = [
        (Leash::Full, full.stop().await),
        (Leash::Limited, limited.stop().await),
    ];
    for (leash, lines) in &logs {
        let wanted: Vec<&Expected> = expected.iter().filter(|e| e.leash == *leash).collect();
        assert_eq!(
            lines.len(),
            wanted.len(),
            "{leash:?}: one line per block: {lines:?}"
        );
        for (line, want) in lines.iter().zip(wanted) {
            assert_eq!(
                (&line["reason"], &line["protocol"]),
                (&json!(want.reason), &json!(want.protocol)),
                "{leash:?}: {line}"
            );
            if let Some(event) = want.event {
                assert_eq!(
                    line["seq"], event,
                    "the log's seq is the body's event: {line}"
                );
            }
        }
    }
    let logged: std::collections::BTreeSet<&str> = logs
        .iter()
        .flat_map(|(_, lines)| lines.iter().filter_map(|l| l["reason"].as_str()))
        .collect();
    assert_eq!(
        logged,
        BlockReason::CODES.into_iter().collect(),
        "every reason was logged"
    );
}
