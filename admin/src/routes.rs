//! The endpoints of SPEC §8: one table of paths and methods, one handler each, JSON in and out.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{
    body::Incoming,
    header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER},
    Method, Request, Response, StatusCode,
};
use listeners::AnswerError;
use policy::{
    check_credentials, AllowLocal, ApprovedBy, AskAnswer, AskScope, BindError, ExplainReport,
    Explanation, Host, Mode, Protocol, Request as PolicyRequest, Target,
};
use serde::Deserialize;
use serde_json::{json, Value};
use violations::{LogHealth, ViolationLog};

use crate::{
    control::{AttemptRequest, ControlError, RuleChange, RuleOp},
    guard, metrics, page,
    server::{Admin, Exchange, MAX_PARKED},
};

/// Request bodies larger than this get `413`.
const MAX_BODY: usize = 64 * 1024;
/// How long a request body may take to arrive, once its head has.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `/blocked?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The most events one `/blocked` page returns.
const MAX_LIMIT: usize = 1000;

type AdminResponse = Response<Full<Bytes>>;

/// What an admin request asks for; `ROUTES` says where each lives, `dispatch` what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    /// The approvals page (`page.html`), the one endpoint served without the token.
    Page,
    Health,
    Config,
    Patterns,
    Blocked,
    Explain,
    Mode,
    SetMode,
    Reload,
    Rules(RuleOp),
    Metrics,
    Pending,
    Answer,
    BindAttempt,
    EndAttempt,
}

/// Every path once, with its methods and what each does: dispatch, `404` vs `405` and `Allow` all
/// read this table.
const ROUTES: &[(&str, &[(Method, Endpoint)])] = &[
    ("/", &[(Method::GET, Endpoint::Page)]),
    ("/health", &[(Method::GET, Endpoint::Health)]),
    ("/config", &[(Method::GET, Endpoint::Config)]),
    ("/patterns", &[(Method::GET, Endpoint::Patterns)]),
    ("/blocked", &[(Method::GET, Endpoint::Blocked)]),
    ("/explain", &[(Method::GET, Endpoint::Explain)]),
    (
        "/mode",
        &[
            (Method::GET, Endpoint::Mode),
            (Method::POST, Endpoint::SetMode),
        ],
    ),
    ("/reload", &[(Method::POST, Endpoint::Reload)]),
    (
        "/rules",
        &[
            (Method::POST, Endpoint::Rules(RuleOp::Add)),
            (Method::DELETE, Endpoint::Rules(RuleOp::Remove)),
        ],
    ),
    ("/metrics", &[(Method::GET, Endpoint::Metrics)]),
    ("/pending", &[(Method::GET, Endpoint::Pending)]),
    ("/pending/{id}", &[(Method::POST, Endpoint::Answer)]),
    ("/attempts", &[(Method::POST, Endpoint::BindAttempt)]),
    ("/attempts/{id}", &[(Method::DELETE, Endpoint::EndAttempt)]),
];

