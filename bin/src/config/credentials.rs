//! `[[credentials]]` and `[[headers]]` (SPEC §17): their schema, their checks at load (each error
//! naming the key), and what the running proxy is built from. The secret itself is read here,
//! at load (to refuse an empty or unreadable one) and again when the proxy is built; it is never
//! kept in the `Config`, so `/config` and a debug print cannot show it.

use std::{collections::BTreeMap, path::PathBuf};

use http_proxy::{HeaderRule, HeaderRuleSpec};
use policy::{Credential, Rule, RuleList, Secret};
use serde::{Deserialize, Serialize};

/// One `[[credentials]]` table.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// The name (in placeholders, logs and block reasons): `[A-Za-z0-9_]`, 1–32 bytes.
    pub name: String,
    /// Where the secret may be sent (SPEC §1.1 rules; not `*`).
    pub hosts: Vec<String>,
    /// The variable leash reads the secret from; the child gets the placeholder under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The file leash reads the secret from (one trailing newline dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// With `secret_file`: the variable the child gets the placeholder under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// One `[[headers]]` table.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// The hosts whose allowed requests are edited (SPEC §1.1 rules).
    pub hosts: Vec<String>,
    /// Methods (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Path globs, `*` matching any run of characters (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Headers set (replacing what the client sent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A problem with one key: its path below the table (`credentials[0].hosts[1]`) and the message.
pub(super) type KeyError = (String, String);

impl CredentialConfig {
    /// The variable the child finds the placeholder in.
    pub fn variable(&self) -> &str {
        self.env
            .as_deref()
            .or(self.secret_env.as_deref())
            .unwrap_or_default()
    }

    /// The compiled hosts.
    fn rules(&self) -> Result<Vec<Rule>, (String, String)> {
        if self.hosts.is_empty() {
            return Err((
                "hosts".into(),
                "a credential names at least one host".into(),
            ));
        }
        let parse = |(i, host): (usize, &String)| {
            let key = || format!("hosts[{i}]");
            let rule: Rule = host.parse().map_err(|e| (key(), format!("{e}")))?;
            match host.trim() == "*" {
                true => Err((key(), "`*` would send the secret to every host".into())),
                false => Ok(rule),
            }
        };
        self.hosts.iter().enumerate().map(parse).collect()
    }

    /// Reads the secret: from `secret_env` or `secret_file`, never empty, and fit for a header.
    pub fn read_secret(&self) -> Result<Secret, KeyError> {
        let (key, value) = match (&self.secret_env, &self.secret_file) {
            (Some(name), None) => (
                "secret_env",
                std::env::var(name).map_err(|e| {
                    let message = format!("cannot read the variable `{name}`: {e}");
                    ("secret_env".to_owned(), message)
                })?,
            ),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    let message = format!("cannot read {}: {e}", path.display());
                    ("secret_file".to_owned(), message)
                })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                (
                    "secret_file",
                    text.strip_suffix('\r').unwrap_or(text).to_owned(),
                )
            }
            _ => {
                let message = "exactly one of `secret_env` and `secret_file` is required";
                return Err((String::new(), message.into()));
            }
        };
        // Never quote the value: the message would carry the secret.
        let problem = match () {
            _ if value.is_empty() => Some("the secret is empty"),
            _ if !value
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) =>
            {
                Some("the secret holds bytes an HTTP header cannot carry (control or non-ASCII)")
            }
            _ => None,
        };
        match problem {
            Some(problem) => Err((key.to_owned(), problem.to_owned())),
            None => Ok(Secret::new(value)),
        }
    }

    /// Everything but the secret and MITM: the name, the hosts, the variable.
    fn check_shape(&self) -> Result<(), KeyError> {
        let name_ok = (1..=32).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(("name".into(), "expected 1–32 of [A-Za-z0-9_]".into()));
        }
        self.rules()?;
        match (&self.secret_env, &self.env) {
            (Some(_), Some(_)) => {
                let message = "`env` is for `secret_file`; with `secret_env` the child gets the placeholder under that variable";
                return Err(("env".into(), message.into()));
            }
            (None, None) if self.secret_file.is_some() => {
                let message = "a `secret_file` credential names the variable the child gets its placeholder in";
                return Err(("env".into(), message.into()));
            }
            _ => {}
        }
        let variable = self.variable();
        let variable_ok = variable.bytes().next().is_some_and(|b| !b.is_ascii_digit())
            && variable
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let key = if self.env.is_some() {
            "env"
        } else {
            "secret_env"
        };
        match variable_ok || variable.is_empty() {
            true => Ok(()),
            false => Err((key.into(), "expected an environment variable name".into())),
        }
    }
}

/// Checks every credential (secrets read, then dropped): `credentials[i].KEY` and the message.
pub(super) fn check_credentials(
    credentials: &[CredentialConfig],
    mitm: bool,
    secrets: super::Secrets,
) -> Result<(), (usize, KeyError)> {
    let mut variables = BTreeMap::new();
    let mut names = BTreeMap::new();
    for (i, credential) in credentials.iter().enumerate() {
        credential.check_shape().map_err(|e| (i, e))?;
        if !mitm {
            let message = "a credential needs `mitm.enabled = true`: leash substitutes it only in requests it can read";
            return Err((i, (String::new(), message.into())));
        }
        if let Some(first) = names.insert(credential.name.as_str(), i) {
            let message = format!("the name is already used by credentials[{first}]");
            return Err((i, ("name".into(), message)));
        }
        if let Some(first) = variables.insert(credential.variable(), i) {
            let message = format!("the variable is already used by credentials[{first}]");
            let key = if credential.env.is_some() {
                "env"
            } else {
                "secret_env"
            };
            return Err((i, (key.into(), message)));
        }
        if secrets == super::Secrets::Read {
            credential.read_secret().map_err(|e| (i, e))?;
        }
    }
    Ok(())
}

/// The credential hosts, which are always intercepted.
pub(super) fn credential_hosts(credentials: &[CredentialConfig]) -> Vec<Rule> {
    credentials
        .iter()
        .flat_map(|c| c.rules().unwrap_or_default())
        .collect()
}

/// Builds the credentials, each with a placeholder `random()` makes; the secrets are read now.
pub(super) fn build_credentials(
    credentials: &[CredentialConfig],
    mut random: impl FnMut() -> String,
) -> Result<Vec<Credential>, (usize, KeyError)> {
    let build = |(i, c): (usize, &CredentialConfig)| {
        let hosts = c.rules().map_err(|e| (i, e))?;
        Ok(Credential {
            name: c.name.clone(),
            hosts: RuleList::new(hosts),
            variable: c.variable().to_owned(),
            placeholder: Credential::placeholder_for(&c.name, &random()),
            secret: c.read_secret().map_err(|e| (i, e))?,
        })
    };
    credentials.iter().enumerate().map(build).collect()
}

impl HeadersConfig {
    /// The compiled rule; errors name the key below `headers[i]`.
    pub(super) fn rule(&self) -> Result<HeaderRule, KeyError> {
        if self.hosts.is_empty() {
            return Err((
                "hosts".into(),
                "a header rule names at least one host".into(),
            ));
        }
        let hosts = (self.hosts.iter().enumerate())
            .map(|(i, host)| {
                host.parse::<Rule>()
                    .map_err(|e| (format!("hosts[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spec = HeaderRuleSpec {
            methods: &self.methods,
            paths: &self.paths,
            set: self
                .set
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            remove: &self.remove,
        };
        HeaderRule::new(RuleList::new(hosts), &spec).map_err(|e| (e.key, e.problem))
    }
}
