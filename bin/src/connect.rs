//! `leash connect HOST PORT`: stdin/stdout relayed to HOST:PORT through a running leash over
//! SOCKS5, for `ssh -o ProxyCommand='leash connect %h %p'` (ssh reads no proxy variable). leash is
//! found from `ALL_PROXY` as `leash exec` sets it, or from a ready record.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_socks::{tcp::Socks5Stream, Error as SocksError};

use crate::Exit;

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The host to reach; a name is resolved by leash, under its policy.
    host: String,
    /// The port to reach.
    port: u16,
    /// Find leash's SOCKS5 listener in this ready record (`leash proxy --ready-file`) instead of
    /// in `ALL_PROXY`.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// The attempt id, with --ready-file [default: connect].
    #[arg(long, value_name = "ID", requires = "ready_file")]
    attempt: Option<String>,
    /// The proxy password (`auth.token`), with --ready-file, if leash requires one. Visible to
    /// other users in the process list: prefer $LEASH_PROXY_TOKEN, read when this is absent.
    #[arg(long, value_name = "TOKEN", requires = "ready_file")]
    token: Option<String>,
}

/// Where `--ready-file` users may put the proxy token instead of the command line.
const PROXY_TOKEN_VAR: &str = "LEASH_PROXY_TOKEN";

/// leash's SOCKS5 listener and what to tell it.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    /// `HOST:PORT` of the listener.
    proxy: String,
    /// The attempt id (the SOCKS5 username).
    attempt: Option<String>,
    /// The proxy token (the SOCKS5 password).
    token: Option<String>,
}

pub(crate) fn run(args: ConnectArgs) -> Exit {
    let endpoint = match locate(&args) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            eprintln!("leash: connect: {error:#}");
            return Exit::Usage;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("leash: connect: starting the async runtime: {error}");
            return Exit::Usage;
        }
    };
    let host = args.host.trim_start_matches('[').trim_end_matches(']');
    let outcome = runtime.block_on(connect(&endpoint, host, args.port));
    // The read of stdin cannot be cancelled: waiting for it would keep ssh's proxy open after
    // the remote has closed.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => Exit::Ok,
        Err(error) => {
            eprintln!(
                "leash: connect {} {error:#}",
                display_target(host, args.port)
            );
            Exit::Refused
        }
    }
}

/// The SOCKS5 endpoint from `--ready-file`, else from `ALL_PROXY` / `all_proxy`.
fn locate(args: &ConnectArgs) -> anyhow::Result<Endpoint> {
    if let Some(path) = &args.ready_file {
        let attempt = args.attempt.clone().unwrap_or_else(|| "connect".into());
        if !policy::is_attempt_id(&attempt) {
            bail!("--attempt {attempt:?}: an attempt id is 1-128 bytes of [A-Za-z0-9._:-]");
        }
        return Ok(Endpoint {
            proxy: ready_socks(path)?,
            attempt: Some(attempt),
            token: args.token.clone().or_else(|| {
                std::env::var(PROXY_TOKEN_VAR)
                    .ok()
                    .filter(|t| !t.is_empty())
            }),
        });
    }
    let url = ["ALL_PROXY", "all_proxy"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .context(
            "no SOCKS5 proxy to go through: ALL_PROXY is not set \
             (run under `leash exec`, or give --ready-file FILE)",
        )?;
    parse_proxy_url(&url).context("ALL_PROXY")
}

/// The `"socks"` address of a ready record.
fn ready_socks(path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ready: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a ready record", path.display()))?;
    match ready["socks"].as_str() {
        Some(addr) => Ok(addr.to_owned()),
        None => bail!(
            "the ready record {} has no SOCKS5 address (leash runs without its SOCKS5 \
             listener: `socks.enabled = false` or --no-socks)",
            path.display()
        ),
    }
}

/// `socks5h://ATTEMPT:TOKEN@HOST:PORT` (or `socks5://`; the userinfo percent-encoded, optional).
/// Errors never repeat the URL: it may hold the token.
fn parse_proxy_url(url: &str) -> anyhow::Result<Endpoint> {
    let (scheme, rest) = url.split_once("://").context("not a URL")?;
    // `socks5://` asks a client to resolve names itself; leash is always given the name, since
    // its policy decides on names and it resolves under that policy.
    if !matches!(scheme.to_ascii_lowercase().as_str(), "socks5h" | "socks5") {
        bail!("a {scheme}:// URL, not socks5h:// (is leash's SOCKS5 listener off?)");
    }
    let rest = rest.trim_end_matches('/');
    let (userinfo, proxy) = match rest.rsplit_once('@') {
        Some((userinfo, proxy)) => (Some(userinfo), proxy),
        None => (None, rest),
    };
    if !proxy
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        bail!("the proxy address is not HOST:PORT");
    }
    let (attempt, token) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((user, password)) => (percent_decode(user)?, percent_decode(password)?),
        None => (String::new(), String::new()),
    };
    let some = |text: String| Some(text).filter(|t| !t.is_empty());
    Ok(Endpoint {
        proxy: proxy.to_owned(),
        attempt: some(attempt),
        token: some(token),
    })
}

