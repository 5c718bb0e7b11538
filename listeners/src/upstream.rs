//! The upstream (corporate) proxy (SPEC §16): where it is, what leash tells it, and the `CONNECT`
//! handshake through it. The dialer decides when a connection takes this route (`dial.rs`); this
//! module only speaks to the upstream.

use std::{fmt, io, sync::Arc};

use base64::Engine as _;
use policy::{Host, RuleList, Target};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::DialError;

/// The largest `CONNECT` answer head read from the upstream; a longer one is a bad answer.
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// Who resolves a target's name when it goes through the upstream (`upstream.resolve`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamResolve {
    /// The upstream resolves it: leash sends the name and does no lookup.
    #[default]
    Upstream,
    /// leash resolves and vets it (SPEC §1.4) and sends the vetted address: a name resolving to
    /// a local address is still refused (the DNS-rebinding guarantee).
    Local,
}

/// An upstream proxy: every connection leash opens goes through it, except to `no_proxy` targets.
pub struct UpstreamProxy {
    host: Host,
    port: u16,
    /// `Basic …` for `Proxy-Authorization`, from the proxy URL's credentials: sent only to the
    /// upstream, never printed.
    authorization: Option<Arc<str>>,
    no_proxy: RuleList,
    resolve: UpstreamResolve,
}

impl fmt::Debug for UpstreamProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamProxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("no_proxy", &self.no_proxy.rules())
            .field("resolve", &self.resolve)
            .finish()
    }
}

impl UpstreamProxy {
    /// The upstream at `host:port`, with the credentials leash presents to it (`user`,
    /// `password`, already percent-decoded), the targets dialled directly and who resolves names.
    pub fn new(
        host: Host,
        port: u16,
        credentials: Option<(&str, &str)>,
        no_proxy: RuleList,
        resolve: UpstreamResolve,
    ) -> UpstreamProxy {
        let authorization = credentials.map(|(user, password)| {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Arc::from(format!("Basic {basic}"))
        });
        UpstreamProxy {
            host,
            port,
            authorization,
            no_proxy,
            resolve,
        }
    }

    /// The upstream's host and port, as a target (for its own lookup).
    pub(crate) fn target(&self) -> Target {
        Target::new(self.host.clone(), self.port).expect("a proxy address is a valid target")
    }

    /// The `Proxy-Authorization` value leash sends, if the proxy URL had credentials.
    pub fn authorization(&self) -> Option<&Arc<str>> {
        self.authorization.as_ref()
    }

    /// Who resolves names sent through it.
    pub fn resolve(&self) -> UpstreamResolve {
        self.resolve
    }

    /// Whether `target` is dialled directly (`no_proxy`).
    pub(crate) fn bypassed(&self, target: &Target) -> bool {
        self.no_proxy.matches(target)
    }

    /// Whether one of a target's resolved addresses is dialled directly (`no_proxy` networks).
    pub(crate) fn bypassed_ip(&self, ip: std::net::IpAddr, port: u16) -> bool {
        self.no_proxy.matches_ip(ip, port)
    }

    /// `CONNECT authority` over `stream` (connected to the upstream): `Ok` once the upstream
    /// answered 2xx, with nothing of the tunnel's bytes read.
    pub(crate) async fn connect(
        &self,
        stream: &mut TcpStream,
        authority: &str,
    ) -> Result<(), DialError> {
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(authorization) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(DialError::UpstreamProxyFailed)?;
        let head = read_answer_head(stream).await?;
        match answer_status(&head)? {
            200..=299 => Ok(()),
            407 => Err(DialError::UpstreamProxyAuth),
            status => Err(DialError::UpstreamProxyRefused(status)),
        }
    }
}

/// Reads the upstream's answer head and not one byte more: what follows it is the tunnel's (an
/// origin that speaks first, like sshd, may already have sent its greeting). Peeking first lets
/// the head be read in one piece when it arrived in one, which it nearly always does.
async fn read_answer_head(stream: &mut TcpStream) -> Result<Vec<u8>, DialError> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        let seen = stream
            .peek(&mut buf)
            .await
            .map_err(DialError::UpstreamProxyFailed)?;
        if seen == 0 {
            return Err(bad_answer(
                "the upstream closed the connection before answering",
            ));
        }
        let take = head_end(&head, &buf[..seen]).unwrap_or(seen);
        let start = head.len();
        head.resize(start + take, 0);
        stream
            .read_exact(&mut head[start..])
            .await
            .map_err(DialError::UpstreamProxyFailed)?;
        if head.ends_with(b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_ANSWER_HEAD {
            return Err(bad_answer("the upstream's answer head is too long"));
        }
    }
}

/// How many bytes of `more` complete the head begun by `head` (the end is `\r\n\r\n`, which may
/// straddle the two).
fn head_end(head: &[u8], more: &[u8]) -> Option<usize> {
    let tail = &head[head.len().saturating_sub(3)..];
    let joined = [tail, more].concat();
    joined
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4 - tail.len())
}

/// The status of a complete answer head.
fn answer_status(head: &[u8]) -> Result<u16, DialError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => response
            .code
            .ok_or_else(|| bad_answer("the upstream's answer has no status")),
        Ok(httparse::Status::Partial) | Err(_) => {
            Err(bad_answer("the upstream's answer is not HTTP"))
        }
    }
}

fn bad_answer(message: &'static str) -> DialError {
    DialError::UpstreamProxyFailed(io::Error::new(io::ErrorKind::InvalidData, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_where_the_blank_line_does_even_across_reads() {
        assert_eq!(head_end(b"", b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0"), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r", b"\nSSH"), Some(1));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n", b"\r\n"), Some(2));
        assert_eq!(head_end(b"HTTP/1.1 200 OK", b"\r\nX: y"), None);
    }

    #[test]
    fn answers_are_read_by_their_status() {
        let status = |head: &[u8]| answer_status(head).ok();
        assert_eq!(
            status(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some(200)
        );
        assert_eq!(
            status(b"HTTP/1.0 407 Auth\r\nProxy-Authenticate: Basic\r\n\r\n"),
            Some(407)
        );
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
    }

    #[test]
    fn credentials_never_reach_a_debug_print() {
        let proxy = UpstreamProxy::new(
            Host::parse("proxy.test").expect("a host"),
            3128,
            Some(("user", "s3cret")),
            RuleList::default(),
            UpstreamResolve::Upstream,
        );
        let printed = format!("{proxy:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("dXNlcjpzM2NyZXQ="),
            "{printed}"
        );
        assert_eq!(
            proxy.authorization().map(|a| &**a),
            Some("Basic dXNlcjpzM2NyZXQ=")
        );
    }
}