/// Why no endpoint answers a request.
#[derive(Debug, PartialEq)]
enum Miss {
    /// No such path: `404`.
    Path,
    /// The path exists, not with this method: `405`, its methods in `Allow`.
    Method(&'static [(Method, Endpoint)]),
}

/// The endpoint for `method` on `path`.
fn find(method: &Method, path: &str) -> Result<Endpoint, Miss> {
    let (_, methods) = ROUTES
        .iter()
        .find(|(p, _)| path_matches(p, path))
        .ok_or(Miss::Path)?;
    match methods.iter().find(|(m, _)| m == method) {
        Some((_, endpoint)) => Ok(*endpoint),
        None => Err(Miss::Method(methods)),
    }
}

/// Whether `path` fits `pattern`, where a `{name}` segment stands for one non-empty segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (mut pattern, mut path) = (pattern.split('/'), path.split('/'));
    loop {
        match (pattern.next(), path.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p.starts_with('{') && !s.is_empty() => {}
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

fn refuse(miss: &Miss, path: &str) -> AdminResponse {
    match miss {
        Miss::Path => error(StatusCode::NOT_FOUND, &format!("no endpoint {path}")),
        Miss::Method(methods) => method_not_allowed(methods.iter().map(|(m, _)| m)),
    }
}

/// Answers one request that arrived on a connection whose local end is `local`. The browser
/// defences come first, so a web page learns nothing, not even whether a token is needed.
pub(crate) async fn route(
    admin: &Admin,
    req: Request<Incoming>,
    local: SocketAddr,
    exchange: Exchange,
) -> AdminResponse {
    if let Err(refusal) = guard::check(req.method(), req.headers(), local) {
        return error(refusal.status(), refusal.message());
    }
    let found = find(req.method(), req.uri().path());
    let open = found.as_ref().is_ok_and(|endpoint| !needs_token(*endpoint));
    if !open && !authorized(admin, &req) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    match found {
        Ok(endpoint) => dispatch(admin, endpoint, req, exchange).await,
        Err(miss) => refuse(&miss, req.uri().path()),
    }
}

/// Whether an endpoint wants the bearer token: all but the page, which holds no secret (a person
/// must be able to open it to type the token in) and whose every data call carries the token.
fn needs_token(endpoint: Endpoint) -> bool {
    match endpoint {
        Endpoint::Page => false,
        Endpoint::Health
        | Endpoint::Config
        | Endpoint::Patterns
        | Endpoint::Blocked
        | Endpoint::Explain
        | Endpoint::Mode
        | Endpoint::SetMode
        | Endpoint::Reload
        | Endpoint::Rules(_)
        | Endpoint::Metrics
        | Endpoint::Pending
        | Endpoint::Answer
        | Endpoint::BindAttempt
        | Endpoint::EndAttempt => true,
    }
}

async fn dispatch(
    admin: &Admin,
    endpoint: Endpoint,
    req: Request<Incoming>,
    exchange: Exchange,
) -> AdminResponse {
    let query = parse_query(req.uri().query().unwrap_or(""));
    match endpoint {
        Endpoint::Page => page::response(),
        Endpoint::Health => health(admin),
        Endpoint::Config => ok(admin.control.config()),
        Endpoint::Patterns => patterns(admin),
        Endpoint::Blocked => blocked(admin, &query, exchange).await,
        Endpoint::Explain => explain(admin, &query),
        Endpoint::Mode => ok(json!({ "mode": admin.control.engine().mode() })),
        Endpoint::SetMode => set_mode(admin, req).await,
        Endpoint::Reload => reload(admin),
        Endpoint::Rules(op) => rules(admin, req, op).await,
        Endpoint::Metrics => respond(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            metrics::render(
                admin.log.clone(),
                admin.tunnels.clone(),
                admin.pending.clone(),
            ),
        ),
        Endpoint::Pending => pending(admin, &query, exchange).await,
        Endpoint::Answer => answer(admin, req).await,
        Endpoint::BindAttempt => bind_attempt(admin, req).await,
        Endpoint::EndAttempt => end_attempt(admin, req.uri().path()),
    }
}

async fn bind_attempt(admin: &Admin, req: Request<Incoming>) -> AdminResponse {
    match read_json::<AttemptRequest>(req).await {
        Ok(request) => match admin.control.bind_attempt(&request) {
            Ok(granted) => ok(granted),
            Err(refused) => control_error(&refused),
        },
        Err(response) => response,
    }
}

fn end_attempt(admin: &Admin, path: &str) -> AdminResponse {
    let id = path.rsplit('/').next().unwrap_or_default();
    match admin.control.end_attempt(id) {
        Ok(()) => ok(json!({ "ended": id })),
        Err(refused) => control_error(&refused),
    }
}

fn authorized(admin: &Admin, req: &Request<Incoming>) -> bool {
    let Some(token) = admin.token.as_deref() else {
        return true;
    };
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    check_credentials(None, bearer, Some(token)).is_ok()
}

fn health(admin: &Admin) -> AdminResponse {
    let mode = admin.control.engine().mode();
    let uptime_s = admin.control.uptime().as_secs();
    match admin.log.as_deref().map(ViolationLog::health) {
        Some(LogHealth::Degraded { reason }) => ok(
            json!({ "status": "degraded", "reason": reason, "mode": mode, "uptime_s": uptime_s }),
        ),
        Some(LogHealth::Ok) | None => {
            ok(json!({ "status": "ok", "mode": mode, "uptime_s": uptime_s }))
        }
    }
}

fn patterns(admin: &Admin) -> AdminResponse {
    let Some(policy) = admin.control.policy() else {
        return control_error(&ControlError::EmbeddersEngine);
    };
    let names = |rules: &[policy::Rule]| rules.iter().map(ToString::to_string).collect::<Vec<_>>();
    let allow_local = match policy.allow_local() {
        AllowLocal::None => json!(false),
        AllowLocal::All => json!(true),
        AllowLocal::Only(rules) => json!(names(rules)),
    };
    let sources = admin.control.rule_sources().unwrap_or_default();
    ok(
        json!({ "allow": names(policy.allow_rules()), "deny": names(policy.deny_rules()), "allow_local": allow_local, "sources": sources }),
    )
}

async fn blocked(
    admin: &Admin,
    query: &HashMap<String, String>,
    mut exchange: Exchange,
) -> AdminResponse {
    let number = |key: &str, default: u64| {
        query
            .get(key)
            .map(|v| v.parse::<u64>())
            .unwrap_or(Ok(default))
    };
    let (Ok(since), Ok(limit), Ok(wait)) =
        (number("since", 0), number("limit", 100), number("wait", 0))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "since, limit and wait are whole numbers",
        );
    };
    let Some(log) = admin.log.as_deref() else {
        return ok(json!({ "events": [], "next": since }));
    };
    let limit = (limit as usize).clamp(1, MAX_LIMIT);
    let wait = Duration::from_secs(wait).min(MAX_WAIT);
    let mut page = log.page(since, limit);
    if page.events.is_empty() && !wait.is_zero() {
        let Ok(_place) = admin.parking.try_acquire() else {
            return too_many_waiting();
        };
        let _parked = exchange.park();
        let mut latest = log.subscribe();
        let newer = tokio::time::timeout(wait, latest.wait_for(|seq| *seq > since));
        // Evicted or stopping: the page as it is now, at once (the client polls again).
        tokio::select! {
            _ = newer => {}
            () = exchange.closing() => {}
        }
        page = log.page(since, limit);
    }
    // The events are log lines, already JSON objects: spliced in, not re-encoded.
    let body = format!(
        "{{\"events\":[{}],\"next\":{}}}",
        page.events.join(","),
        page.next
    );
    respond(StatusCode::OK, "application/json", body)
}

/// `GET /pending?since=ID&wait=S` (SPEC §14): the held asks; with `wait` and no item newer than
/// `since`, parks until the list changes in any way, like `/blocked`. A poll makes its client an
/// approver, now and for a while after.
async fn pending(
    admin: &Admin,
    query: &HashMap<String, String>,
    mut exchange: Exchange,
) -> AdminResponse {
    let number = |key: &str| query.get(key).map_or(Ok(0), |v| v.parse::<u64>());
    let (Ok(since), Ok(wait)) = (number("since"), number("wait")) else {
        return error(StatusCode::BAD_REQUEST, "since and wait are whole numbers");
    };
    let Some(pending) = admin.pending.as_ref() else {
        return ok(json!({ "pending": [], "next": since }));
    };
    let _approver = pending.poll();
    let newer = |items: &[listeners::PendingItem]| items.iter().any(|i| i.id > since);
    // Subscribed before the list is read: a change in between wakes the poll.
    let mut changes = pending.subscribe();
    let mut items = pending.list();
    let wait = Duration::from_secs(wait).min(MAX_WAIT);
    if !newer(&items) && !wait.is_zero() {
        let Ok(_place) = admin.parking.try_acquire() else {
            return too_many_waiting();
        };
        let _parked = exchange.park();
        // Any change wakes the poll, not only a newer item: an approver must see an item go
        // (answered elsewhere, withdrawn, timed out) as soon as it goes, or it offers dead buttons.
        let arrived = async {
            let _ = changes.changed().await;
        };
        tokio::select! {
            _ = tokio::time::timeout(wait, arrived) => {}
            () = exchange.closing() => {}
        }
        items = pending.list();
    }
    let next = items.iter().map(|i| i.id).max().unwrap_or(since).max(since);
    ok(json!({ "pending": items, "next": next }))
}

/// The body of `POST /pending/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    answer: AskAnswer,
    scope: AskScope,
    /// Which of leash's own clients answers (the answer line's `by`): `api` when absent, `page`
    /// from the approvals page, `terminal` from `leash approve`. The others name approvers that
    /// answer inside leash, never over HTTP.
    by: Option<ApprovedBy>,
}

