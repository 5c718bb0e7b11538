//! Tightening reaches exchanges in flight (SPEC §4): a request body still streaming when the mode
//! becomes `limited` or a deny rule lands is cut — the origin never gets the whole body, the client
//! gets the `403` and the log a line — and a response still streaming from a host a deny rule now
//! names is broken off. Exchanges the change does not refuse carry on to their end. Both ways a
//! request is forwarded: absolute-form, and inside an intercepted (MITM) tunnel.
//!
//! Real curl clients feed their bodies through a pipe at the test's pace; the origin is a real
//! HTTP server that records, frame by frame, how much of each body arrived and how each ended.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    pin::Pin,
    process::Stdio,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    body::{Body, Frame, Incoming},
    server::conn::http1,
    service::service_fn,
    Request, Response,
};
use hyper_util::rt::TokioIo;
use listeners::StaticResolver;
use serde_json::json;
use tests::{policy_config, start_proxy, LoopbackNat, TestCa, TestProxy};
use tokio::{
    io::AsyncWriteExt,
    net::TcpListener,
    process::{Child, ChildStdin},
    sync::{mpsc, watch},
};
use tokio_rustls::TlsAcceptor;

use crate::admin::call;

/// One body chunk the clients write and the origin streams.
const CHUNK: usize = 1024;
/// Chunks a body has before the policy changes (the exchange is then surely in flight).
const BEFORE: usize = 4;
/// Chunks an unaffected upload sends after the change, before it ends.
const CONTROL_AFTER: usize = 8;
/// At most this many chunks go after the change into a body that should be cut: enough to end a
/// request that nothing cuts, so the old behaviour fails the test rather than hanging it.
const VICTIM_AFTER: usize = 100;
/// Chunks a streamed response sends after it is released.
const STREAM_AFTER: usize = 16;
/// The bound on every wait for something the other side should do.
const WAIT: Duration = Duration::from_secs(15);

/// How an origin saw one body end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Read (an upload) or sent (a stream) to its end.
    Complete,
    /// The connection broke off first.
    Broken,
}

/// What the origin saw of the exchange on one path.
#[derive(Clone, Debug, Default)]
struct Record {
    /// Upload bytes received so far.
    received: usize,
    /// Stream bytes handed to the connection so far.
    sent: usize,
    end: Option<End>,
}

/// An origin (plain or TLS) that records uploads as they arrive (`/upload-*`) and streams
/// responses (`/stream-*`: `BEFORE` chunks, then, once released, `STREAM_AFTER` more).
#[derive(Clone, Debug)]
struct PacedOrigin {
    addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Record>>>,
    release: Arc<watch::Sender<bool>>,
}

impl PacedOrigin {
    async fn start(tls: Option<TlsAcceptor>) -> PacedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = PacedOrigin {
            addr: listener.local_addr().unwrap(),
            records: Arc::default(),
            release: Arc::new(watch::channel(false).0),
        };
        let serving = origin.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (origin, tls) = (serving.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                origin.serve(TokioIo::new(stream)).await;
                            }
                        }
                        None => origin.serve(TokioIo::new(stream)).await,
                    }
                });
            }
        });
        origin
    }

    async fn serve<I>(self, io: I)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let service = service_fn(move |req| {
            let origin = self.clone();
            async move { Ok::<_, Infallible>(origin.respond(req).await) }
        });
        let _ = http1::Builder::new().serve_connection(io, service).await;
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<PacedBody> {
        let path = req.uri().path().to_owned();
        if path.starts_with("/stream") {
            return self.stream(path);
        }
        let mut body = req.into_body();
        let mut received = 0;
        let end = loop {
            match body.frame().await {
                None => break End::Complete,
                Some(Err(_)) => break End::Broken,
                Some(Ok(frame)) => {
                    received += frame.data_ref().map_or(0, Bytes::len);
                    self.update(&path, |r| r.received = received);
                }
            }
        };
        self.update(&path, |r| r.end = Some(end));
        Response::new(PacedBody::Full(Full::new(Bytes::from(format!(
            "got {received}"
        )))))
    }

    /// A response whose body comes in chunks at the origin's pace, recorded as handed over.
    fn stream(&self, path: String) -> Response<PacedBody> {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let (origin, mut released) = (self.clone(), self.release.subscribe());
        tokio::spawn(async move {
            let mut sent = 0;
            for i in 0..BEFORE + STREAM_AFTER {
                if i == BEFORE {
                    let _ = tokio::time::timeout(WAIT, released.wait_for(|r| *r)).await;
                }
                if tx.send(Bytes::from(vec![b's'; CHUNK])).await.is_err() {
                    return origin.update(&path, |r| r.end = Some(End::Broken));
                }
                sent += CHUNK;
                origin.update(&path, |r| r.sent = sent);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            origin.update(&path, |r| r.end = Some(End::Complete));
        });
        Response::new(PacedBody::Stream(rx))
    }

    fn update(&self, path: &str, change: impl FnOnce(&mut Record)) {
        change(
            self.records
                .lock()
                .unwrap()
                .entry(path.to_owned())
                .or_default(),
        );
    }

    fn record(&self, path: &str) -> Record {
        let records = self.records.lock().unwrap();
        records.get(path).cloned().unwrap_or_default()
    }

    /// Waits (bounded) until the record of `path` satisfies `ok`.
    async fn wait_for(&self, path: &str, what: &str, ok: impl Fn(&Record) -> bool) -> Record {
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                let record = self.record(path);
                if ok(&record) {
                    return record;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let last = self.record(path);
        waited
            .await
            .unwrap_or_else(|_| panic!("{path}: {what} within {WAIT:?}; last seen {last:?}"))
    }
}

/// The origin's response bodies: whole, or streamed from a channel.
enum PacedBody {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            PacedBody::Full(full) => Pin::new(full).poll_frame(cx),
            PacedBody::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c)))),
        }
    }
}

