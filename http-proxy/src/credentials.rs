//! Credentials that never enter the sandbox, and header rules (SPEC §17), on a request's
//! `http::HeaderMap` and `Uri` (so HTTP/1.1 and HTTP/2 requests are treated alike).
//!
//! For an allowed request, in this order: the scope check (a credential's placeholder sent to a
//! host the credential is not for is a block), the substitution (the placeholder in a header
//! value of a request to the credential's hosts becomes the secret, also inside `Basic`), then
//! the header rules (`set`, `remove`) of the request's host, method and path.

use std::sync::Arc;

use base64::{
    alphabet,
    engine::{general_purpose::STANDARD, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};
use hyper::{
    header::{HeaderName, HeaderValue},
    HeaderMap, Method, Uri,
};
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    Request, Response,
};
use policy::{BlockReason, Credential, Decision, Protocol, RuleList, Target};

use crate::{
    proxy::{HttpProxy, Scope, Subject},
    response::ProxyBody,
};

/// Reads `Basic` credentials with or without their `=` padding (clients differ).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How many rounds of percent-decoding the scope check looks through (`%2541` is `%41` once
/// decoded, `A` twice): an origin or a framework in front of it may decode more than once.
const PERCENT_ROUNDS: usize = 3;

/// How much of a request body the scope check reads (SPEC §17).
pub(crate) const BODY_SCAN: usize = 64 * 1024;

/// The credentials and header rules of one leash process.
#[derive(Debug, Default)]
pub struct Credentials {
    credentials: Vec<Credential>,
    headers: Vec<HeaderRule>,
}

/// What the scope check found: the placeholder of `credential` in a request to another host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutOfScope {
    pub(crate) credential: Arc<str>,
}

impl Credentials {
    /// Credentials and header rules, as loaded.
    pub fn new(credentials: Vec<Credential>, headers: Vec<HeaderRule>) -> Credentials {
        Credentials {
            credentials,
            headers,
        }
    }

    /// Whether there is nothing to check or edit.
    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty() && self.headers.is_empty()
    }

    /// Whether a request body to `target` must be scanned (some credential is not for it).
    pub(crate) fn scans_body_to(&self, target: &Target) -> bool {
        self.credentials.iter().any(|c| !c.serves(target))
    }

    /// The scope check, the substitution and the header rules for a request to `target`.
    pub(crate) fn apply(
        &self,
        target: &Target,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
    ) -> Result<(), OutOfScope> {
        self.check_scope(target, uri, headers)?;
        self.substitute(target, headers);
        for rule in self
            .headers
            .iter()
            .filter(|r| r.applies(target, method, uri))
        {
            rule.edit(headers);
        }
        Ok(())
    }

    /// The first credential not for `target` whose placeholder the URI or a header carries.
    fn check_scope(
        &self,
        target: &Target,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<(), OutOfScope> {
        let foreign = || self.credentials.iter().filter(|c| !c.serves(target));
        if foreign().next().is_none() {
            return Ok(());
        }
        let texts = request_texts(uri, headers);
        for credential in foreign() {
            let needle = credential.placeholder.as_bytes();
            if texts.iter().any(|text| contains(text, needle)) {
                return Err(out_of_scope(credential));
            }
        }
        Ok(())
    }

    /// The scope check on the first bytes of a body to `target` (raw and percent-decoded: a form
    /// body is percent-encoded).
    pub(crate) fn check_body(&self, target: &Target, body: &[u8]) -> Result<(), OutOfScope> {
        let texts = decodings(body.to_vec());
        for credential in self.credentials.iter().filter(|c| !c.serves(target)) {
            let needle = credential.placeholder.as_bytes();
            if texts.iter().any(|text| contains(text, needle)) {
                return Err(out_of_scope(credential));
            }
        }
        Ok(())
    }

    /// Every placeholder of a credential for `target` in a header value becomes its secret.
    fn substitute(&self, target: &Target, headers: &mut HeaderMap) {
        for credential in self.credentials.iter().filter(|c| c.serves(target)) {
            for value in headers.values_mut() {
                if let Some(new) = substituted(value.as_bytes(), credential) {
                    *value = new;
                }
            }
        }
    }

    /// `text` with every placeholder replaced by `<leash-cred-NAME>`, for what is logged.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.credentials.iter().fold(text.to_owned(), |text, c| {
            text.replace(&c.placeholder, &format!("<leash-cred-{}>", c.name))
        })
    }
}

fn out_of_scope(credential: &Credential) -> OutOfScope {
    OutOfScope {
        credential: credential.name.as_str().into(),
    }
}

