//! Bound attempts (SPEC §18), the `bin` side: fresh secrets from the OS, the expiry of a `ttl`,
//! and what a client is handed (its proxy URLs and environment). The table itself and the
//! credential check are `policy`'s (`Attempts`, `check_proxy_credentials`).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use admin::{AttemptRequest, ControlError};
use policy::{Attempts, Rule};
use serde_json::{json, Value};

use crate::{child_env, embed::Addrs, CaFiles, EnvSpec, Timeout};

/// What issues bound attempts, with what their clients need to reach the proxy.
#[derive(Debug)]
pub(crate) struct Issuer {
    pub(crate) attempts: Arc<Attempts>,
    pub(crate) addrs: Addrs,
    pub(crate) ca: Option<CaFiles>,
    /// Credential variables and placeholders (SPEC §17).
    pub(crate) placeholders: Vec<(String, String)>,
}

/// A bound attempt as handed out: its id, its secret and the child environment carrying both.
#[derive(Clone, Debug)]
pub struct BoundAttempt {
    /// The attempt id.
    pub id: String,
    /// Its secret (the proxy password).
    pub token: String,
    /// The child environment (SPEC §12) with this attempt's id and secret in every proxy URL.
    pub env: Vec<(String, String)>,
}

impl BoundAttempt {
    /// The `POST /attempts` answer: `{"id","token","http","socks","env"}`.
    pub(crate) fn to_json(&self, addrs: &Addrs) -> Value {
        let var = |name: &str| self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let env: serde_json::Map<String, Value> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        json!({
            "id": self.id,
            "token": self.token,
            "http": var("HTTP_PROXY"),
            "socks": addrs.socks.and_then(|_| var("ALL_PROXY")),
            "env": env,
        })
    }
}

impl Issuer {
    /// Binds a fresh secret to `id` (a fresh id when `None`) for `ttl` (for ever when `None`).
    pub(crate) fn bind(
        &self,
        id: Option<&str>,
        ttl: Option<Duration>,
        allow_local_all: bool,
        leash_bin: Option<&Path>,
    ) -> Result<BoundAttempt, ControlError> {
        let random =
            |n| crate::random_hex(n).map_err(|e| ControlError::AttemptRequest(e.to_string()));
        let id = match id {
            Some(id) => id.to_owned(),
            None => format!("attempt-{}", random(4)?),
        };
        let token = random(16)?;
        let now = Instant::now();
        let expires = ttl.map(|ttl| now + ttl);
        self.attempts
            .bind(&id, &token, expires, now)
            .map_err(ControlError::Bind)?;
        let env = match self.addrs.http {
            Some(http) => child_env(&EnvSpec {
                http,
                socks: self.addrs.socks,
                attempt: &id,
                token: Some(&token),
                allow_local_all,
                ca: self.ca.as_ref(),
                leash_bin,
                placeholders: &self.placeholders,
            }),
            None => Vec::new(),
        };
        Ok(BoundAttempt { id, token, env })
    }

    /// Ends attempt `id`.
    pub(crate) fn end(&self, id: &str) -> Result<(), ControlError> {
        match self.attempts.revoke(id) {
            true => Ok(()),
            false => Err(ControlError::NoSuchAttempt(id.to_owned())),
        }
    }
}

/// The most allow rules one attempt is created with.
const MAX_ATTEMPT_RULES: usize = 256;

/// `POST /attempts` checked: its id, its `ttl` (checked like the config's durations) and its
/// allow rules (each a rule of the config's grammar).
#[derive(Debug)]
pub(crate) struct Checked<'a> {
    pub(crate) id: Option<&'a str>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) allow: Vec<Rule>,
}

pub(crate) fn parse_request(request: &AttemptRequest) -> Result<Checked<'_>, ControlError> {
    let refused = |message: String| ControlError::AttemptRequest(message);
    let ttl = match &request.ttl {
        Some(ttl) => Some(
            ttl.parse::<Timeout>()
                .map_err(|e| refused(format!("ttl: {e}")))?
                .get(),
        ),
        None => None,
    };
    if request.allow.len() > MAX_ATTEMPT_RULES {
        return Err(refused(format!(
            "allow: at most {MAX_ATTEMPT_RULES} rules per attempt"
        )));
    }
    let allow = (request.allow.iter().enumerate())
        .map(|(i, text)| (text.parse::<Rule>()).map_err(|e| refused(format!("allow[{i}]: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(Checked {
        id: request.id.as_deref(),
        ttl,
        allow,
    })
}