/// `POST /pending/{id}`: answers a held ask; `404` when it is gone.
async fn answer(admin: &Admin, req: Request<Incoming>) -> AdminResponse {
    let id = req.uri().path().rsplit('/').next().unwrap_or_default();
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "a pending id is a whole number");
    };
    let body = match read_json::<AnswerBody>(req).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let by = match body.by.unwrap_or(ApprovedBy::Api) {
        by @ (ApprovedBy::Api | ApprovedBy::Page | ApprovedBy::Terminal) => by,
        ApprovedBy::Decider | ApprovedBy::Timeout | ApprovedBy::Policy => {
            return error(
                StatusCode::BAD_REQUEST,
                "by: expected \"api\", \"page\" or \"terminal\"",
            )
        }
    };
    match admin.control.answer(id, body.answer, body.scope, by) {
        Ok(item) => ok(json!({ "answered": item, "answer": body.answer, "scope": body.scope })),
        Err(refused) => control_error(&refused),
    }
}

/// `429` for a long poll past `MAX_PARKED`: a page would look like "no events" to a client that
/// ignores headers and polls again at once; this says wait, and for how long.
fn too_many_waiting() -> AdminResponse {
    let message = format!("{MAX_PARKED} long polls are already waiting; retry later");
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, &message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn explain(admin: &Admin, query: &HashMap<String, String>) -> AdminResponse {
    let Some(host) = query.get("host") else {
        return error(StatusCode::BAD_REQUEST, "host is required");
    };
    let protocol = match query
        .get("protocol")
        .map(|p| p.parse::<Protocol>())
        .transpose()
    {
        Ok(protocol) => protocol.unwrap_or(Protocol::Connect),
        Err(message) => return error(StatusCode::BAD_REQUEST, &format!("protocol: {message}")),
    };
    let default_port = if protocol == Protocol::Http { 80 } else { 443 };
    let Ok(port) = query
        .get("port")
        .map_or(Ok(default_port), |p| p.parse::<u16>())
    else {
        return error(StatusCode::BAD_REQUEST, "port is 1-65535");
    };
    let method = query
        .get("method")
        .cloned()
        .unwrap_or_else(|| match protocol {
            Protocol::Http | Protocol::Https => "GET".to_owned(),
            Protocol::Connect | Protocol::Socks5 | Protocol::Socks5Udp => "CONNECT".to_owned(),
        });
    let engine = admin.control.engine();
    let explanation = match Host::parse(host).and_then(|h| Target::new(h, port)) {
        Ok(target) => engine.explain(&PolicyRequest::new(&target, &method, protocol)),
        Err(error) => Explanation::invalid_target(error),
    };
    let report = ExplainReport {
        decision: &explanation.decision,
        target: host,
        method: &method,
        protocol,
        mode: engine.mode(),
        steps: &explanation.steps,
    };
    ok(serde_json::to_value(report).expect("plain data"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: Mode,
}

async fn set_mode(admin: &Admin, req: Request<Incoming>) -> AdminResponse {
    match read_json::<ModeBody>(req).await {
        Ok(body) => match admin.control.set_mode(body.mode) {
            Ok(mode) => ok(json!({ "mode": mode })),
            Err(refused) => control_error(&refused),
        },
        Err(response) => response,
    }
}

fn reload(admin: &Admin) -> AdminResponse {
    match (admin.control.reload(), admin.control.policy()) {
        (Ok(()), Some(policy)) => ok(
            json!({ "status": "reloaded", "mode": policy.mode(), "allow": policy.allow_rules().len(), "deny": policy.deny_rules().len() }),
        ),
        (Ok(()), None) => control_error(&ControlError::EmbeddersEngine),
        (Err(refused), _) => control_error(&refused),
    }
}

async fn rules(admin: &Admin, req: Request<Incoming>, op: RuleOp) -> AdminResponse {
    let change = match read_json::<RuleChange>(req).await {
        Ok(change) => change,
        Err(response) => return response,
    };
    match admin.control.change_rules(op, &change) {
        Ok(()) => patterns(admin),
        Err(refused) => control_error(&refused),
    }
}

/// The one mapping from a refused change to its status. Every refusal so far is the client's:
/// the request cannot succeed as sent, and the policy in force did not change.
fn control_status(refused: &ControlError) -> StatusCode {
    match refused {
        ControlError::EmbeddersEngine
        | ControlError::NoConfigFile
        | ControlError::Config(_)
        | ControlError::Rule(_)
        | ControlError::Policy(_)
        | ControlError::AttemptRequest(_)
        | ControlError::Bind(BindError::BadId | BindError::BadSecret) => StatusCode::BAD_REQUEST,
        ControlError::AttemptsNotBound | ControlError::Bind(BindError::Taken(_)) => {
            StatusCode::CONFLICT
        }
        ControlError::Bind(BindError::Full) => StatusCode::SERVICE_UNAVAILABLE,
        ControlError::NoSuchAttempt(_) => StatusCode::NOT_FOUND,
        // The answer was given (as `once`); leash failed to keep it.
        ControlError::Approvals(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ControlError::Answer(AnswerError::Gone) => StatusCode::NOT_FOUND,
        ControlError::Answer(AnswerError::AttemptNotBound) => StatusCode::BAD_REQUEST,
    }
}

fn control_error(refused: &ControlError) -> AdminResponse {
    error(control_status(refused), &refused.to_string())
}

/// The body as JSON: `413` over the limit, `408` when it does not arrive within `BODY_TIMEOUT`
/// (the connection stays busy while it is read, so a trickle must not hold it for ever), `400`
/// when it is not the expected JSON.
async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, AdminResponse> {
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body over 64 KiB",
            ))
        }
        Ok(Err(_)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ))
        }
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ))
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

