//! The admin listener under a crowd (issue 14, item 8): idle connections, half-sent request heads
//! and parked long polls must never leave the host application without an answer. Raw TCP
//! clients against the real admin listener; every wait is bounded.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use listeners::StaticResolver;
use serde_json::Value;
use tests::{curl, policy_config, start_proxy, TestProxy};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The admin server's connection bound and long-poll cap (`admin/src/server.rs`).
const MAX_CONNECTIONS: usize = 64;
const MAX_PARKED: usize = 16;
/// How long any one answer may take before the test gives up on it (a bound, not a speed claim).
const ANSWER_BOUND: Duration = Duration::from_secs(20);

/// One admin response read off a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

fn start() -> TestProxy {
    let mut config = policy_config(&["allowed.test"], &[], &[]);
    config.admin.token = "adm".into();
    start_proxy(config, Arc::new(StaticResolver::new()), None)
}

fn request(path: &str, admin: SocketAddr) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer adm\r\n\r\n")
}

async fn send(admin: SocketAddr, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(admin).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream
}

/// Reads one `Content-Length` response; `None` when the connection closed or `bound` passed first.
async fn read_answer(stream: &mut TcpStream, bound: Duration) -> Option<Answer> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(answer) = parse(&bytes) {
                return Some(answer);
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read).await.ok().flatten()
}

fn parse(bytes: &[u8]) -> Option<Answer> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })?
        .parse()
        .ok()?;
    if body.len() < length {
        return None;
    }
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = serde_json::from_str(&body[..length]).unwrap_or(Value::Null);
    Some(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body,
    })
}

/// Idle sockets and sockets stuck half-way through a request head, `count` in all.
async fn crowd(admin: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut crowd = Vec::new();
    for i in 0..count {
        let mut stream = TcpStream::connect(admin).await.expect("connect");
        if i % 2 == 1 {
            let partial =
                format!("GET /health HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer adm\r\n");
            stream.write_all(partial.as_bytes()).await.expect("write");
        }
        crowd.push(stream);
    }
    crowd
}

/// Opens long polls (`wait=60`, nothing to return yet) until one is turned away with `429`: that
/// one (kept open) and its answer, and every poll not answered within a short look (parked, or refused late; the answers
/// they give after the next event tell which).
async fn park_until_refused(admin: SocketAddr) -> (Vec<TcpStream>, TcpStream, Answer) {
    let mut waiting = Vec::new();
    for _ in 0..MAX_PARKED + 8 {
        let mut poll = send(admin, &request("/blocked?since=0&wait=60", admin)).await;
        match read_answer(&mut poll, Duration::from_millis(500)).await {
            Some(answer) => return (waiting, poll, answer),
            None => waiting.push(poll),
        }
    }
    panic!("{} long polls wait and none was refused", waiting.len());
}

/// The answers of `waiting` polls after an event: `(woken with the event, evicted with an empty
/// page, refused 429)`.
async fn answers_after_event(waiting: &mut [TcpStream]) -> (usize, usize, usize) {
    let (mut woken, mut evicted, mut refused) = (0, 0, 0);
    for poll in waiting {
        let answer = read_answer(poll, ANSWER_BOUND)
            .await
            .expect("every poll is answered");
        match (answer.status, events(&answer)) {
            (200, 1) => woken += 1,
            (200, 0) => evicted += 1,
            (429, _) => refused += 1,
            _ => panic!("unexpected answer {answer:?}"),
        }
    }
    (woken, evicted, refused)
}

/// One block through the proxy, which wakes every parked long poll.
async fn block_one(proxy: &TestProxy) {
    let refused = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy.proxy_url("a1:tok"),
        "http://new.test/",
    ])
    .await;
    assert_eq!(refused.text(), "403");
}

fn events(answer: &Answer) -> usize {
    answer.body["events"]
        .as_array()
        .map_or(usize::MAX, Vec::len)
}

