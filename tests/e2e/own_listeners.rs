//! leash never proxies to its own listeners, by any address of this host (SPEC §19, ARCHITECTURE
//! "leash's own listener ports"): with listeners on `0.0.0.0`, the admin API and the proxy ports
//! answer on every interface address, not only on the local ranges the policy knows. The host gets
//! a veth address and a public-looking one from a network namespace the test creates.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use listeners::StaticResolver;
use tests::{
    curl, policy_config, raw_request, skip_unless_root, start_proxy_on_configured_listeners, NetNs,
    Origin, TestProxy,
};
use tokio_socks::{tcp::Socks5Stream, Error as SocksError};

/// A proxy listener's port, reached over loopback.
fn on_loopback(addr: Option<SocketAddr>) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], addr.expect("a listener").port()))
}

/// Every listener on `0.0.0.0:0`, which the `dangerously_…` flags allow.
fn on_every_address(allow: &[&str], allow_local: &[String], resolver: StaticResolver) -> TestProxy {
    let mut config = policy_config(allow, &[], allow_local);
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    (config.listen.http, config.listen.socks, config.listen.admin) = (any, any, any);
    config.listen.dangerously_allow_non_loopback_proxy = true;
    config.listen.dangerously_allow_non_loopback_admin = true;
    start_proxy_on_configured_listeners(config, Arc::new(resolver))
}

/// `curl -x` through the HTTP proxy; `-p` for a CONNECT tunnel. Returns the status leash (or
/// whatever answered) gave and the body.
async fn through_http_proxy(proxy: &TestProxy, url: &str, tunnel: bool) -> (String, String) {
    let proxy_url = format!("http://a1:tok@{}", on_loopback(Some(proxy.http)));
    let mut args = vec!["-x", &proxy_url, "-w", "\n%{http_code} %{http_connect}"];
    if tunnel {
        args.push("-p");
    }
    args.push(url);
    let out = curl(&args).await;
    let text = out.text();
    let (body, codes) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, connect) = codes.split_once(' ').unwrap_or((codes, ""));
    let status = match tunnel {
        true => connect,
        false => code,
    };
    (status.to_owned(), body.to_owned())
}

async fn socks_connect(proxy: &TestProxy, host: &str, port: u16) -> Result<(), SocksError> {
    let socks = on_loopback(proxy.socks);
    Socks5Stream::connect_with_password(socks, (host, port), "a1", "tok")
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_listeners_are_refused_on_every_address_of_this_host() {
    if skip_unless_root("own_listeners_are_refused_on_every_address_of_this_host") {
        return;
    }
    let netns = NetNs::new();
    let public = netns.spare_public_addr();
    netns.add_host_address(IpAddr::V4(public));
    let veth = netns.host_addr();
    let public_origin = Origin::http_on(&format!("{public}:0")).await;
    let veth_origin = Origin::http_on(&format!("{veth}:0")).await;
    let resolver = StaticResolver::new().answer("own.test", &[IpAddr::V4(public)]);
    let public_rule = public.to_string();
    let proxy = on_every_address(&[&public_rule, "own.test"], &[veth.to_string()], resolver);
    let own_ports = [proxy.admin, Some(proxy.http), proxy.socks].map(|a| on_loopback(a).port());
    let admin = own_ports[0];

    // Other ports of the same addresses are allowed: the refusals below are about the port.
    let public_url = format!("http://{public}:{}/", public_origin.addr.port());
    let veth_url = format!("http://{veth}:{}/", veth_origin.addr.port());
    for url in [&public_url, &veth_url] {
        let (status, body) = through_http_proxy(&proxy, url, false).await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("200", "hello from origin"),
            "{url}"
        );
    }
    socks_connect(&proxy, "own.test", public_origin.addr.port())
        .await
        .expect("SOCKS5 reaches another port of the public address");

    let mut refused = 0;
    for port in own_ports {
        for host in [
            public.to_string(),
            veth.to_string(),
            format!("[::ffff:{public}]"),
        ] {
            let url = format!("http://{host}:{port}/health");
            for tunnel in [false, true] {
                let (status, body) = through_http_proxy(&proxy, &url, tunnel).await;
                assert_eq!(status, "403", "{url} (CONNECT: {tunnel}): {body}");
                refused += 1;
            }
        }
        for host in [public.to_string(), veth.to_string(), "own.test".to_owned()] {
            let refusal = socks_connect(&proxy, &host, port).await;
            assert!(
                matches!(refusal, Err(SocksError::ConnectionNotAllowedByRuleset)),
                "SOCKS5 {host}:{port}: {refusal:?}"
            );
            refused += 1;
        }
    }
    // A raw absolute-form request, so no client rewrites the mapped spelling on its way.
    let request = format!(
        "GET http://[::ffff:{public}]:{admin}/health HTTP/1.1\r\nHost: [::ffff:{public}]:{admin}\r\n\
         Proxy-Authorization: Basic YTE6dG9r\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_request(on_loopback(Some(proxy.http)), request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    refused += 1;

    let lines = proxy.stop().await;
    let reasons: Vec<_> = lines.iter().map(|l| l["reason"].as_str()).collect();
    assert_eq!(reasons.len(), refused, "one block per refusal: {lines:?}");
    assert!(
        reasons.iter().all(|r| *r == Some("local_address")),
        "{lines:?}"
    );
}
