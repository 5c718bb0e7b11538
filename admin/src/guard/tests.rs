use hyper::header::{HeaderName, HeaderValue};

use super::*;

const PORT: u16 = 9180;

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], PORT))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    map
}

fn get(host: &str) -> Result<(), Refusal> {
    check(&Method::GET, &headers(&[("host", host)]), local())
}

#[test]
fn host_must_name_this_listener() {
    for host in [
        "127.0.0.1:9180",
        "localhost:9180",
        "LOCALHOST:9180",
        "LocalHost:9180",
        "[::1]:9180",
        "127.0.0.2:9180",
        "127.255.255.254:9180",
    ] {
        assert_eq!(get(host), Ok(()), "{host}");
    }
    for host in [
        // DNS rebinding: the attacker's name, pointed at 127.0.0.1.
        "evil.example:9180",
        "evil.example",
        "127.0.0.1.nip.io:9180",
        "localhost.evil.example:9180",
        "sub.localhost:9180",
        // Trailing dots and other spellings of loopback.
        "localhost.:9180",
        "127.0.0.1.:9180",
        "127.1:9180",
        "2130706433:9180",
        "0x7f000001:9180",
        "0177.0.0.1:9180",
        "[0:0:0:0:0:0:0:1]:9180",
        "[::ffff:127.0.0.1]:9180",
        "[::1%25lo]:9180",
        "::1:9180",
        // Wrong, missing or odd ports.
        "127.0.0.1",
        "localhost",
        "[::1]",
        "127.0.0.1:80",
        "localhost:9181",
        "localhost:09180",
        "localhost:+9180",
        "localhost:9180:9180",
        "localhost:",
        "[::1]:",
        "[::1]9180",
        // Not loopback, not ours.
        "0.0.0.0:9180",
        "10.0.0.1:9180",
        "[::]:9180",
        "",
        " localhost:9180",
        "user@localhost:9180",
    ] {
        assert_eq!(get(host), Err(Refusal::MisdirectedHost), "{host:?}");
    }
}

#[test]
fn a_missing_or_repeated_host_is_misdirected() {
    assert_eq!(
        check(&Method::GET, &HeaderMap::new(), local()),
        Err(Refusal::MisdirectedHost)
    );
    let twice = headers(&[("host", "localhost:9180"), ("host", "localhost:9180")]);
    assert_eq!(
        check(&Method::GET, &twice, local()),
        Err(Refusal::MisdirectedHost)
    );
}

#[test]
fn the_listeners_own_address_counts_when_it_is_not_loopback() {
    let lan = SocketAddr::from(([192, 0, 2, 7], PORT));
    let ok = |host: &str| check(&Method::GET, &headers(&[("host", host)]), lan);
    assert_eq!(ok("192.0.2.7:9180"), Ok(()));
    assert_eq!(ok("192.0.2.8:9180"), Err(Refusal::MisdirectedHost));
}

#[test]
fn only_the_listeners_own_origin_is_accepted() {
    let with_origin = |origin: &str| {
        check(
            &Method::GET,
            &headers(&[("host", "127.0.0.1:9180"), ("origin", origin)]),
            local(),
        )
    };
    for origin in [
        "http://127.0.0.1:9180",
        "http://localhost:9180",
        "http://[::1]:9180",
    ] {
        assert_eq!(with_origin(origin), Ok(()), "{origin}");
    }
    for origin in [
        "null",
        "",
        "http://evil.example",
        "http://evil.example:9180",
        "https://127.0.0.1:9180",
        "http://127.0.0.1:9181",
        "http://127.0.0.1",
        "http://localhost.:9180",
        "http://127.0.0.1:9180.evil.example",
        "http://127.0.0.1:9180/",
        "file://",
        "chrome-extension://abc",
        "HTTP://127.0.0.1:9180",
    ] {
        assert_eq!(
            with_origin(origin),
            Err(Refusal::ForeignOrigin),
            "{origin:?}"
        );
    }
    let two = headers(&[
        ("host", "127.0.0.1:9180"),
        ("origin", "http://127.0.0.1:9180"),
        ("origin", "http://evil.example"),
    ]);
    assert_eq!(
        check(&Method::GET, &two, local()),
        Err(Refusal::ForeignOrigin)
    );
}

#[test]
fn cross_site_fetch_metadata_is_refused() {
    for (site, expected) in [
        ("same-origin", Ok(())),
        ("none", Ok(())),
        ("same-site", Err(Refusal::ForeignOrigin)),
        ("cross-site", Err(Refusal::ForeignOrigin)),
        ("garbage", Err(Refusal::ForeignOrigin)),
    ] {
        let map = headers(&[("host", "127.0.0.1:9180"), ("sec-fetch-site", site)]);
        assert_eq!(check(&Method::GET, &map, local()), expected, "{site}");
    }
}

#[test]
fn changes_need_a_json_body_type() {
    let change = |method: Method, types: &[&str]| {
        let mut pairs = vec![("host", "127.0.0.1:9180")];
        pairs.extend(types.iter().map(|t| ("content-type", *t)));
        check(&method, &headers(&pairs), local())
    };
    for ok in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/json ;charset=UTF-8",
    ] {
        assert_eq!(change(Method::POST, &[ok]), Ok(()), "{ok}");
        assert_eq!(change(Method::DELETE, &[ok]), Ok(()), "{ok}");
    }
    for bad in [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json-patch+json",
        "text/json",
        "",
        "application/json, text/plain",
    ] {
        assert_eq!(
            change(Method::POST, &[bad]),
            Err(Refusal::NotJson),
            "{bad:?}"
        );
    }
    for method in [Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
        assert_eq!(
            change(method.clone(), &[]),
            Err(Refusal::NotJson),
            "{method} without a type"
        );
    }
    assert_eq!(
        change(Method::POST, &["application/json", "text/plain"]),
        Err(Refusal::NotJson),
        "two types"
    );
    assert_eq!(change(Method::GET, &[]), Ok(()), "reads need no type");
}
