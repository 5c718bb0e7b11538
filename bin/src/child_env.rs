//! The environment a child runs in (SPEC §12): every proxy variable common clients read, in both
//! cases, carrying the attempt id and token, and never a local hole in `NO_PROXY`; and, when SOCKS5
//! runs, `GIT_SSH_COMMAND`, since ssh reads no proxy variable at all.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// The CA files children trust when MITM is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// System roots plus the leash CA.
    pub bundle: PathBuf,
    /// The leash CA alone (for `NODE_EXTRA_CA_CERTS`, which adds to Node's own roots).
    pub ca: PathBuf,
}

/// What the child's environment is made from.
#[derive(Clone, Debug)]
pub struct EnvSpec<'a> {
    /// The HTTP proxy.
    pub http: SocketAddr,
    /// The SOCKS5 proxy, if it runs.
    pub socks: Option<SocketAddr>,
    /// The attempt id the child's requests carry.
    pub attempt: &'a str,
    /// The proxy password, if one is required.
    pub token: Option<&'a str>,
    /// `allow_local = true`: only then may local addresses skip the proxy.
    pub allow_local_all: bool,
    /// The CA files, when MITM is on.
    pub ca: Option<&'a CaFiles>,
    /// The `leash` binary, for `GIT_SSH_COMMAND` (`leash connect` relays ssh over SOCKS5). `None`
    /// when there is no such binary to name, e.g. in a program that embeds leash.
    pub leash_bin: Option<&'a Path>,
}

/// The variables, in a stable order.
pub fn child_env(spec: &EnvSpec<'_>) -> Vec<(String, String)> {
    // Percent-encoded: an attempt id may hold `:`, which would otherwise end the username.
    let userinfo = match spec.token {
        Some(token) => format!(
            "{}:{}",
            encode_userinfo(spec.attempt),
            encode_userinfo(token)
        ),
        None => encode_userinfo(spec.attempt),
    };
    let http = format!("http://{userinfo}@{}", spec.http);
    let all = match spec.socks {
        Some(socks) => format!("socks5h://{userinfo}@{socks}"),
        None => http.clone(),
    };
    // A local range in NO_PROXY would let children go around the policy.
    let no_proxy = if spec.allow_local_all {
        "localhost,127.0.0.1,::1"
    } else {
        ""
    };
    let mut vars = Vec::new();
    for (name, value) in [
        ("HTTP_PROXY", &http),
        ("HTTPS_PROXY", &http),
        ("ALL_PROXY", &all),
    ] {
        vars.push((name.to_owned(), value.clone()));
        vars.push((name.to_ascii_lowercase(), value.clone()));
    }
    vars.push(("NO_PROXY".into(), no_proxy.into()));
    vars.push(("no_proxy".into(), no_proxy.into()));
    for name in [
        "npm_config_proxy",
        "npm_config_https_proxy",
        "YARN_HTTP_PROXY",
        "YARN_HTTPS_PROXY",
        "PIP_PROXY",
    ] {
        vars.push((name.into(), http.clone()));
    }
    for (name, value) in [
        ("NODE_USE_ENV_PROXY", "1"),
        ("ELECTRON_GET_USE_PROXY", "true"),
        ("LEASH_PROXY_ACTIVE", "1"),
    ] {
        vars.push((name.into(), value.into()));
    }
    if let (Some(_), Some(command)) = (spec.socks, spec.leash_bin.and_then(git_ssh_command)) {
        vars.push(("GIT_SSH_COMMAND".into(), command));
    }
    if let Some(ca) = spec.ca {
        let bundle = ca.bundle.display().to_string();
        for name in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "PIP_CERT",
            "CARGO_HTTP_CAINFO",
            "npm_config_cafile",
        ] {
            vars.push((name.into(), bundle.clone()));
        }
        vars.push(("NODE_EXTRA_CA_CERTS".into(), ca.ca.display().to_string()));
    }
    vars
}

/// `ssh -o ProxyCommand='LEASH connect %h %p'`, so `git clone git@host:…` goes through the policy.
/// Quoted twice: git runs the command through `sh -c`, and ssh expands `%` tokens in the
/// ProxyCommand and runs it through `$SHELL -c`. `None` for a path that is not UTF-8 (an
/// environment value here is text).
fn git_ssh_command(leash: &Path) -> Option<String> {
    let path = leash.to_str()?.replace('%', "%%");
    let proxy = format!("{} connect %h %p", shell_word(&path));
    Some(format!("ssh -o ProxyCommand={}", shell_quote(&proxy)))
}

/// The word as it is when no shell would change it, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/._+-,=:@%".contains(&b);
    match !word.is_empty() && word.bytes().all(plain) {
        true => word.to_owned(),
        false => shell_quote(word),
    }
}