/// Which way the requests reach leash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// `POST http://slow.test/…` to the proxy.
    AbsoluteForm,
    /// `CONNECT slow.test:443`, intercepted, then the request inside TLS.
    Intercepted,
    /// A SOCKS5 `CONNECT` to `slow.test:443`, intercepted the same way.
    SocksIntercepted,
}

/// How the policy tightens while the exchanges are in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tightening {
    /// `POST /mode {"mode":"limited"}`.
    Limited,
    /// `POST /rules {"deny":["slow.test"]}`.
    DenyRule,
}

/// leash (MITM on for the intercepted path) in front of one origin that answers as `slow.test`
/// and `other.test`, both at public addresses mapped onto it (nothing leaves the machine).
struct Setup {
    path: Path,
    proxy: TestProxy,
    origin: PacedOrigin,
    leash_ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(path: Path) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let origin_ca = TestCa::new("paced origin CA");
        let origin_ca_file = dir.path().join("origin-ca.pem");
        origin_ca.write_pem(&origin_ca_file);
        let tls = (path != Path::AbsoluteForm)
            .then(|| TlsAcceptor::from(origin_ca.server_config(&["slow.test", "other.test"], &[])));
        let origin = PacedOrigin::start(tls).await;
        let (slow, other): (IpAddr, IpAddr) = (
            "93.184.216.34".parse().unwrap(),
            "93.184.216.35".parse().unwrap(),
        );
        let resolver = StaticResolver::new()
            .answer("slow.test", &[slow])
            .answer("other.test", &[other]);
        let nat = LoopbackNat::default()
            .map(slow, origin.addr)
            .map(other, origin.addr);
        let mut config = policy_config(&["slow.test", "other.test"], &[], &[]);
        config.mitm.enabled = path != Path::AbsoluteForm;
        config.mitm.ca_dir = Some(dir.path().join("ca"));
        config.mitm.upstream_ca = vec![origin_ca_file];
        let proxy = start_proxy(config, Arc::new(resolver), Some(Arc::new(nat)));
        Setup {
            path,
            proxy,
            origin,
            leash_ca: dir.path().join("ca/ca.pem"),
            _dir: dir,
        }
    }

    /// curl through leash to `host` and `path`, with `extra` arguments.
    fn curl(&self, host: &str, path: &str, extra: &[&str]) -> Curl {
        let (url, proxy) = match self.path {
            Path::AbsoluteForm => (
                format!("http://{host}{path}"),
                self.proxy.proxy_url("a1:tok"),
            ),
            Path::Intercepted => (
                format!("https://{host}{path}"),
                self.proxy.proxy_url("a1:tok"),
            ),
            Path::SocksIntercepted => {
                let socks = self.proxy.socks.expect("a SOCKS5 listener");
                (
                    format!("https://{host}{path}"),
                    format!("socks5h://a1:tok@{socks}"),
                )
            }
        };
        let mut args = vec![
            "-sS".to_owned(),
            "--max-time".to_owned(),
            "30".to_owned(),
            "-x".to_owned(),
            proxy,
            "--cacert".to_owned(),
            self.leash_ca.display().to_string(),
            "-w".to_owned(),
            "\n%{http_code}".to_owned(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push(url);
        Curl::start(&args)
    }

    /// An upload of `BEFORE` chunks so far, seen by the origin.
    async fn upload_in_flight(&self, host: &str, path: &str) -> Curl {
        // Chunked from stdin, as fast as the test feeds it; no `Expect` pause.
        let mut upload = self.curl(host, path, &["-X", "POST", "-T", "-", "-H", "Expect:"]);
        upload.feed(BEFORE).await;
        self.origin
            .wait_for(path, "the first chunks arrived", |r| {
                r.received >= BEFORE * CHUNK
            })
            .await;
        upload
    }

    /// A download whose first `BEFORE` chunks the origin has handed over.
    async fn stream_in_flight(&self, host: &str, path: &str) -> Curl {
        let download = self.curl(host, path, &[]);
        self.origin
            .wait_for(path, "the first chunks went out", |r| {
                r.sent >= BEFORE * CHUNK
            })
            .await;
        download
    }

    async fn tighten(&self, how: Tightening) {
        let (path, body) = match how {
            Tightening::Limited => ("/mode", r#"{"mode":"limited"}"#),
            Tightening::DenyRule => ("/rules", r#"{"deny":["slow.test"]}"#),
        };
        let admin = self.proxy.admin_client();
        let (status, answer) = call(&admin, "POST", path, Some(body), None).await;
        assert_eq!(status, 200, "{answer}");
    }

    fn protocol(&self) -> &'static str {
        match self.path {
            Path::AbsoluteForm => "http",
            Path::Intercepted | Path::SocksIntercepted => "https",
        }
    }
}

/// A running curl, its body fed through a pipe.
struct Curl {
    child: Child,
    stdin: Option<ChildStdin>,
    fed: usize,
}

/// How curl ended: exit code, the body, the status code it printed last, and its diagnostics.
struct Ended {
    code: Option<i32>,
    body: String,
    status: String,
    stderr: String,
}

impl std::fmt::Debug for Ended {
    /// The body by its length only: a stream's body is kilobytes of one letter.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = match self.body.len() {
            0..=512 => self.body.clone(),
            n => format!("<{n} bytes>"),
        };
        f.debug_struct("Ended")
            .field("code", &self.code)
            .field("status", &self.status)
            .field("body", &body)
            .field("stderr", &self.stderr)
            .finish()
    }
}

