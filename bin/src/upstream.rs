//! `[upstream]` (SPEC §16): the proxy URL as people write it, checked at load, with its password
//! never printed (`Display`, `Debug` and so `/config` show `<redacted>`), and the environment
//! variables `"env"` stands for, read once at start.

use std::{fmt, str::FromStr, sync::Arc};

use listeners::{UpstreamProxy, UpstreamResolve};
use policy::{Host, Rule, RuleList};
use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DisplayFromStr};

/// What `proxy = "env"` reads, in order: HTTPS first, as nearly all of leash's traffic is.
pub const PROXY_VARIABLES: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];

/// `[upstream]`.
#[serde_as]
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `"http://[user:pass@]host:port"`, or `"env"`; absent: leash dials directly.
    #[serde_as(as = "Option<DisplayFromStr>")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySetting>,
    /// Targets dialled directly (SPEC §1.1 rules: names, networks, ports).
    pub no_proxy: Vec<NoProxyRule>,
    /// Who resolves names sent through the upstream.
    pub resolve: ResolveSetting,
}

/// One `upstream.no_proxy` rule, parsed as it is read, so a bad one is refused with its key and
/// line like any other bad value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoProxyRule(pub Rule);

impl<'de> Deserialize<'de> for NoProxyRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map(NoProxyRule)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for NoProxyRule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// `upstream.resolve`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolveSetting {
    /// The upstream resolves names (leash sends them as they are).
    #[default]
    Upstream,
    /// leash resolves and vets them, and sends the vetted address.
    Local,
}

/// `upstream.proxy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxySetting {
    /// leash's own `HTTPS_PROXY`/`HTTP_PROXY` (or lowercase) at start.
    Env,
    /// A proxy URL.
    Url(ProxyUrl),
}

/// `http://[user:pass@]host:port`: only plain HTTP proxies (a TLS connection to the proxy is
/// not supported), with an explicit port (a proxy has no default one people agree on).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    host: Host,
    port: u16,
    credentials: Option<(String, String)>,
}

impl FromStr for ProxySetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "env" => Ok(ProxySetting::Env),
            url => url.parse().map(ProxySetting::Url),
        }
    }
}

impl fmt::Display for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySetting::Env => f.write_str("env"),
            ProxySetting::Url(url) => url.fmt(f),
        }
    }
}

const EXPECTED: &str = "expected \"env\" or \"http://[user:password@]host:port\"";

impl FromStr for ProxyUrl {
    type Err = String;

    /// Errors never repeat the text: it may hold a password.
    fn from_str(text: &str) -> Result<Self, String> {
        // `proxy.corp:3128` is how many people write a proxy (curl takes it as http://).
        let text = match text.contains("://") {
            true => text.to_owned(),
            false => format!("http://{text}"),
        };
        let url =
            url::Url::parse(&text).map_err(|error| format!("not a URL ({error}); {EXPECTED}"))?;
        if url.scheme() != "http" {
            let scheme = url.scheme();
            return Err(format!("scheme `{scheme}` is not supported; {EXPECTED}"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "a proxy URL has no path, query or fragment; {EXPECTED}"
            ));
        }
        let port = url
            .port()
            .ok_or_else(|| format!("the port is missing; {EXPECTED}"))?;
        let host = url.host_str().unwrap_or_default();
        let host = Host::parse(host).map_err(|error| format!("bad host: {error}; {EXPECTED}"))?;
        let credentials = credentials(&url)?;
        Ok(ProxyUrl {
            host,
            port,
            credentials,
        })
    }
}

/// The URL's user and password, percent-decoded.
fn credentials(url: &url::Url) -> Result<Option<(String, String)>, String> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| "the credentials are not UTF-8 once percent-decoded".to_owned())
    };
    let user = decode(url.username())?;
    let password = decode(url.password().unwrap_or_default())?;
    if user.contains(':') {
        return Err("the user name cannot contain `:` (write it as %3A)".to_owned());
    }
    Ok(Some((user, password)))
}

/// The URL with its password replaced by `<redacted>`: what `/config`, errors and logs show.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            host => host.to_string(),
        };
        match &self.credentials {
            None => write!(f, "http://{host}:{}", self.port),
            Some((user, _)) => {
                let user = percent_encoding::utf8_percent_encode(user, USERINFO);
                write!(f, "http://{user}:<redacted>@{host}:{}", self.port)
            }
        }
    }
}

/// What a user name needs encoded to stay one part of the URL.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b':')
    .add(b'@')
    .add(b'/')
    .add(b'%')
    .add(b'\\');

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