/// RFC 3986 percent-decoding (`leash exec` encodes the attempt id and token).
fn percent_decode(text: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'%' {
            bytes.push(byte);
            continue;
        }
        let hex = rest
            .get(..2)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .context("a bad percent-escape in the userinfo")?;
        bytes.push(hex);
        rest = &rest[2..];
    }
    String::from_utf8(bytes).context("the userinfo is not UTF-8")
}

/// Opens the tunnel, then relays until the remote closes.
async fn connect(endpoint: &Endpoint, host: &str, port: u16) -> anyhow::Result<()> {
    let stream = open(endpoint, host, port)
        .await
        .map_err(|error| anyhow::anyhow!(describe(&error, &endpoint.proxy)))?;
    relay(stream).await.context("failed: relaying")
}

/// The SOCKS5 handshake; a name goes to leash as a name (ATYP domain), an IP literal as an IP.
async fn open(endpoint: &Endpoint, host: &str, port: u16) -> Result<TcpStream, SocksError> {
    let proxy = endpoint.proxy.as_str();
    let stream = match (&endpoint.attempt, &endpoint.token) {
        (None, None) => Socks5Stream::connect(proxy, (host, port)).await?,
        // RFC 1929 needs a username and a password of at least one byte each; leash ignores the
        // password when it requires no token, and reads no attempt id from an empty username.
        (attempt, token) => {
            let attempt = attempt.as_deref().unwrap_or("connect");
            let token = token.as_deref().unwrap_or("-");
            Socks5Stream::connect_with_password(proxy, (host, port), attempt, token).await?
        }
    };
    Ok(stream.into_inner())
}

/// One line for a failed handshake, `refused: …` when leash answered with a refusal. A SOCKS5
/// reply carries a code, not leash's reason: the reason is in the violation log and `leash
/// exec`'s summary.
fn describe(error: &SocksError, proxy: &str) -> String {
    let refused = |why: &str| format!("refused: {why}");
    let failed = |why: String| format!("failed: {why}");
    match error {
        SocksError::ConnectionNotAllowedByRuleset => refused(
            "connection not allowed by ruleset (see leash's violation log / blocked summary \
             for the reason)",
        ),
        SocksError::HostUnreachable => refused("host unreachable (the name did not resolve?)"),
        SocksError::NetworkUnreachable => refused("network unreachable"),
        SocksError::ConnectionRefused => refused("connection refused by the target"),
        SocksError::TtlExpired => refused("timed out reaching the target"),
        SocksError::GeneralSocksServerFailure => refused("general failure"),
        SocksError::PasswordAuthFailure(_) => failed(format!(
            "leash at {proxy} refused the credentials (wrong token?)"
        )),
        SocksError::NoAcceptableAuthMethods => {
            failed(format!("leash at {proxy} requires a token (--token)"))
        }
        SocksError::Io(error) => failed(format!(
            "cannot reach leash's SOCKS5 proxy at {proxy}: {error}"
        )),
        SocksError::ProxyServerUnreachable => {
            failed(format!("cannot reach leash's SOCKS5 proxy at {proxy}"))
        }
        other => failed(format!("SOCKS5 with leash at {proxy}: {other}")),
    }
}

