//! The SOCKS5 handshake as a small state machine with typed states:
//! `greet` → `Greeting` → `negotiate` → `Authenticated` → `read_request` → `Requested`.
//! Each step reads exactly what RFC 1928/1929 says comes next, and nothing else.

use policy::{check_proxy_credentials, CredentialError, ProxyAuth};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::{
    Address, AUTH_FAILURE, AUTH_SUCCESS, AUTH_VERSION, CMD_BIND, CMD_CONNECT, CMD_UDP_ASSOCIATE,
    METHOD_NONE_ACCEPTABLE, METHOD_NO_AUTH, METHOD_USER_PASS, VERSION,
};

/// The client's greeting: the methods it offers.
#[derive(Debug)]
pub(crate) struct Greeting {
    methods: Vec<u8>,
}

/// The client is who it says (or needs not say) it is.
#[derive(Debug)]
pub(crate) struct Authenticated {
    pub(crate) attempt: Option<String>,
}

/// The client's request.
#[derive(Debug)]
pub(crate) struct Requested {
    pub(crate) command: Command,
    pub(crate) address: Address,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Connect,
    Bind,
    UdpAssociate,
    Unknown,
}

/// Why the handshake stopped.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The first byte is not SOCKS version 5 (SOCKS4/4a, HTTP, garbage).
    NotSocks5 { first: u8 },
    /// No offered method is acceptable (no-auth while a token is required).
    NoAcceptableMethod,
    /// Username/password refused.
    Credentials(CredentialError),
    /// A malformed message.
    Malformed(&'static str),
    /// An address type other than IPv4, domain, IPv6.
    AddressType,
    /// The connection broke.
    Io,
}

impl From<std::io::Error> for HandshakeError {
    fn from(_: std::io::Error) -> Self {
        HandshakeError::Io
    }
}

/// Reads the greeting: `VER NMETHODS METHODS…`.
pub(crate) async fn greet<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Greeting, HandshakeError> {
    let version = stream.read_u8().await?;
    if version != VERSION {
        return Err(HandshakeError::NotSocks5 { first: version });
    }
    let count = stream.read_u8().await?;
    let mut methods = vec![0; usize::from(count)];
    stream.read_exact(&mut methods).await?;
    Ok(Greeting { methods })
}

impl Greeting {
    /// Picks the method, answers it, and runs RFC 1929 when username/password was picked.
    /// Username/password is preferred even without a token: it carries the attempt id.
    pub(crate) async fn negotiate<S>(
        self,
        stream: &mut S,
        auth: ProxyAuth<'_>,
    ) -> Result<Authenticated, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let offers = |m| self.methods.contains(&m);
        let method = match (
            offers(METHOD_USER_PASS),
            offers(METHOD_NO_AUTH),
            auth.required(),
        ) {
            (true, _, _) => METHOD_USER_PASS,
            (false, true, false) => METHOD_NO_AUTH,
            _ => METHOD_NONE_ACCEPTABLE,
        };
        stream.write_all(&[VERSION, method]).await?;
        match method {
            METHOD_NO_AUTH => Ok(Authenticated { attempt: None }),
            METHOD_USER_PASS => user_pass(stream, auth).await,
            _ => Err(HandshakeError::NoAcceptableMethod),
        }
    }
}

/// RFC 1929: `VER ULEN UNAME PLEN PASSWD`, answered `VER STATUS`.
async fn user_pass<S>(stream: &mut S, auth: ProxyAuth<'_>) -> Result<Authenticated, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if stream.read_u8().await? != AUTH_VERSION {
        return Err(HandshakeError::Malformed("bad username/password version"));
    }
    let username = read_short_string(stream).await?;
    let password = read_short_string(stream).await?;
    let checked = match (String::from_utf8(username), String::from_utf8(password)) {
        (Ok(user), Ok(pass)) => check_proxy_credentials(Some(&user), Some(&pass), auth),
        _ => Err(CredentialError::BadAttemptId),
    };
    let status = if checked.is_ok() {
        AUTH_SUCCESS
    } else {
        AUTH_FAILURE
    };
    stream.write_all(&[AUTH_VERSION, status]).await?;
    checked
        .map(|attempt| Authenticated { attempt })
        .map_err(HandshakeError::Credentials)
}

async fn read_short_string<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Vec<u8>, HandshakeError> {
    let len = stream.read_u8().await?;
    let mut bytes = vec![0; usize::from(len)];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

/// Reads the request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Requested, HandshakeError> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(HandshakeError::Malformed("bad request version"));
    }
    let command = match head[1] {
        CMD_CONNECT => Command::Connect,
        CMD_BIND => Command::Bind,
        CMD_UDP_ASSOCIATE => Command::UdpAssociate,
        _ => Command::Unknown,
    };
    let address = read_address(stream, head[3]).await?;
    Ok(Requested { command, address })
}

async fn read_address<S: AsyncRead + Unpin>(
    stream: &mut S,
    atyp: u8,
) -> Result<Address, HandshakeError> {
    let mut bytes = vec![atyp];
    let rest = match atyp {
        crate::wire::ATYP_IPV4 => 4 + 2,
        crate::wire::ATYP_IPV6 => 16 + 2,
        crate::wire::ATYP_DOMAIN => {
            let len = stream.read_u8().await?;
            bytes.push(len);
            usize::from(len) + 2
        }
        _ => return Err(HandshakeError::AddressType),
    };
    let start = bytes.len();
    bytes.resize(start + rest, 0);
    stream.read_exact(&mut bytes[start..]).await?;
    match Address::parse(&bytes) {
        Ok(Some((address, _))) => Ok(address),
        _ => Err(HandshakeError::Malformed("bad address")),
    }
}

#[cfg(test)]
mod tests;
