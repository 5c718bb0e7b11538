//! One JSON request to a running leash's loopback admin API, for the CLI's own clients (`leash env
//! --bind`, `leash approve`). Plain HTTP/1.1 over a blocking socket, bounded in time and size: the
//! admin API is leash's own and answers with a `content-length` body and `Connection: close`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::Context;

/// How long the admin API may take to connect, read or answer (a long poll waits less).
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// `POST path` with a JSON `body` (and the bearer `token`): the status and the JSON answer.
pub(crate) fn post(
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    request(admin, "POST", path, token, body)
}

/// `GET path` (and the bearer `token`): the status and the JSON answer. A long poll's `wait` must
/// stay under `TIMEOUT`.
pub(crate) fn get(
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    request(admin, "GET", path, token, "")
}

/// The admin token a ready record's `admin_token_file` holds, if it names one.
pub(crate) fn read_token(token_file: Option<&Path>) -> anyhow::Result<Option<String>> {
    token_file
        .map(leash::read_token_file)
        .transpose()
        .context("reading the admin token file the ready record names")
}

fn request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut stream = TcpStream::connect_timeout(&admin, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").context("no HTTP answer")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, serde_json::from_str(body).unwrap_or_default()))
}