/// stdin → socket and socket → stdout. stdin's end half-closes the socket (the remote sees EOF
/// and may still answer); the remote's end ends the relay, whatever stdin is doing.
async fn relay(stream: TcpStream) -> anyhow::Result<()> {
    let (from_remote, to_remote) = stream.into_split();
    let mut upload = std::pin::pin!(pump(tokio::io::stdin(), to_remote));
    let mut download = std::pin::pin!(pump(from_remote, tokio::io::stdout()));
    let mut uploading = true;
    loop {
        tokio::select! {
            done = &mut download => return done.context("relaying to stdout"),
            // A failed upload means the remote or ssh went away; the download says which.
            done = &mut upload, if uploading => {
                if let Err(error) = done {
                    tracing::debug!(%error, "stdin to the remote stopped");
                }
                uploading = false;
            }
        }
    }
}

/// Copies until EOF, then shuts the writer down; flushes every chunk, as ssh waits for each.
async fn pump<R, W>(mut from: R, mut to: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}

/// `host:port`, with an IPv6 literal in brackets.
fn display_target(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(url: &str, proxy: &str, attempt: Option<&str>, token: Option<&str>) {
        let expected = Endpoint {
            proxy: proxy.into(),
            attempt: attempt.map(Into::into),
            token: token.map(Into::into),
        };
        assert_eq!(parse_proxy_url(url).unwrap(), expected, "{url}");
    }

    #[track_caller]
    fn fails(url: &str, message: &str) {
        let error = format!("{:#}", parse_proxy_url(url).unwrap_err());
        assert!(error.contains(message), "{url}: {error}");
        assert!(!error.contains("secret"), "the token leaked: {error}");
    }

    #[test]
    fn all_proxy_urls_as_leash_exec_sets_them() {
        check(
            "socks5h://exec-1a:0f3c@127.0.0.1:4001",
            "127.0.0.1:4001",
            Some("exec-1a"),
            Some("0f3c"),
        );
        check(
            "socks5://a1:t@127.0.0.1:4001/",
            "127.0.0.1:4001",
            Some("a1"),
            Some("t"),
        );
        check(
            "SOCKS5H://a%3A1:p%40ss%25@[::1]:4001",
            "[::1]:4001",
            Some("a:1"),
            Some("p@ss%"),
        );
        check(
            "socks5h://a1@127.0.0.1:4001",
            "127.0.0.1:4001",
            Some("a1"),
            None,
        );
        check("socks5h://127.0.0.1:4001", "127.0.0.1:4001", None, None);
        check(
            "socks5h://:tok@localhost:1080",
            "localhost:1080",
            None,
            Some("tok"),
        );
    }

    #[test]
    fn other_urls_are_refused_without_repeating_them() {
        fails("http://a1:secret@127.0.0.1:4000", "a http:// URL");
        fails("socks4://a1:secret@127.0.0.1:4000", "a socks4:// URL");
        fails("127.0.0.1:4000", "not a URL");
        fails("socks5h://a1:secret@127.0.0.1", "not HOST:PORT");
        fails("socks5h://a1:secret@127.0.0.1:99999", "not HOST:PORT");
        fails("socks5h://a1:secret%zz@127.0.0.1:1", "percent-escape");
        fails("socks5h://a1:secret%ff@127.0.0.1:1", "not UTF-8");
    }

    #[test]
    fn refusals_say_the_policy_refused() {
        let text = describe(&SocksError::ConnectionNotAllowedByRuleset, "127.0.0.1:1");
        assert!(
            text.starts_with("refused: connection not allowed by ruleset"),
            "{text}"
        );
        assert_eq!(display_target("::1", 22), "[::1]:22");
        assert_eq!(display_target("example.com", 22), "example.com:22");
    }
}