impl Curl {
    fn start(args: &[String]) -> Curl {
        let mut child = tokio::process::Command::new("curl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs (install curl)");
        let stdin = child.stdin.take();
        Curl {
            child,
            stdin,
            fed: 0,
        }
    }

    /// Writes `chunks` chunks, paced; stops early if curl stopped reading.
    async fn feed(&mut self, chunks: usize) {
        for _ in 0..chunks {
            let Some(stdin) = self.stdin.as_mut() else {
                return;
            };
            let written = stdin.write_all(&[b'u'; CHUNK]).await;
            if written.is_err() || stdin.flush().await.is_err() {
                self.stdin = None;
                return;
            }
            self.fed += CHUNK;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Feeds up to `chunks` more chunks while curl runs, ends the body, and waits for curl.
    async fn finish(mut self, chunks: usize) -> (Ended, usize) {
        let mut stdin = self.stdin.take();
        let feeder = tokio::spawn(async move {
            let mut fed = 0;
            for _ in 0..chunks {
                let Some(pipe) = stdin.as_mut() else { break };
                if pipe.write_all(&[b'u'; CHUNK]).await.is_err() || pipe.flush().await.is_err() {
                    break;
                }
                fed += CHUNK;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            fed
        });
        let output = tokio::time::timeout(WAIT * 2, self.child.wait_with_output())
            .await
            .expect("curl ends")
            .expect("curl's output");
        let fed = self.fed + feeder.await.unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let ended = Ended {
            code: output.status.code(),
            body: body.to_owned(),
            status: status.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        (ended, fed)
    }
}

/// The victim: an upload to `slow.test` in flight when the policy tightens against it.
async fn a_body_in_flight_is_cut(path: Path, how: Tightening) {
    let setup = Setup::start(path).await;
    let victim = setup.upload_in_flight("slow.test", "/upload-victim").await;
    // The unaffected exchange, to another host: an upload when a deny rule lands; in limited mode
    // (where every upload is a write) a download, which limited mode still allows.
    let control = match how {
        Tightening::DenyRule => {
            setup
                .upload_in_flight("other.test", "/upload-control")
                .await
        }
        Tightening::Limited => {
            setup
                .stream_in_flight("other.test", "/stream-control")
                .await
        }
    };
    setup.tighten(how).await;
    setup.origin.release.send_replace(true);

    let (ended, fed) = victim.finish(VICTIM_AFTER).await;
    let seen = setup
        .origin
        .wait_for("/upload-victim", "the body ended", |r| r.end.is_some())
        .await;
    assert_eq!(seen.end, Some(End::Broken), "the origin got the whole body");
    assert!(seen.received < fed, "{seen:?}, {fed} fed");
    assert_eq!(ended.status, "403", "{ended:?}");
    let block: serde_json::Value = serde_json::from_str(&ended.body).expect("a JSON block");
    let reason = match how {
        Tightening::Limited => "method_not_allowed",
        Tightening::DenyRule => "denylist",
    };
    assert_eq!(
        (&block["reason"], &block["host"], &block["method"]),
        (&json!(reason), &json!("slow.test"), &json!("POST")),
        "{block}"
    );

    let (control, control_fed) = control.finish(CONTROL_AFTER).await;
    assert_eq!(
        (control.code, control.status.as_str()),
        (Some(0), "200"),
        "{control:?}"
    );
    match how {
        Tightening::DenyRule => {
            assert_eq!(control_fed, (BEFORE + CONTROL_AFTER) * CHUNK);
            assert_eq!(control.body, format!("got {control_fed}"));
            let seen = setup.origin.record("/upload-control");
            assert_eq!(
                (seen.end, seen.received),
                (Some(End::Complete), control_fed)
            );
        }
        Tightening::Limited => {
            assert_eq!(control.body.len(), (BEFORE + STREAM_AFTER) * CHUNK);
            let seen = setup.origin.record("/stream-control");
            assert_eq!(seen.end, Some(End::Complete));
        }
    }

    let protocol = setup.protocol();
    let lines = setup.proxy.stop().await;
    let cut: Vec<_> = lines
        .iter()
        .filter(|l| l["host"] == "slow.test" && l["method"] == "POST")
        .collect();
    assert_eq!(cut.len(), 1, "one line for the cut exchange: {lines:?}");
    assert_eq!(
        (&cut[0]["reason"], &cut[0]["protocol"], &cut[0]["seq"]),
        (&json!(reason), &json!(protocol), &block["event"]),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l["host"] == "slow.test"),
        "nothing else was blocked: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_cuts_an_absolute_form_body_in_flight() {
    a_body_in_flight_is_cut(Path::AbsoluteForm, Tightening::Limited).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_cuts_an_absolute_form_body_in_flight() {
    a_body_in_flight_is_cut(Path::AbsoluteForm, Tightening::DenyRule).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_cuts_an_intercepted_body_in_flight() {
    a_body_in_flight_is_cut(Path::Intercepted, Tightening::Limited).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_cuts_an_intercepted_body_in_flight() {
    a_body_in_flight_is_cut(Path::Intercepted, Tightening::DenyRule).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_cuts_a_socks_intercepted_body_in_flight() {
    a_body_in_flight_is_cut(Path::SocksIntercepted, Tightening::Limited).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_cuts_a_socks_intercepted_body_in_flight() {
    a_body_in_flight_is_cut(Path::SocksIntercepted, Tightening::DenyRule).await;
}

/// A response already streaming when a deny rule names its host: the upstream is aborted and the
/// client connection closed (the status line is out, so no `403` can follow), never ended as if
/// whole. The same download when limited mode lands carries on: limited mode allows reads.
async fn a_response_in_flight_is_broken_off(path: Path) {
    let setup = Setup::start(path).await;
    let download = setup.stream_in_flight("slow.test", "/stream-victim").await;
    setup.tighten(Tightening::DenyRule).await;
    setup.origin.release.send_replace(true);
    let (ended, _) = download.finish(0).await;
    assert_ne!(ended.code, Some(0), "curl saw a whole response: {ended:?}");
    assert_eq!(ended.status, "200", "{ended:?}");
    assert!(
        ended.body.len() < (BEFORE + STREAM_AFTER) * CHUNK,
        "{} bytes arrived",
        ended.body.len()
    );
    let seen = setup
        .origin
        .wait_for("/stream-victim", "the stream ended", |r| r.end.is_some())
        .await;
    assert_eq!(seen.end, Some(End::Broken), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_breaks_off_an_absolute_form_response_in_flight() {
    a_response_in_flight_is_broken_off(Path::AbsoluteForm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_breaks_off_an_intercepted_response_in_flight() {
    a_response_in_flight_is_broken_off(Path::Intercepted).await;
}
