//! The request-head rules of RFC 9112 and RFC 9110, checked on the raw bytes of one complete head
//! before hyper parses it. Everything hyper would refuse with a bare `400` is refused here first
//! (httparse, the parser hyper uses, with hyper's settings), so that every refusal gets leash's JSON
//! answer and a log line; the rules hyper does not check (Host, request-target forms, versions it
//! cannot name, the smuggling shapes it resolves silently) are checked here too.

use hyper::{http::uri::Authority, Uri};

/// hyper's limits: header fields per head, and bytes in a request-target.
const MAX_HEADERS: usize = 100;
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// How a refused head is answered; `response::head_status` maps it to the status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadStatus {
    /// `400`: the head breaks a rule.
    BadRequest,
    /// `431`: the head is over `limits.max_request_head`, or has too many fields.
    TooLarge,
    /// `414`: the request-target is longer than any leash forwards.
    UriTooLong,
    /// `505`: a well-formed HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

/// Why a head is refused, and what it named (for the log line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeadRefusal {
    pub(crate) status: HeadStatus,
    pub(crate) detail: String,
    pub(crate) method: String,
    pub(crate) target: String,
}

/// An accepted head: how its message is framed, and what hyper's reading of it loses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) framing: Framing,
    /// `OPTIONS http://host` (no path, no query): sent on as `OPTIONS *` (RFC 9112 §3.2.4), which
    /// hyper's `Uri` cannot tell from `OPTIONS http://host/`.
    pub(crate) options_asterisk: bool,
}

/// How the message after an accepted head is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: the next bytes are the next head.
    Empty,
    Length(u64),
    Chunked,
    /// A `CONNECT`: what follows is a tunnel or the next head, depending on the answer.
    Connect,
    /// A WebSocket handshake (RFC 6455 §4.1: `GET`, HTTP/1.1, no body, `Upgrade: websocket`,
    /// `Connection: upgrade`): what follows is the WebSocket's (after a `101`) or the next head.
    WebSocket,
}