/// What the scope check searches in a request head: the path and query (raw and
/// percent-decoded), every header value, all header values run together (a placeholder split
/// across headers), and the decoded user-pass of every `Basic` value.
fn request_texts(uri: &Uri, headers: &HeaderMap) -> Vec<Vec<u8>> {
    let target = uri.path_and_query().map_or("", |pq| pq.as_str());
    let mut texts = decodings(target.as_bytes().to_vec());
    if let Some(authority) = uri.authority() {
        // The userinfo of an absolute-form URI (`http://user:pass@host/`).
        texts.extend(decodings(authority.as_str().as_bytes().to_vec()));
    }
    let mut joined = Vec::new();
    for value in headers.values() {
        joined.extend_from_slice(value.as_bytes());
        if let Some(decoded) = basic_user_pass(value.as_bytes()) {
            texts.push(decoded);
        }
    }
    texts.push(joined);
    texts
}

/// `text`, then each further percent-decoding of it that changes it (up to `PERCENT_ROUNDS`).
fn decodings(text: Vec<u8>) -> Vec<Vec<u8>> {
    let mut texts = vec![text];
    for _ in 0..PERCENT_ROUNDS {
        let last = texts.last().expect("one text at least");
        let decoded: Vec<u8> = percent_encoding::percent_decode(last).collect();
        if &decoded == last {
            break;
        }
        texts.push(decoded);
    }
    texts
}

/// The decoded `user:pass` of a `Basic` header value, if it is one.
fn basic_user_pass(value: &[u8]) -> Option<Vec<u8>> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    LENIENT.decode(rest.trim_ascii()).ok()
}

/// `value` with `credential`'s placeholder replaced by its secret, inside `Basic` too; `None`
/// when it holds no placeholder. The new value is marked sensitive (HTTP/2 never indexes it).
fn substituted(value: &[u8], credential: &Credential) -> Option<HeaderValue> {
    let (needle, secret) = (
        credential.placeholder.as_bytes(),
        credential.secret.expose().as_bytes(),
    );
    let mut new = replace_all(value, needle, secret);
    if let Some(user_pass) = basic_user_pass(value) {
        if let Some(replaced) = replace_all(&user_pass, needle, secret) {
            let mut basic = b"Basic ".to_vec();
            basic.extend_from_slice(STANDARD.encode(replaced).as_bytes());
            new = Some(basic);
        }
    }
    // The secret was checked at load to be a valid header value, so this cannot fail; a value
    // that did would be left as it was (the placeholder), never cut.
    let mut value = HeaderValue::from_bytes(&new?).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `hay` with every `needle` replaced by `with`; `None` when there is none.
fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    let first = find(hay, needle)?;
    let mut out = hay[..first].to_vec();
    let mut rest = &hay[first..];
    while let Some(at) = find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    Some(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// One `[[headers]]` rule: edits allowed requests to `hosts`, for `methods` (all when empty) and
/// `paths` (all when empty; `*` in a path matches any run of characters, `/` included).
#[derive(Debug)]
pub struct HeaderRule {
    hosts: RuleList,
    methods: Vec<Method>,
    paths: Vec<String>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

/// A `[[headers]]` rule that cannot be used: which key, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct HeaderRuleError {
    /// The key inside the rule (`methods[0]`, `set.x-team`, `remove[1]`).
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// What a `[[headers]]` rule is made from, as written.
#[derive(Clone, Debug, Default)]
pub struct HeaderRuleSpec<'a> {
    /// Methods (empty: all).
    pub methods: &'a [String],
    /// Path globs (empty: all).
    pub paths: &'a [String],
    /// Headers to set (replacing any the client sent).
    pub set: Vec<(&'a str, &'a str)>,
    /// Headers to remove.
    pub remove: &'a [String],
}

impl HeaderRule {
    /// A rule for `hosts`; names, values, methods and paths are checked here, at load.
    pub fn new(hosts: RuleList, spec: &HeaderRuleSpec<'_>) -> Result<HeaderRule, HeaderRuleError> {
        let error = |key: String, problem: &str| HeaderRuleError {
            key,
            problem: problem.to_owned(),
        };
        let methods = (spec.methods.iter().enumerate())
            .map(|(i, m)| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| error(format!("methods[{i}]"), "not an HTTP method"))
            })
            .collect::<Result<_, _>>()?;
        for (i, path) in spec.paths.iter().enumerate() {
            if !path.starts_with('/') {
                return Err(error(format!("paths[{i}]"), "a path starts with `/`"));
            }
        }
        let set = (spec.set.iter())
            .map(|(name, value)| {
                let key = || format!("set.{name}");
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| error(key(), "not a header name"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|_| error(key(), "not a header value (control bytes?)"))?;
                Ok((name, value))
            })
            .collect::<Result<_, _>>()?;
        let remove = (spec.remove.iter().enumerate())
            .map(|(i, name)| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| error(format!("remove[{i}]"), "not a header name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(HeaderRule {
            hosts,
            methods,
            paths: spec.paths.to_vec(),
            set,
            remove,
        })
    }

    fn applies(&self, target: &Target, method: &Method, uri: &Uri) -> bool {
        self.hosts.matches(target)
            && (self.methods.is_empty() || self.methods.contains(method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| glob(p, uri.path())))
    }

    fn edit(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (`/` included) and
/// everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The SPEC §17 step of an allowed request to `target`, before it is sent: the request edited in
/// place, or the `credential_scope` block (logged with the credential's name; the placeholder is
/// redacted from the logged path) to answer instead.
pub(crate) fn vet_request<B>(
    proxy: &HttpProxy,
    scope: &Scope,
    target: &Target,
    req: &mut Request<B>,
    protocol: Protocol,
) -> Result<(), Box<Response<ProxyBody>>> {
    let credentials = &proxy.credentials;
    if credentials.is_empty() {
        return Ok(());
    }
    let (parts_uri, method) = (req.uri().clone(), req.method().clone());
    let Err(out) = credentials.apply(target, &method, &parts_uri, req.headers_mut()) else {
        return Ok(());
    };
    let path = credentials.redact(parts_uri.path());
    let subject = Subject {
        host: target.host().to_string(),
        port: target.port(),
        protocol,
        method: method.as_str(),
        path: Some(&path),
    };
    tracing::info!(credential = %out.credential, host = %target, "a credential's placeholder sent to a host it is not for");
    let reason = BlockReason::CredentialScope {
        credential: out.credential,
    };
    Err(Box::new(proxy.block(
        scope,
        Decision::Deny(reason),
        &subject,
    )))
}

/// A request body whose first bytes were read for the scope check (`head`, given out first),
/// then the rest as the client sends it.
#[derive(Debug)]
pub(crate) struct ScannedBody {
    /// The frames read ahead, last first (popped from the end).
    head: Vec<Frame<Bytes>>,
    rest: Incoming,
}

impl Body for ScannedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.head.pop() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = (self.head.iter())
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + ahead);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}

