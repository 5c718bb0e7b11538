use std::time::Duration;

use policy::Policy;

use super::*;

fn policy(allow: &[&str], deny: &[&str], mode: Mode) -> Policy {
    let mut builder = Policy::builder();
    for rule in allow {
        builder = builder.allow(rule.parse().unwrap());
    }
    for rule in deny {
        builder = builder.deny(rule.parse().unwrap());
    }
    builder.mode(mode).tls_inspection(true).build().unwrap()
}

fn route(host: &str, protocol: Protocol) -> TunnelInfo {
    TunnelInfo {
        target: Target::parse(host, Some(80)).unwrap(),
        protocol,
        peer: Some(SocketAddr::from(([93, 184, 216, 34], 80))),
        inspected: true,
        approved: false,
        attempt: None,
    }
}

fn exchange(host: &str, method: &str, has_body: bool, overrides: &[&str]) -> ExchangeInfo {
    ExchangeInfo {
        route: route(host, Protocol::Http),
        method: method.to_owned(),
        has_body,
        upgrade: false,
        method_overrides: overrides.iter().map(|o| o.to_string()).collect(),
    }
}

/// What each tightening makes of each exchange in flight: limited mode refuses writes (a body,
/// a write method, a write override) and lets reads go on; a deny rule refuses every exchange
/// to its host and none to another.
#[test]
fn exchanges_are_refused_exactly_as_their_requests_would_be() {
    let full = policy(&["slow.test", "other.test"], &[], Mode::Full);
    let limited = policy(&["slow.test", "other.test"], &[], Mode::Limited);
    let denied = policy(&["slow.test", "other.test"], &["slow.test"], Mode::Full);
    let reason = |engine: &Policy, info: &ExchangeInfo| {
        info.refusal(engine)
            .map(|d| d.reason().expect("a reason").code())
    };
    let cases = [
        (exchange("slow.test", "POST", true, &[]), &full, None),
        (
            exchange("slow.test", "POST", true, &[]),
            &limited,
            Some("method_not_allowed"),
        ),
        (
            exchange("slow.test", "GET", true, &[]),
            &limited,
            Some("method_not_allowed"),
        ),
        (
            exchange("slow.test", "GET", false, &["DELETE"]),
            &limited,
            Some("method_not_allowed"),
        ),
        (exchange("slow.test", "GET", false, &[]), &limited, None),
        (
            exchange("slow.test", "GET", false, &[]),
            &denied,
            Some("denylist"),
        ),
        (
            exchange("slow.test", "POST", true, &[]),
            &denied,
            Some("denylist"),
        ),
        (exchange("other.test", "POST", true, &[]), &denied, None),
    ];
    for (info, engine, expected) in cases {
        assert_eq!(
            reason(engine, &info),
            expected,
            "{info:?} under {:?}",
            engine.mode()
        );
    }
}

/// One pass cuts what the new policy refuses, tunnels and exchanges alike, each with its own
/// refusal; the cut is sticky and wakes every waiter; exchanges are not counted as tunnels.
#[tokio::test]
async fn one_pass_cuts_refused_tunnels_and_exchanges_and_wakes_every_waiter() {
    let tunnels = Arc::new(Tunnels::default());
    let full = policy(&["slow.test", "other.test"], &[], Mode::Full);
    let upload = tunnels
        .open_exchange_checked(exchange("slow.test", "POST", true, &[]), &full)
        .unwrap();
    let download = tunnels
        .open_exchange_checked(exchange("slow.test", "GET", false, &[]), &full)
        .unwrap();
    let raw = tunnels
        .open_checked(route_raw("other.test"), &full)
        .unwrap();
    assert_eq!((tunnels.open_count(), tunnels.exchange_count()), (1, 2));

    let waiters = [upload.cut(), upload.cut()].map(tokio::spawn);
    let limited = policy(&["slow.test", "other.test"], &[], Mode::Limited);
    assert_eq!(
        tunnels.close_refused(&limited),
        2,
        "the upload and the raw tunnel"
    );
    assert_eq!(tunnels.close_refused(&limited), 0, "a cut is made once");
    for waiter in waiters {
        let refusal = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("every waiter wakes")
            .unwrap();
        assert_eq!(refusal.reason().unwrap().code(), "method_not_allowed");
    }
    assert!(upload.is_cut() && raw.is_cut() && !download.is_cut());
    // A waiter that comes after the cut sees it at once.
    assert_eq!(
        upload.cut().await.reason().unwrap().code(),
        "method_not_allowed"
    );
    drop((upload, download));
    assert_eq!((tunnels.open_count(), tunnels.exchange_count()), (1, 0));
}