/// Checks one complete head (`head` ends with its empty line; leading empty lines are skipped).
pub(crate) fn check(head: &[u8], max_head: usize) -> Result<Accepted, HeadRefusal> {
    let line = request_line(head);
    let words = line.split(' ');
    let refuse = |status, detail: &str| HeadRefusal {
        status,
        detail: detail.to_owned(),
        method: clip(words.clone().next().unwrap_or_default()),
        target: clip(words.clone().nth(1).unwrap_or_default()),
    };
    let bad = |detail: &str| refuse(HeadStatus::BadRequest, detail);
    if head.len() > max_head {
        return Err(refuse(
            HeadStatus::TooLarge,
            &format!("request head over {max_head} bytes"),
        ));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(
                HeadStatus::TooLarge,
                &format!("more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(httparse::Error::Version) => return Err(version_refusal(&line, refuse)),
        Err(error) => return Err(bad(&format!("malformed request head: {error}"))),
    }
    let (method, target) = (req.method.unwrap_or_default(), req.path.unwrap_or_default());
    let http11 = req.version == Some(1);
    let form = target_form(method, target).map_err(|(status, detail)| refuse(status, detail))?;
    // A `CONNECT`'s target is its authority; clients that tunnel (netcat, older libraries) often
    // send no `Host` with it, and leash never reads it: only there may it be missing.
    let host_required = http11 && !matches!(form, Form::Authority);
    host_rule(req.headers, host_required).map_err(bad)?;
    let framing = body_framing(req.headers, http11).map_err(bad)?;
    if has_bare_lf(head) {
        return Err(bad("a bare LF line ending in the request head"));
    }
    let handshake = method == "GET" && http11 && websocket_handshake(req.headers);
    let framing = match (form, framing) {
        (Form::Authority, Framing::Empty) => Framing::Connect,
        (Form::Authority, _) => return Err(bad("CONNECT with content (RFC 9110 §9.3.6)")),
        (Form::Other, Framing::Empty) if handshake => Framing::WebSocket,
        (Form::Other, framing) => framing,
    };
    Ok(Accepted {
        framing,
        options_asterisk: method == "OPTIONS" && bare_authority(target),
    })
}

/// `Upgrade` names `websocket` and `Connection` names `upgrade` (tokens, any case). The one
/// reading of "this is a WebSocket handshake": the gate holds what follows it, and the handler
/// (told through `WebSocketHandshake`) forwards its upgrade headers and relays after a `101`.
fn websocket_handshake(fields: &[httparse::Header<'_>]) -> bool {
    let names = |field: &str, token: &str| {
        fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(field))
            .flat_map(|f| f.value.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    names("upgrade", "websocket") && names("connection", "upgrade")
}

/// An absolute URI with nothing after its authority: `http://host[:port]`.
fn bare_authority(target: &str) -> bool {
    target
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.contains(['/', '?']))
}

/// The request line, for naming what was refused: the first line that is not empty.
fn request_line(head: &[u8]) -> String {
    let start = head
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(head.len());
    let rest = &head[start..];
    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .trim_end_matches('\r')
        .to_owned()
}

/// What a refusal names is the client's text: kept short, it is escaped where it is shown.
fn clip(word: &str) -> String {
    word.chars().take(256).collect()
}

/// A version in the shape `HTTP/D.D` that is not 1.0 or 1.1 is `505` (RFC 9110 §15.6.6: `HTTP/2.0`
/// or `HTTP/1.2` in an HTTP/1 head); anything else where the version should be is a bad request
/// line (`400`), e.g. whitespace inside the request-target pushing a word into the version's place.
fn version_refusal(line: &str, refuse: impl Fn(HeadStatus, &str) -> HeadRefusal) -> HeadRefusal {
    let words: Vec<&str> = line.split(' ').collect();
    let well_formed = |v: &str| {
        let b = v.as_bytes();
        b.len() == 8
            && v.starts_with("HTTP/")
            && b[5].is_ascii_digit()
            && b[6] == b'.'
            && b[7].is_ascii_digit()
    };
    match words.as_slice() {
        [_, _, version] if well_formed(version) => refuse(
            HeadStatus::VersionNotSupported,
            &format!("{version} in an HTTP/1 request head (only HTTP/1.0 and HTTP/1.1)"),
        ),
        [_, _, _] => refuse(HeadStatus::BadRequest, "malformed HTTP version"),
        _ => refuse(
            HeadStatus::BadRequest,
            "malformed request line (whitespace in the request-target?)",
        ),
    }
}

/// What the request-target form allows next: a `CONNECT` (authority-form) or anything else.
enum Form {
    Authority,
    Other,
}

/// RFC 9112 §3.2: origin-form (`/path`), absolute-form, authority-form only for `CONNECT`,
/// asterisk-form only for `OPTIONS`; a fragment is never part of any (RFC 9110 §4.2.5).
fn target_form(method: &str, target: &str) -> Result<Form, (HeadStatus, &'static str)> {
    let bad = |detail| Err((HeadStatus::BadRequest, detail));
    if target.len() > MAX_TARGET {
        return Err((HeadStatus::UriTooLong, "request-target too long"));
    }
    if target.contains('#') {
        return bad("a fragment in the request-target (never sent, RFC 9110 §4.2.5)");
    }
    let Ok(uri) = target.parse::<Uri>() else {
        return bad("invalid request-target");
    };
    let authority_form = uri.scheme().is_none() && uri.authority().is_some();
    match (method == "CONNECT", target) {
        (true, _) if authority_form && !target.contains('/') => Ok(Form::Authority),
        (true, _) => bad("CONNECT needs authority-form host:port (RFC 9110 §9.3.6)"),
        (false, "*") if method == "OPTIONS" => Ok(Form::Other),
        (false, "*") => bad("asterisk-form is only for OPTIONS (RFC 9112 §3.2.4)"),
        (false, _) if authority_form => bad("authority-form is only for CONNECT (RFC 9112 §3.2.3)"),
        (false, _) if uri.scheme().is_some() || target.starts_with('/') => Ok(Form::Other),
        (false, _) => bad("the request-target is none of the forms of RFC 9112 §3.2"),
    }
}

/// RFC 9112 §3.2: a server MUST answer `400` to an HTTP/1.1 request without `Host`, and to any
/// request with more than one `Host` or an invalid one (not `uri-host [":" port]`; an empty one is
/// what a client sends for a target without authority, and is valid).
fn host_rule(fields: &[httparse::Header<'_>], required: bool) -> Result<(), &'static str> {
    let mut hosts = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("host"));
    match (hosts.next(), hosts.next()) {
        (None, _) if required => Err("an HTTP/1.1 request without Host (RFC 9112 §3.2)"),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err("more than one Host (RFC 9112 §3.2)"),
        (Some(host), None) if valid_host(host.value) => Ok(()),
        (Some(_), None) => Err("an invalid Host (RFC 9112 §3.2)"),
    }
}

fn valid_host(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    value.is_empty()
        || (!value.contains(&b'@') && Authority::try_from(value).is_ok_and(|a| port_digits(&a)))
}

/// `Authority` takes a port of any characters; `port = *DIGIT` (RFC 3986 §3.2.3).
fn port_digits(authority: &Authority) -> bool {
    let text = authority.as_str();
    match text.rsplit_once(':') {
        Some(_) if text.ends_with(']') => true, // an IPv6 literal without a port
        Some((_, port)) => port.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    }
}

/// The body's framing, refusing what hyper refuses (a bad length, a final coding that is not
/// chunked, `Transfer-Encoding` in HTTP/1.0) and the smuggling shapes it resolves silently (both
/// headers: chunked wins; duplicate lengths, even equal ones: SPEC §3).
fn body_framing(fields: &[httparse::Header<'_>], http11: bool) -> Result<Framing, &'static str> {
    let (mut length, mut lengths, mut codings) = (None, 0, None::<String>);
    for field in fields {
        if field.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            let text = std::str::from_utf8(field.value).unwrap_or_default().trim();
            if text.contains(',') {
                return Err("more than one Content-Length (a smuggling shape)");
            }
            match text.bytes().all(|b| b.is_ascii_digit()) {
                true => length = text.parse::<u64>().ok(),
                false => length = None,
            }
            if length.is_none() {
                return Err("an invalid Content-Length");
            }
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = String::from_utf8_lossy(field.value).to_ascii_lowercase();
            codings = Some(codings.map_or(value.clone(), |c| format!("{c}, {value}")));
        }
    }
    match (length, lengths, codings) {
        (_, 1.., Some(_)) => Err("both Content-Length and Transfer-Encoding (a smuggling shape)"),
        (_, 2.., None) => Err("more than one Content-Length (a smuggling shape)"),
        (_, _, Some(_)) if !http11 => Err("Transfer-Encoding in an HTTP/1.0 request"),
        (_, _, Some(codings)) => match codings.rsplit(',').next().map(str::trim) {
            Some("chunked") => Ok(Framing::Chunked),
            _ => Err("a Transfer-Encoding whose final coding is not chunked"),
        },
        (Some(0) | None, _, None) => Ok(Framing::Empty),
        (Some(length), _, None) => Ok(Framing::Length(length)),
    }
}

/// hyper accepts a bare LF as a line ending (RFC 9112 §2.2 allows a recipient to); leash does not,
/// since a server behind another proxy may split the lines differently.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}
