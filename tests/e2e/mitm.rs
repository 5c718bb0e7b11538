//! Limited mode inside HTTPS (SPEC §4, §5): curl through leash's interception to HTTPS origins that
//! use a CA of their own, with leash's CA made at test time.

use std::{net::IpAddr, path::PathBuf, sync::Arc};

use leash::Config;
use listeners::StaticResolver;
use policy::Mode;
use tests::{
    curl, leash, loopback, policy_config, raw_request, start_proxy, stderr, LoopbackNat, Origin,
    TestCa, TestProxy,
};

/// A limited-mode leash with MITM, an HTTPS origin `secure.test` it trusts, and the files curl needs.
struct Setup {
    proxy: TestProxy,
    origin: Origin,
    leash_ca: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(mode: Mode, mitm: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = TestCa::new("origin CA");
    let origin_ca_file = dir.path().join("origin-ca.pem");
    origin_ca.write_pem(&origin_ca_file);
    let origin = Origin::https(origin_ca.server_config(&["secure.test"], &[])).await;
    let resolver = Arc::new(StaticResolver::new().answer("secure.test", &[loopback()]));
    let mut config = policy_config(
        &["secure.test"],
        &[],
        &[format!("127.0.0.1:{}", origin.port())],
    );
    config.mode = mode;
    configure_mitm(&mut config, mitm, &dir.path().join("ca"), origin_ca_file);
    let proxy = start_proxy(config, resolver, None);
    Setup {
        proxy,
        origin,
        leash_ca: dir.path().join("ca/ca.pem"),
        _dir: dir,
    }
}

fn configure_mitm(config: &mut Config, on: bool, ca_dir: &std::path::Path, upstream_ca: PathBuf) {
    config.mitm.enabled = on;
    config.mitm.ca_dir = Some(ca_dir.to_owned());
    config.mitm.upstream_ca = vec![upstream_ca];
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("https://secure.test:{}{path}", self.origin.port())
    }