/// With every connection place taken by idle sockets and half-sent heads, the host application's
/// request still gets its answer: idle connections make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_half_sent_heads_do_not_lock_the_admin_api_out() {
    let proxy = start();
    let admin = proxy.admin.expect("an admin listener");
    let _crowd = crowd(admin, MAX_CONNECTIONS + 16).await;
    for path in ["/health", "/mode", "/blocked?since=0"] {
        let mut stream = send(admin, &request(path, admin)).await;
        let answer = read_answer(&mut stream, ANSWER_BOUND).await;
        let answer =
            answer.unwrap_or_else(|| panic!("{path}: no answer with the admin API crowded"));
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
    }
}

/// Parked long polls are capped: the one past the cap is answered at once with `429` and
/// `Retry-After`, and exactly the parked ones wake on the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_past_the_cap_are_answered_429_at_once() {
    let proxy = start();
    let admin = proxy.admin.expect("an admin listener");
    let (mut waiting, _refused_poll, refused) = park_until_refused(admin).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(refused.head.contains("retry-after: 1"), "{}", refused.head);
    assert!(refused.body["error"].is_string(), "{refused:?}");
    block_one(&proxy).await;
    let (woken, evicted, _late_refusals) = answers_after_event(&mut waiting).await;
    assert_eq!(
        (woken, evicted),
        (MAX_PARKED, 0),
        "the cap, all woken by the event"
    );
    // Places free again once the polls have been answered.
    let mut again = send(admin, &request("/blocked?since=1&wait=1", admin)).await;
    let answer = read_answer(&mut again, ANSWER_BOUND)
        .await
        .expect("an answer");
    assert_eq!((answer.status, events(&answer)), (200, 0), "{answer:?}");
}

/// At the connection bound, with old idle sockets, half-sent heads and every long-poll place
/// taken, a legitimate request is answered `200`; the place it takes is a parked poll's (answered
/// at once with an empty page), not an older idle connection's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_admin_listener_evicts_a_parked_poll_first() {
    let proxy = start();
    let admin = proxy.admin.expect("an admin listener");
    let old = crowd(admin, 40).await;
    let (mut waiting, _refused_poll, refused) = park_until_refused(admin).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    let open = old.len() + waiting.len() + 1;
    let _newer = crowd(admin, MAX_CONNECTIONS - open).await;

    let mut legit = send(admin, &request("/health", admin)).await;
    let answer = read_answer(&mut legit, ANSWER_BOUND)
        .await
        .expect("the admin API answers");
    assert_eq!(answer.status, 200, "{answer:?}");

    block_one(&proxy).await;
    let (woken, evicted, _late_refusals) = answers_after_event(&mut waiting).await;
    assert_eq!(
        (woken, evicted),
        (MAX_PARKED - 1, 1),
        "one poll evicted (an empty page at once), the others woke on the event"
    );

    // Every older connection is still served: none was evicted in the poll's place.
    for (i, mut stream) in old.into_iter().enumerate() {
        let rest = match i % 2 {
            1 => "\r\n".to_owned(),
            _ => request("/health", admin),
        };
        stream.write_all(rest.as_bytes()).await.expect("write");
        let answer = read_answer(&mut stream, ANSWER_BOUND).await;
        let answer = answer.unwrap_or_else(|| panic!("old connection {i} was closed"));
        assert_eq!(answer.status, 200, "{answer:?}");
    }
}

/// A change whose body trickles in holds its connection busy; with every place taken by such
/// bodies newcomers are refused (`503`), so each body gets a bound: `408`, and the places free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_that_never_arrive_are_answered_408_and_free_their_place() {
    let proxy = start();
    let admin = proxy.admin.expect("an admin listener");
    let head = format!(
        "POST /mode HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer adm\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"mode\":"
    );
    let mut trickles = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        trickles.push(send(admin, &head).await);
    }
    for (i, trickle) in trickles.iter_mut().enumerate() {
        let answer = read_answer(trickle, ANSWER_BOUND).await;
        let answer = answer.unwrap_or_else(|| panic!("body {i} was never answered"));
        assert_eq!(answer.status, 408, "{answer:?}");
    }
    let mut legit = send(admin, &request("/health", admin)).await;
    let answer = read_answer(&mut legit, ANSWER_BOUND)
        .await
        .expect("an answer");
    assert_eq!(answer.status, 200, "{answer:?}");
}