/// Single quotes, with embedded quotes closed, escaped and reopened.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// RFC 3986 userinfo: everything but the unreserved characters percent-encoded.
fn encode_userinfo(text: &str) -> String {
    text.bytes()
        .map(
            |b| match b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                true => (b as char).to_string(),
                false => format!("%{b:02X}"),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(allow_local_all: bool, socks: bool) -> Vec<(String, String)> {
        child_env(&EnvSpec {
            http: "127.0.0.1:4000".parse().unwrap(),
            socks: socks.then(|| "127.0.0.1:4001".parse().unwrap()),
            attempt: "a1",
            token: Some("tok"),
            allow_local_all,
            ca: None,
            leash_bin: Some(Path::new("/usr/bin/leash")),
        })
    }

    fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn no_proxy_holds_no_local_range_unless_everything_local_is_allowed() {
        for socks in [true, false] {
            let vars = spec(false, socks);
            assert_eq!(get(&vars, "NO_PROXY"), Some(""));
            assert_eq!(get(&vars, "no_proxy"), Some(""));
        }
        let vars = spec(true, true);
        assert_eq!(get(&vars, "NO_PROXY"), Some("localhost,127.0.0.1,::1"));
    }

    #[test]
    fn every_path_carries_attempt_and_token() {
        let vars = spec(false, true);
        for name in [
            "HTTP_PROXY",
            "https_proxy",
            "PIP_PROXY",
            "npm_config_proxy",
            "YARN_HTTPS_PROXY",
        ] {
            assert_eq!(
                get(&vars, name),
                Some("http://a1:tok@127.0.0.1:4000"),
                "{name}"
            );
        }
        assert_eq!(
            get(&vars, "ALL_PROXY"),
            Some("socks5h://a1:tok@127.0.0.1:4001")
        );
        assert_eq!(
            get(&spec(false, false), "all_proxy"),
            Some("http://a1:tok@127.0.0.1:4000"),
            "HTTP when SOCKS is off"
        );
        assert_eq!(get(&vars, "LEASH_PROXY_ACTIVE"), Some("1"));
        assert_eq!(
            get(&vars, "SSL_CERT_FILE"),
            None,
            "no CA variables without MITM"
        );
    }

    #[test]
    fn mitm_points_every_tls_client_at_the_bundle() {
        let ca = CaFiles {
            bundle: "/ca/bundle.pem".into(),
            ca: "/ca/ca.pem".into(),
        };
        let vars = child_env(&EnvSpec {
            http: "127.0.0.1:4000".parse().unwrap(),
            socks: None,
            attempt: "a1",
            token: None,
            allow_local_all: false,
            ca: Some(&ca),
            leash_bin: None,
        });
        for name in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "PIP_CERT",
            "CARGO_HTTP_CAINFO",
            "npm_config_cafile",
        ] {
            assert_eq!(get(&vars, name), Some("/ca/bundle.pem"), "{name}");
        }
        assert_eq!(get(&vars, "NODE_EXTRA_CA_CERTS"), Some("/ca/ca.pem"));
        assert_eq!(
            get(&vars, "HTTP_PROXY"),
            Some("http://a1@127.0.0.1:4000"),
            "no token, no colon"
        );
    }

    /// The words `sh` makes of `command`.
    fn shell_words(command: &str) -> Vec<String> {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                r#"eval "set -- $1"; printf '%s\n' "$@""#,
                "sh",
                command,
            ])
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{command}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// ssh's `%` tokens in a ProxyCommand, for host `HOST` and port 22.
    fn ssh_expand(command: &str) -> String {
        let mut out = String::new();
        let mut chars = command.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('h') => out.push_str("HOST"),
                Some('p') => out.push_str("22"),
                Some('%') => out.push('%'),
                other => panic!("ssh refuses %{other:?}"),
            }
        }
        out
    }

    #[test]
    fn git_ssh_command_relays_through_leash_connect_when_socks_runs() {
        assert_eq!(
            get(&spec(false, true), "GIT_SSH_COMMAND"),
            Some("ssh -o ProxyCommand='/usr/bin/leash connect %h %p'")
        );
        assert_eq!(
            get(&spec(false, false), "GIT_SSH_COMMAND"),
            None,
            "leash connect needs SOCKS5"
        );
        for path in [
            "/usr/bin/leash",
            "/opt/my tools/leash",
            "/home/o'brien/100%/$HOME/`x`/leash",
        ] {
            let command = git_ssh_command(Path::new(path)).unwrap();
            // git's shell, then ssh's `%` expansion, then the ProxyCommand's shell.
            let words = shell_words(&command);
            assert_eq!(words[..2], ["ssh", "-o"], "{command}");
            let proxy = words[2].strip_prefix("ProxyCommand=").expect("one word");
            assert_eq!(
                shell_words(&ssh_expand(proxy)),
                [path, "connect", "HOST", "22"],
                "{command}"
            );
        }
    }
}