/// Registering re-checks against the policy in force: a change made while the exchange was being
/// decided or connected refuses it before anything is sent.
#[test]
fn an_exchange_registered_under_a_tighter_policy_is_refused_at_once() {
    let tunnels = Arc::new(Tunnels::default());
    let limited = policy(&["slow.test", "other.test"], &[], Mode::Limited);
    let refused = tunnels.open_exchange_checked(exchange("slow.test", "PUT", true, &[]), &limited);
    let reason = refused.unwrap_err().reason().unwrap().code();
    assert_eq!(reason, "method_not_allowed");
}

fn route_raw(host: &str) -> TunnelInfo {
    TunnelInfo {
        protocol: Protocol::Connect,
        inspected: false,
        ..route(host, Protocol::Connect)
    }
}

/// Ending a bound attempt cuts what runs on it, tunnels and exchanges alike, and nothing else.
#[tokio::test]
async fn ending_an_attempt_cuts_only_what_runs_on_it() {
    let tunnels = Arc::new(Tunnels::default());
    let full = policy(&["slow.test", "other.test"], &[], Mode::Full);
    let on = |attempt: &str, mut info: TunnelInfo| {
        info.attempt = Some(Arc::from(attempt));
        info
    };
    let tunnel_a = tunnels
        .open_checked(on("a", route_raw("other.test")), &full)
        .unwrap();
    let tunnel_b = tunnels
        .open_checked(on("b", route_raw("other.test")), &full)
        .unwrap();
    let mut upload = exchange("slow.test", "POST", true, &[]);
    upload.route = on("a", upload.route);
    let exchange_a = tunnels.open_exchange_checked(upload, &full).unwrap();
    let anonymous = tunnels
        .open_checked(route_raw("other.test"), &full)
        .unwrap();

    let ended = Decision::Deny(BlockReason::AuthFailed);
    assert_eq!(tunnels.close_attempt("a", &ended), 2);
    assert_eq!(tunnels.close_attempt("a", &ended), 0, "a cut is made once");
    assert_eq!(tunnels.close_attempt("c", &ended), 0);
    assert!(tunnel_a.is_cut() && exchange_a.is_cut());
    assert!(!tunnel_b.is_cut() && !anonymous.is_cut());
    let why = tokio::time::timeout(Duration::from_secs(5), tunnel_a.cut()).await;
    assert_eq!(
        why.expect("the relay wakes").reason().unwrap().code(),
        "auth_failed"
    );
}

/// A WebSocket after its `101`: counted as a tunnel (not an exchange), and re-checked as the
/// handshake it began as: limited mode refuses it as an upgrade, a deny rule as its host.
#[tokio::test]
async fn an_upgraded_exchange_is_a_tunnel_refused_as_its_handshake() {
    let tunnels = Arc::new(Tunnels::default());
    let full = policy(&["ws.test"], &[], Mode::Full);
    let mut handshake = exchange("ws.test", "GET", false, &[]);
    handshake.upgrade = true;
    let handle = tunnels.open_exchange_checked(handshake, &full).unwrap();
    assert_eq!((tunnels.open_count(), tunnels.exchange_count()), (0, 1));
    handle.upgraded();
    assert_eq!((tunnels.open_count(), tunnels.exchange_count()), (1, 0));
    assert_eq!(tunnels.close_refused(&full), 0, "full mode keeps it");
    let limited = policy(&["ws.test"], &[], Mode::Limited);
    assert_eq!(tunnels.close_refused(&limited), 1);
    let why = tokio::time::timeout(Duration::from_secs(5), handle.cut())
        .await
        .unwrap();
    assert_eq!(why.reason().unwrap().code(), "method_not_allowed");
    let other = Arc::new(Tunnels::default());
    let mut handshake = exchange("ws.test", "GET", false, &[]);
    handshake.upgrade = true;
    let handle = other.open_exchange_checked(handshake, &full).unwrap();
    handle.upgraded();
    let denied = policy(&["ws.test"], &["ws.test"], Mode::Full);
    assert_eq!(other.close_refused(&denied), 1);
    assert_eq!(handle.cut().await.reason().unwrap().code(), "denylist");
    drop(handle);
    assert_eq!(other.open_count(), 0, "dropping the handle ends the tunnel");
}