/// The scope check on the first `BODY_SCAN` bytes of a request body to `target`, when some
/// credential is not for it: the body is read that far (or to its end) before anything is sent
/// upstream, within the header timeout. A body too slow for that is refused, not sent unread.
pub(crate) async fn scan_body(
    proxy: &HttpProxy,
    scope: &Scope,
    target: &Target,
    req: Request<Incoming>,
    protocol: Protocol,
) -> Result<Request<ScannedBody>, Box<Response<ProxyBody>>> {
    let (parts, mut rest) = req.into_parts();
    let mut head = Vec::new();
    if proxy.credentials.scans_body_to(target) && !rest.is_end_stream() {
        let read = read_ahead(&mut rest, &mut head);
        let block = |reason| {
            let subject = Subject {
                host: target.host().to_string(),
                port: target.port(),
                protocol,
                method: parts.method.as_str(),
                path: Some(parts.uri.path()),
            };
            Err(Box::new(proxy.block(
                scope,
                Decision::Deny(reason),
                &subject,
            )))
        };
        let invalid = |detail: &str| BlockReason::InvalidRequest {
            detail: detail.to_owned(),
        };
        match tokio::time::timeout(proxy.limits.header_timeout, read).await {
            Ok(Ok(seen)) => {
                if let Err(out) = proxy.credentials.check_body(target, &seen) {
                    let credential = out.credential;
                    return block(BlockReason::CredentialScope { credential });
                }
            }
            Ok(Err(_)) => return block(invalid("malformed request body")),
            Err(_) => return block(invalid("request body too slow for the credential scan")),
        }
        head.reverse();
    }
    Ok(Request::from_parts(parts, ScannedBody { head, rest }))
}

/// Reads frames of `body` into `frames` until `BODY_SCAN` data bytes or its end; returns them.
async fn read_ahead(
    body: &mut Incoming,
    frames: &mut Vec<Frame<Bytes>>,
) -> Result<Vec<u8>, hyper::Error> {
    let mut seen = Vec::new();
    while seen.len() < BODY_SCAN {
        let Some(frame) = body.frame().await.transpose()? else {
            break;
        };
        if let Some(data) = frame.data_ref() {
            let room = BODY_SCAN - seen.len();
            seen.extend_from_slice(&data[..data.len().min(room)]);
        }
        frames.push(frame);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests;