    /// `curl` through the proxy, trusting leash's CA; prints the status code after the body.
    async fn curl(&self, extra: &[&str], path: &str) -> (String, String) {
        let (proxy, ca, url) = (
            self.proxy.proxy_url("a1:tok"),
            self.leash_ca.to_str().unwrap().to_owned(),
            self.url(path),
        );
        let mut args = vec!["-x", &proxy, "--cacert", &ca, "-w", "\n%{http_code}"];
        args.extend(extra);
        args.push(&url);
        let out = curl(&args).await;
        let text = out.text();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_owned(), body.to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_reads_through_tls_and_refuses_every_write_shape() {
    let setup = setup(Mode::Limited, true).await;
    let (code, body) = setup.curl(&[], "/").await;
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "hello from origin"),
        "a GET goes through"
    );
    let writes: [&[&str]; 8] = [
        &["-X", "POST", "-d", "x"],
        &["-X", "PUT", "-d", "x"],
        &["-X", "DELETE"],
        &["-X", "GET", "-d", "a body"],
        // (An upgrade exists only in HTTP/1.1: over h2 curl drops both fields.)
        &[
            "--http1.1",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Connection: Upgrade",
        ],
        &["-H", "X-HTTP-Method-Override: DELETE"],
        // A harmless override first must not hide a writing one after it.
        &[
            "-H",
            "X-HTTP-Method-Override: GET",
            "-H",
            "X-HTTP-Method: DELETE",
        ],
        &[
            "-H",
            "X-Method-Override: HEAD",
            "-H",
            "X-Method-Override: PATCH",
        ],
    ];
    for args in writes {
        let (code, body) = setup.curl(args, "/write?token=secret").await;
        assert_eq!(code, "403", "{args:?}: {body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{args:?}: {e}: {body}"));
        assert_eq!(
            (&json["reason"], &json["protocol"]),
            (&"method_not_allowed".into(), &"https".into()),
            "{args:?}"
        );
    }
    assert_eq!(
        setup.origin.seen.requests().len(),
        1,
        "only the GET reached the origin"
    );
    let lines = setup.proxy.stop().await;
    assert_eq!(lines.len(), 8);
    for line in &lines {
        assert_eq!(
            (&line["protocol"], &line["path"], &line["attempt"]),
            (&"https".into(), &"/write".into(), &"a1".into()),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_one_kept_alive_tunnel_are_decided_one_by_one() {
    let setup = setup(Mode::Limited, true).await;
    let (proxy, ca) = (
        setup.proxy.proxy_url("a1:tok"),
        setup.leash_ca.to_str().unwrap().to_owned(),
    );
    let format = "%{http_code} %{num_connects}\n";
    let out = curl(&[
        "-x",
        &proxy,
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        format,
        &setup.url("/one"),
        "--next",
        "-x",
        &proxy,
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        format,
        "-X",
        "POST",
        "-d",
        "x",
        &setup.url("/two"),
    ])
    .await;
    assert_eq!(
        out.text(),
        "200 1\n403 0\n",
        "GET allowed, POST refused, on one connection: {}",
        out.stderr
    );
    let lines = setup.proxy.stop().await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["path"], "/two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_and_host_must_name_the_tunnels_host() {
    let setup = setup(Mode::Limited, true).await;
    let port = setup.origin.port();
    let connect_to = format!("evil.test:{port}:secure.test:{port}");
    let (proxy, ca) = (
        setup.proxy.proxy_url("a1:tok"),
        setup.leash_ca.to_str().unwrap().to_owned(),
    );
    let out = curl(&[
        "-x",
        &proxy,
        "--cacert",
        &ca,
        "--connect-to",
        &connect_to,
        &format!("https://evil.test:{port}/"),
    ])
    .await;
    assert_ne!(out.code, Some(0), "an SNI of another host is refused");
    let (code, body) = setup.curl(&["-H", "Host: evil.test"], "/").await;
    assert_eq!(code, "421", "{body}");
    assert!(body.contains("\"reason\":\"host_mismatch\""), "{body}");
    assert_eq!(setup.origin.seen.requests().len(), 0);
    let lines = setup.proxy.stop().await;
    let reasons: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["reason"].as_str().unwrap(), l["host"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("host_mismatch", "evil.test"),
            ("host_mismatch", "evil.test")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_origin_is_tls_failed_never_a_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let stranger = TestCa::new("a CA nobody trusts");
    let untrusted = Origin::https(stranger.server_config(&["secure.test"], &[])).await;
    let trusted_ca = TestCa::new("origin CA");
    let trusted_file = dir.path().join("trusted.pem");
    trusted_ca.write_pem(&trusted_file);
    let resolver = Arc::new(StaticResolver::new().answer("secure.test", &[loopback()]));
    let mut config = policy_config(
        &["secure.test"],
        &[],
        &[format!("127.0.0.1:{}", untrusted.port())],
    );
    config.mode = Mode::Limited;
    configure_mitm(&mut config, true, &dir.path().join("ca"), trusted_file);
    let proxy = start_proxy(config, resolver, None);
    let ca = dir.path().join("ca/ca.pem");
    let url = format!("https://secure.test:{}/", untrusted.port());
    let out = curl(&[
        "-i",
        "-x",
        &proxy.proxy_url("a1:tok"),
        "--cacert",
        ca.to_str().unwrap(),
        &url,
    ])
    .await;
    let text = out.text();
    let inner = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let h2_or_h1 = ["HTTP/1.1 502", "HTTP/2 502"];
    assert!(h2_or_h1.iter().any(|s| inner.starts_with(s)), "{text}");
    assert!(
        text.contains("x-proxy-error: upstream-error")
            && text.contains("\"reason\":\"tls_failed\""),
        "{text}"
    );
    assert_eq!(
        untrusted.seen.requests().len(),
        0,
        "nothing was sent to the unverified origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_without_mitm_refuses_connect() {
    let setup = setup(Mode::Limited, false).await;
    let raw = format!("CONNECT secure.test:{} HTTP/1.1\r\nProxy-Authorization: Basic YTE6dG9r\r\nConnection: close\r\n\r\n", setup.origin.port());
    let response = raw_request(setup.proxy.http, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(
        response.contains("x-proxy-error: blocked-by-mitm-required"),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_to_port_443_is_intercepted_in_limited_mode() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = TestCa::new("origin CA");
    let origin_ca_file = dir.path().join("origin-ca.pem");
    origin_ca.write_pem(&origin_ca_file);
    let origin = Origin::https(origin_ca.server_config(&["shop.test"], &[])).await;
    let public: IpAddr = "93.184.216.34".parse().unwrap();
    let resolver = Arc::new(StaticResolver::new().answer("shop.test", &[public]));
    let nat = Arc::new(LoopbackNat::default().map(public, origin.addr));
    let mut config = policy_config(&["shop.test"], &[], &[]);
    config.mode = Mode::Limited;
    configure_mitm(&mut config, true, &dir.path().join("ca"), origin_ca_file);
    let proxy = start_proxy(config, resolver, Some(nat.clone()));
    let socks = format!("socks5h://a1:tok@{}", proxy.socks.unwrap());
    let ca = dir.path().join("ca/ca.pem");
    let ca = ca.to_str().unwrap();
    let out = curl(&["--proxy", &socks, "--cacert", ca, "https://shop.test/"]).await;
    assert_eq!(out.text(), "hello from origin", "{}", out.stderr);
    let out = curl(&[
        "--proxy",
        &socks,
        "--cacert",
        ca,
        "-d",
        "x",
        "https://shop.test/cart",
    ])
    .await;
    assert!(
        out.text().contains("\"reason\":\"method_not_allowed\""),
        "{}",
        out.text()
    );
    assert!(nat
        .dialled()
        .iter()
        .all(|a| a.ip() == public && a.port() == 443));
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (&lines[0]["protocol"], &lines[0]["path"]),
        (&"https".into(), &"/cart".into())
    );
}

#[test]
fn an_exposed_or_linked_ca_key_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let file = dir.path().join("leash.toml");
    let text = format!(
        "[listen]\nephemeral = true\n[mitm]\nenabled = true\nca_dir = {:?}\n",
        ca_dir.to_str().unwrap()
    );
    std::fs::write(&file, text).unwrap();
    let out = leash(
        dir.path(),
        &["ca", "init", "--config", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let key = ca_dir.join("ca.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = leash(dir.path(), &["proxy", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let elsewhere = dir.path().join("elsewhere.key");
    std::fs::rename(&key, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &key).unwrap();
    let out = leash(dir.path(), &["proxy", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
}
