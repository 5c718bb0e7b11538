use std::{net::TcpListener, sync::Mutex as StdMutex};

use policy::{AllowLocal, Policy, Rule};

use super::*;
use crate::{ClientKey, LookupBound, LookupLimits};

/// Records every address it is asked to dial and connects to loopback listeners only.
#[derive(Debug, Default)]
struct RecordingConnector {
    dialled: StdMutex<Vec<SocketAddr>>,
}

impl Connector for RecordingConnector {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        self.dialled.lock().unwrap().push(addr);
        Box::pin(async move {
            assert!(
                addr.ip().is_loopback(),
                "tests never dial off the machine: {addr}"
            );
            TcpStream::connect(addr).await
        })
    }
}

fn policy(allow: &[&str], local: &[&str]) -> Policy {
    let mut builder = Policy::builder();
    for rule in allow {
        builder = builder.allow(rule.parse().unwrap());
    }
    let local: Vec<Rule> = local.iter().map(|r| r.parse().unwrap()).collect();
    builder
        .allow_local(AllowLocal::Only(local))
        .build()
        .unwrap()
}

fn client() -> ClientKey {
    ClientKey::new(Some("a1"), ip("127.0.0.1"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn connects_only_to_vetted_addresses_and_looks_up_once() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = origin.local_addr().unwrap().port();
    let resolver = Arc::new(StaticResolver::new().answer("dev.test", &[ip("127.0.0.1")]));
    let connector = Arc::new(RecordingConnector::default());
    let dialer = Dialer::new(
        Arc::new(StaticResolver::new()),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .with_resolver(resolver.clone())
    .with_connector(connector.clone());
    let target = Target::parse(&format!("dev.test:{port}"), None).unwrap();

    let open = policy(&["dev.test"], &[&format!("127.0.0.1:{port}")]);
    let dialed = dialer.dial(&open, &target, &client()).await.unwrap();
    assert_eq!(dialed.peer, Some(SocketAddr::from(([127, 0, 0, 1], port))));
    assert_eq!(resolver.calls(), ["dev.test"]);

    let closed = policy(&["dev.test"], &[]);
    match dialer.dial(&closed, &target, &client()).await {
        Err(DialError::Blocked(Decision::Deny(reason))) => {
            assert_eq!(reason.code(), "local_address")
        }
        other => panic!("expected a block, got {other:?}"),
    }
    assert_eq!(
        connector.dialled.lock().unwrap().len(),
        1,
        "the blocked dial connected nowhere"
    );
}

#[tokio::test]
async fn a_mixed_answer_is_refused_whole() {
    let resolver =
        Arc::new(StaticResolver::new().answer("mixed.test", &[ip("8.8.8.8"), ip("127.0.0.1")]));
    let connector = Arc::new(RecordingConnector::default());
    let dialer = Dialer::new(
        Arc::new(StaticResolver::new()),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .with_resolver(resolver)
    .with_connector(connector.clone());
    let target = Target::parse("mixed.test:80", None).unwrap();
    let result = dialer
        .dial(&policy(&["mixed.test"], &[]), &target, &client())
        .await;
    assert!(matches!(result, Err(DialError::Blocked(_))), "{result:?}");
    assert!(connector.dialled.lock().unwrap().is_empty());
}

#[tokio::test]
async fn dns_failures_fail_closed() {
    let dialer = Dialer::new(
        Arc::new(StaticResolver::new()),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .with_resolver(Arc::new(StaticResolver::new().answer("empty.test", &[])));
    let engine = policy(&["*"], &[]);
    let unknown = Target::parse("unknown.test:80", None).unwrap();
    assert!(matches!(
        dialer.dial(&engine, &unknown, &client()).await,
        Err(DialError::DnsFailed(_))
    ));
    let empty = Target::parse("empty.test:80", None).unwrap();
    assert!(matches!(
        dialer.dial(&engine, &empty, &client()).await,
        Err(DialError::DnsFailed(_))
    ));
}

#[tokio::test]
async fn a_refused_connection_is_connect_failed() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dialer = Dialer::new(
        Arc::new(StaticResolver::new()),
        Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let target = Target::parse(&format!("127.0.0.1:{port}"), None).unwrap();
    let engine = policy(&["127.0.0.1"], &["127.0.0.1"]);
    assert!(matches!(
        dialer.dial(&engine, &target, &client()).await,
        Err(DialError::ConnectFailed(_))
    ));
}

#[tokio::test]
async fn own_listeners_are_never_dialled_whatever_the_policy() {
    let own = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = own.local_addr().unwrap().port();
    let connector = Arc::new(RecordingConnector::default());
    let dialer = Dialer::new(
        Arc::new(StaticResolver::new()),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .with_resolver(Arc::new(
        StaticResolver::new().answer("sneaky.test", &[ip("127.0.0.1")]),
    ))
    .with_connector(connector.clone())
    .with_own_listeners(&[own.local_addr().unwrap()]);
    let open_everything = Policy::builder()
        .allow("*".parse().unwrap())
        .allow_local(AllowLocal::All)
        .build()
        .unwrap();
    for target in [
        format!("127.0.0.1:{port}"),
        format!("0.0.0.0:{port}"),
        format!("sneaky.test:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        let target = Target::parse(&target, None).unwrap();
        match dialer.dial(&open_everything, &target, &client()).await {
            Err(DialError::Blocked(Decision::Deny(reason))) => {
                assert_eq!(reason.code(), "local_address", "{target}")
            }
            other => panic!("{target}: expected a block, got {other:?}"),
        }
    }
    assert!(connector.dialled.lock().unwrap().is_empty());
}

/// A listener on `0.0.0.0` answers on every interface address, local range or not, and on its own
/// bound address: all of them are refused on its port, and nothing else is.
#[tokio::test]
async fn every_address_of_this_host_is_refused_on_an_own_port() {
    let own_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Listeners as bound; 8.8.8.8 stands for an address the host had when it bound (nothing is
    // dialled in this test).
    let listeners = [
        SocketAddr::from(([0, 0, 0, 0], own_port)),
        SocketAddr::from(([8, 8, 8, 8], own_port)),
    ];
    let dialer = Dialer::new(
        Arc::new(StaticResolver::new()),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .with_connector(Arc::new(RecordingConnector::default()))
    .with_own_listeners(&listeners);
    let open_everything = Policy::builder()
        .allow("*".parse().unwrap())
        .allow_local(AllowLocal::All)
        .build()
        .unwrap();
    let mut host = crate::interfaces::interface_addresses().expect("the interfaces are readable");
    assert!(!host.is_empty(), "at least loopback");
    // The bound address, and IPv6 spellings that carry it: NAT64, 6to4, Teredo (client field).
    host.extend(
        [
            "8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:1:2::f7f7:f7f7",
        ]
        .map(ip),
    );
    for addr in host {
        let own = Target::parse(&SocketAddr::new(addr, own_port).to_string(), None).unwrap();
        match dialer
            .resolve_vetted(&open_everything, &own, &client())
            .await
        {
            Err(DialError::Blocked(Decision::Deny(reason))) => {
                assert_eq!(reason.code(), "local_address", "{own}")
            }
            other => panic!("{own}: expected a block, got {other:?}"),
        }
        let other_port = Target::parse(&SocketAddr::new(addr, own_port ^ 1).to_string(), None);
        assert!(
            dialer
                .resolve_vetted(&open_everything, &other_port.unwrap(), &client())
                .await
                .is_ok(),
            "{addr} on another port"
        );
    }
}

/// Answers names from a `StaticResolver`, except names starting `never`, which it never answers;
/// each unanswered lookup holds a clone of `held`, so its strong count shows what is still alive.
#[derive(Debug)]
struct PartlySilent {
    answers: StaticResolver,
    held: Arc<()>,
}

impl Resolver for PartlySilent {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        if !name.starts_with("never") {
            return self.answers.resolve(name);
        }
        let held = self.held.clone();
        Box::pin(async move {
            let _held = held;
            std::future::pending().await
        })
    }
}

fn silent_dialer(limits: LookupLimits, dns_timeout: Duration) -> (Dialer, Arc<PartlySilent>) {
    let resolver = Arc::new(PartlySilent {
        answers: StaticResolver::new().answer("good.test", &[ip("8.8.8.8")]),
        held: Arc::new(()),
    });
    let dialer = Dialer::new(resolver.clone(), dns_timeout, Duration::from_secs(1))
        .with_lookup_limits(limits);
    (dialer, resolver)
}

/// Starts `count` lookups of never-answering names for `client`, each held in its own task.
fn flood(
    dialer: &Dialer,
    client: &ClientKey,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Result<Vec<IpAddr>, DialError>>> {
    (0..count)
        .map(|i| {
            let (dialer, client) = (dialer.clone(), client.clone());
            tokio::spawn(async move {
                let target = Target::parse(&format!("never{i}.test:443"), None).unwrap();
                dialer
                    .resolve_vetted(&policy(&["*"], &[]), &target, &client)
                    .await
            })
        })
        .collect()
}

/// Waits (bounded) until `count` lookups are in flight.
async fn until_in_flight(dialer: &Dialer, count: usize) {
    for _ in 0..500 {
        if dialer.lookups_in_flight() == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{count} lookups never got in flight ({} are)",
        dialer.lookups_in_flight()
    );
}

#[tokio::test]
async fn one_client_cannot_hold_more_than_its_bound_and_others_still_resolve() {
    let limits = LookupLimits {
        total: 8,
        per_client: 3,
    };
    let (dialer, _) = silent_dialer(limits, Duration::from_secs(60));
    let (attacker, other) = (client(), ClientKey::new(Some("a2"), ip("127.0.0.1")));
    let held = flood(&dialer, &attacker, 3);
    until_in_flight(&dialer, 3).await;
    let engine = policy(&["*"], &[]);
    let good = Target::parse("good.test:443", None).unwrap();
    let refused = dialer.resolve_vetted(&engine, &good, &attacker).await;
    assert!(
        matches!(refused, Err(DialError::DnsBusy(LookupBound::PerClient(3)))),
        "{refused:?}"
    );
    let resolved = dialer.resolve_vetted(&engine, &good, &other).await;
    assert_eq!(resolved.unwrap(), [ip("8.8.8.8")]);
    // A client without an attempt id is keyed by its address, apart from the attacker too.
    let anonymous = ClientKey::new(None, ip("127.0.0.1"));
    assert!(dialer
        .resolve_vetted(&engine, &good, &anonymous)
        .await
        .is_ok());
    held.iter().for_each(|task| task.abort());
}

#[tokio::test]
async fn the_total_bound_refuses_every_client_when_full() {
    let limits = LookupLimits {
        total: 4,
        per_client: 3,
    };
    let (dialer, _) = silent_dialer(limits, Duration::from_secs(60));
    let mut held = flood(&dialer, &client(), 3);
    held.extend(flood(
        &dialer,
        &ClientKey::new(Some("a2"), ip("127.0.0.1")),
        1,
    ));
    until_in_flight(&dialer, 4).await;
    let good = Target::parse("good.test:443", None).unwrap();
    let third = ClientKey::new(Some("a3"), ip("127.0.0.1"));
    let refused = dialer
        .resolve_vetted(&policy(&["*"], &[]), &good, &third)
        .await;
    assert!(
        matches!(refused, Err(DialError::DnsBusy(LookupBound::Total(4)))),
        "{refused:?}"
    );
    held.iter().for_each(|task| task.abort());
}

#[tokio::test]
async fn an_abandoned_lookup_holds_nothing() {
    let limits = LookupLimits {
        total: 8,
        per_client: 8,
    };
    let (dialer, resolver) = silent_dialer(limits, Duration::from_millis(100));
    let held = flood(&dialer, &client(), 8);
    for task in held {
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(result, Err(DialError::DnsTimeout)), "{result:?}");
    }
    assert_eq!(dialer.lookups_in_flight(), 0, "every place is free again");
    assert_eq!(
        Arc::strong_count(&resolver.held),
        1,
        "every abandoned lookup was dropped"
    );
    let good = Target::parse("good.test:443", None).unwrap();
    assert!(dialer
        .resolve_vetted(&policy(&["*"], &[]), &good, &client())
        .await
        .is_ok());
}