/// `a=1&b=x%2Ey` into a map; `+` is a space, `%XX` is decoded, a bad escape is kept as it is.
fn parse_query(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn ok(value: Value) -> AdminResponse {
    respond(StatusCode::OK, "application/json", value.to_string())
}

fn error(status: StatusCode, message: &str) -> AdminResponse {
    respond(
        status,
        "application/json",
        json!({ "error": message }).to_string(),
    )
}

fn method_not_allowed<'a>(methods: impl Iterator<Item = &'a Method>) -> AdminResponse {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    let allow: Vec<&str> = methods.map(Method::as_str).collect();
    let allow = HeaderValue::from_str(&allow.join(", ")).expect("method names are header-safe");
    response.headers_mut().insert(ALLOW, allow);
    response
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each endpoint lives; the exhaustive match makes a new endpoint name its place here.
    fn place(endpoint: Endpoint) -> (&'static str, Method) {
        match endpoint {
            Endpoint::Page => ("/", Method::GET),
            Endpoint::Health => ("/health", Method::GET),
            Endpoint::Config => ("/config", Method::GET),
            Endpoint::Patterns => ("/patterns", Method::GET),
            Endpoint::Blocked => ("/blocked", Method::GET),
            Endpoint::Explain => ("/explain", Method::GET),
            Endpoint::Mode => ("/mode", Method::GET),
            Endpoint::SetMode => ("/mode", Method::POST),
            Endpoint::Reload => ("/reload", Method::POST),
            Endpoint::Rules(RuleOp::Add) => ("/rules", Method::POST),
            Endpoint::Rules(RuleOp::Remove) => ("/rules", Method::DELETE),
            Endpoint::Metrics => ("/metrics", Method::GET),
            Endpoint::Pending => ("/pending", Method::GET),
            Endpoint::Answer => ("/pending/{id}", Method::POST),
            Endpoint::BindAttempt => ("/attempts", Method::POST),
            Endpoint::EndAttempt => ("/attempts/{id}", Method::DELETE),
        }
    }

    #[test]
    fn a_path_parameter_is_one_non_empty_segment() {
        assert_eq!(
            find(&Method::DELETE, "/attempts/step-7"),
            Ok(Endpoint::EndAttempt)
        );
        for path in ["/attempts/", "/attempts/a/b", "/attempts//", "/attemptsx/a"] {
            assert_eq!(find(&Method::DELETE, path), Err(Miss::Path), "{path}");
        }
        assert_eq!(find(&Method::POST, "/pending/7"), Ok(Endpoint::Answer));
        assert_eq!(find(&Method::POST, "/pending/"), Err(Miss::Path));
        assert_eq!(find(&Method::POST, "/pending/7/x"), Err(Miss::Path));
        assert!(matches!(
            find(&Method::GET, "/pending/7"),
            Err(Miss::Method(_))
        ));
    }

    #[test]
    fn every_route_is_in_the_one_table_once() {
        let mut seen = Vec::new();
        for (path, methods) in ROUTES {
            assert!(!seen.iter().any(|(p, _)| p == path), "{path} twice");
            for (method, endpoint) in *methods {
                assert_eq!(place(*endpoint), (*path, method.clone()), "{endpoint:?}");
                assert_eq!(find(method, path).ok(), Some(*endpoint));
                seen.push((*path, method.clone()));
            }
        }
        assert_eq!(seen.len(), 16, "every endpoint of `place` is in the table");
    }

    #[test]
    fn only_the_page_is_served_without_the_token() {
        assert_eq!(find(&Method::GET, "/"), Ok(Endpoint::Page));
        assert!(!needs_token(Endpoint::Page));
        for (path, methods) in ROUTES {
            for (method, endpoint) in *methods {
                let open = *path == "/" && *method == Method::GET;
                assert_eq!(needs_token(*endpoint), !open, "{method} {path}");
            }
        }
        // Anything else at `/` is no page: it wants the token first, like an unknown path.
        assert!(matches!(find(&Method::POST, "/"), Err(Miss::Method(_))));
        assert_eq!(find(&Method::GET, "//"), Err(Miss::Path));
        assert_eq!(find(&Method::GET, "/index.html"), Err(Miss::Path));
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
        let refused = |method: Method, path: &str| refuse(&find(&method, path).unwrap_err(), path);
        assert_eq!(
            refused(Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            refused(Method::GET, "/health/").status(),
            StatusCode::NOT_FOUND
        );
        let wrong = refused(Method::PUT, "/rules");
        assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.headers()[ALLOW], "POST, DELETE");
        assert_eq!(
            refused(Method::DELETE, "/mode").headers()[ALLOW],
            "GET, POST"
        );
    }

    /// One row per refusal: its status and a word of its message. The exhaustive match makes a
    /// new refusal state its status here.
    fn expected(refused: &ControlError) -> (StatusCode, &'static str) {
        match refused {
            ControlError::EmbeddersEngine => (StatusCode::BAD_REQUEST, "embedding application"),
            ControlError::NoConfigFile => (StatusCode::BAD_REQUEST, "no config file"),
            ControlError::Config(_) => (StatusCode::BAD_REQUEST, "leash.toml:3"),
            ControlError::Rule(_) => (StatusCode::BAD_REQUEST, "invalid rule `a..b`"),
            ControlError::Policy(_) => (StatusCode::BAD_REQUEST, "policy.`allow_local[0]`"),
            ControlError::AttemptsNotBound => (StatusCode::CONFLICT, "auth.attempts"),
            ControlError::Bind(BindError::BadId) => (StatusCode::BAD_REQUEST, "attempt id"),
            ControlError::Bind(BindError::BadSecret) => (StatusCode::BAD_REQUEST, "secret"),
            ControlError::Bind(BindError::Taken(_)) => (StatusCode::CONFLICT, "already bound"),
            ControlError::Bind(BindError::Full) => (StatusCode::SERVICE_UNAVAILABLE, "too many"),
            ControlError::AttemptRequest(_) => (StatusCode::BAD_REQUEST, "ttl"),
            ControlError::NoSuchAttempt(_) => (StatusCode::NOT_FOUND, "no bound attempt"),
            ControlError::Approvals(_) => (StatusCode::INTERNAL_SERVER_ERROR, "not saved"),
            ControlError::Answer(AnswerError::Gone) => (StatusCode::NOT_FOUND, "no pending item"),
            ControlError::Answer(AnswerError::AttemptNotBound) => {
                (StatusCode::BAD_REQUEST, "scope attempt")
            }
        }
    }

    #[test]
    fn every_control_error_has_its_status_and_message() {
        let rule = "a..b".parse::<policy::Rule>().expect_err("invalid");
        let config = policy::PolicyConfig {
            allow_local: policy::AllowLocalConfig::Rules(vec!["example.com".into()]),
            ..Default::default()
        };
        let policy = policy::PolicyBuilder::from_config(&config)
            .and_then(policy::PolicyBuilder::build)
            .expect_err("not a local rule");
        let refusals = [
            ControlError::EmbeddersEngine,
            ControlError::NoConfigFile,
            ControlError::Config("leash.toml:3: bad key".into()),
            ControlError::Rule(rule),
            ControlError::Policy(policy),
            ControlError::AttemptsNotBound,
            ControlError::Bind(BindError::BadId),
            ControlError::Bind(BindError::BadSecret),
            ControlError::Bind(BindError::Taken("a".into())),
            ControlError::Bind(BindError::Full),
            ControlError::AttemptRequest("ttl: not a duration".into()),
            ControlError::NoSuchAttempt("a".into()),
            ControlError::Approvals("a.toml: read-only file system".into()),
            ControlError::Answer(AnswerError::Gone),
            ControlError::Answer(AnswerError::AttemptNotBound),
        ];
        for refused in &refusals {
            let (status, word) = expected(refused);
            let response = control_error(refused);
            assert_eq!(response.status(), status, "{refused:?}");
            assert!(refused.to_string().contains(word), "{refused}");
        }
    }

    #[test]
    fn queries_are_decoded() {
        let query = parse_query("host=%5B%3A%3A1%5D&port=80&x=a+b&bad=%zz&flag");
        assert_eq!(query["host"], "[::1]");
        assert_eq!(query["port"], "80");
        assert_eq!(query["x"], "a b");
        assert_eq!(query["bad"], "%zz");
        assert_eq!(query["flag"], "");
    }
}