impl UpstreamConfig {
    /// The upstream proxy the dialer sends connections through, with `"env"` read from `env`
    /// (leash's own environment at start); `None` without `proxy`.
    pub fn build(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Arc<UpstreamProxy>>, String> {
        let url = match &self.proxy {
            None => return Ok(None),
            Some(ProxySetting::Url(url)) => url.clone(),
            Some(ProxySetting::Env) => from_env(env)?,
        };
        let resolve = match self.resolve {
            ResolveSetting::Upstream => UpstreamResolve::Upstream,
            ResolveSetting::Local => UpstreamResolve::Local,
        };
        let credentials = url
            .credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()));
        let no_proxy = RuleList::new(self.no_proxy.iter().map(|rule| rule.0.clone()));
        let proxy = UpstreamProxy::new(url.host, url.port, credentials, no_proxy, resolve);
        Ok(Some(Arc::new(proxy)))
    }
}

/// The first of [`PROXY_VARIABLES`] that is set and not empty. None set is an error, never a
/// silent direct dial: the config asked for an upstream.
fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<ProxyUrl, String> {
    for name in PROXY_VARIABLES {
        if let Some(value) = env(name).filter(|v| !v.trim().is_empty()) {
            return value
                .trim()
                .parse()
                .map_err(|error| format!("upstream.proxy = \"env\": ${name}: {error}"));
        }
    }
    Err(format!(
        "upstream.proxy = \"env\", but none of {} is set",
        PROXY_VARIABLES.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn parses(text: &str, shown: &str) {
        let url: ProxyUrl = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(url.to_string(), shown);
    }

    #[track_caller]
    fn refused(text: &str, says: &str) {
        let error = text.parse::<ProxyUrl>().expect_err(text);
        assert!(error.contains(says), "{text}: {error}");
        assert!(!error.contains("s3cret"), "the password leaked: {error}");
    }

    #[test]
    fn proxy_urls_parse_and_print_without_their_password() {
        parses("http://proxy.corp:3128", "http://proxy.corp:3128");
        parses("proxy.corp:3128", "http://proxy.corp:3128");
        parses("http://PROXY.corp.:3128/", "http://proxy.corp:3128");
        parses(
            "http://u:s3cret@10.0.0.1:8080",
            "http://u:<redacted>@10.0.0.1:8080",
        );
        parses(
            "http://dom%5Cu:p%40ss@[::1]:3128",
            "http://dom%5Cu:<redacted>@[::1]:3128",
        );
        parses(
            "http://u@proxy.corp:3128",
            "http://u:<redacted>@proxy.corp:3128",
        );
    }

    #[test]
    fn bad_proxy_urls_say_what_was_expected_and_never_echo_a_password() {
        refused(
            "https://u:s3cret@proxy.corp:3128",
            "scheme `https` is not supported",
        );
        refused("socks5://u:s3cret@proxy.corp:1080", "scheme `socks5`");
        refused("http://u:s3cret@proxy.corp", "the port is missing");
        refused("http://u:s3cret@proxy.corp:3128/path", "no path");
        refused("http://u:s3cret@proxy.corp:99999", "not a URL");
        refused("http://u:s3cret@:3128", "not a URL");
    }

    #[test]
    fn the_password_is_decoded_for_the_upstream() {
        let url: ProxyUrl = "http://dom%5Cu:p%40ss%3Aw@proxy.corp:3128".parse().unwrap();
        let creds = url.credentials.clone().unwrap();
        assert_eq!(creds, ("dom\\u".to_owned(), "p@ss:w".to_owned()));
        assert!(!format!("{url:?}").contains("p@ss"));
    }

    #[test]
    fn env_reads_https_proxy_first_and_refuses_to_guess() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let url = from_env(vars(&[
            ("http_proxy", "http://b:1"),
            ("HTTPS_PROXY", "http://a:2"),
        ]));
        assert_eq!(url.unwrap().to_string(), "http://a:2");
        let url = from_env(vars(&[("HTTPS_PROXY", ""), ("http_proxy", "b:1")]));
        assert_eq!(url.unwrap().to_string(), "http://b:1");
        let none = from_env(vars(&[])).unwrap_err();
        assert!(none.contains("none of HTTPS_PROXY"), "{none}");
        let bad = from_env(vars(&[("HTTPS_PROXY", "https://u:s3cret@a:1")])).unwrap_err();
        assert!(
            bad.contains("$HTTPS_PROXY") && !bad.contains("s3cret"),
            "{bad}"
        );
    }
}
