//! The environment a child runs in (SPEC §12): every proxy variable common clients read, in both
//! cases, carrying the attempt id and token, and never a local hole in `NO_PROXY`; when SOCKS5
//! runs, `GIT_SSH_COMMAND`, since ssh reads no proxy variable at all; and with MITM, every CA
//! variable common clients read, pointing at files that keep what the user already trusted.

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use mitm::{CertBundle, MitmError};

/// The CA files children trust when MITM is on, written beside the leash CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// The platform's roots, the leash CA, then the CAs the user already trusted
    /// (`SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`): for clients that replace their roots with it.
    pub bundle: PathBuf,
    /// The leash CA alone (`ca.pem`).
    pub ca: PathBuf,
    /// The leash CA plus the user's own `NODE_EXTRA_CA_CERTS`, for `NODE_EXTRA_CA_CERTS` (Node
    /// adds it to its own roots); `ca` itself when the user had none.
    pub node_extra: PathBuf,
    /// A wgetrc for `WGETRC`: the user's own wgetrc, then `ca_certificate = BUNDLE`.
    pub wgetrc: PathBuf,
}

/// The line that starts what leash appends to a wgetrc; a wgetrc read back is copied up to it, so
/// a shell that evaluates `leash env` twice does not stack the additions.
const WGETRC_MARK: &str = "# leash: trust the MITM CA (the lines above are the user's wgetrc)";

impl CaFiles {
    /// Writes the files for the leash CA whose certificate `ca_pem` is stored at `ca` (its
    /// `ca.pem`), beside it, keeping the CAs and wgetrc leash's own environment names.
    pub fn write(ca: &Path, ca_pem: &str) -> Result<CaFiles, MitmError> {
        CaFiles::write_with(ca, ca_pem, &UserTrust::from_env())
    }

    fn write_with(ca: &Path, ca_pem: &str, user: &UserTrust) -> Result<CaFiles, MitmError> {
        let dir = ca.parent().unwrap_or(Path::new("."));
        let mut leash = CertBundle::new();
        if leash.add_pem(ca_pem.as_bytes()) == 0 {
            return Err(MitmError::BadCaFile {
                path: ca.to_owned(),
                problem: "not a PEM certificate".into(),
            });
        }
        let node = user_cas(user.node_extra_ca_certs.as_deref());
        let mut bundle = CertBundle::platform_roots();
        bundle.extend(&leash);
        bundle.extend(&user_cas(user.ssl_cert_file.as_deref()));
        bundle.extend(&node);
        let bundle = bundle.write(dir, "bundle")?;
        let node_extra = match node.is_empty() {
            true => ca.to_owned(),
            false => {
                leash.extend(&node);
                leash.write(dir, "node-extra")?
            }
        };
        let wgetrc = write_wgetrc(dir, &bundle, user.wgetrc.as_deref())?;
        Ok(CaFiles {
            bundle,
            ca: ca.to_owned(),
            node_extra,
            wgetrc,
        })
    }
}

/// What the user's environment already trusts, and the wgetrc wget would read.
#[derive(Clone, Debug, Default)]
struct UserTrust {
    ssl_cert_file: Option<PathBuf>,
    node_extra_ca_certs: Option<PathBuf>,
    wgetrc: Option<PathBuf>,
}

impl UserTrust {
    fn from_env() -> UserTrust {
        let var = |name| std::env::var_os(name).filter(|v: &OsString| !v.is_empty());
        // wget reads `$WGETRC` when it is set, else `~/.wgetrc`.
        let home_wgetrc = || var("HOME").map(|home| Path::new(&home).join(".wgetrc"));
        UserTrust {
            ssl_cert_file: var("SSL_CERT_FILE").map(PathBuf::from),
            node_extra_ca_certs: var("NODE_EXTRA_CA_CERTS").map(PathBuf::from),
            wgetrc: var("WGETRC")
                .map(PathBuf::from)
                .or_else(|| home_wgetrc().filter(|p| p.is_file())),
        }
    }
}

/// The certificates of a CA file the user set; one that cannot be read or holds none is left out
/// with a warning (the child would not have trusted it either).
fn user_cas(path: Option<&Path>) -> CertBundle {
    let mut certs = CertBundle::new();
    let Some(path) = path else {
        return certs;
    };
    let problem = match certs.add_file(path) {
        Ok(0) => "it holds no PEM certificate".to_owned(),
        Ok(_) => return certs,
        Err(error) => error.to_string(),
    };
    tracing::warn!(path = %path.display(), %problem, "not added to the MITM CA bundle");
    certs
}

/// `dir/wgetrc-HASH`: the user's wgetrc (up to a mark leash left there), then `ca_certificate`.
/// Private (0600): a wgetrc may hold passwords.
fn write_wgetrc(dir: &Path, bundle: &Path, user: Option<&Path>) -> Result<PathBuf, MitmError> {
    let mut text = Vec::new();
    if let Some(user) = user {
        match std::fs::read(user) {
            Ok(theirs) => {
                for line in theirs.split_inclusive(|b| *b == b'\n') {
                    if line.trim_ascii_end() == WGETRC_MARK.as_bytes() {
                        break;
                    }
                    text.extend_from_slice(line);
                }
                if !text.is_empty() && !text.ends_with(b"\n") {
                    text.push(b'\n');
                }
            }
            Err(error) => {
                tracing::warn!(path = %user.display(), %error, "the wgetrc is not copied")
            }
        }
    }
    let line = format!("{WGETRC_MARK}\nca_certificate = {}\n", bundle.display());
    text.extend_from_slice(line.as_bytes());
    mitm::write_content_addressed(dir, "wgetrc", "conf", &text, 0o600)
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
    /// Each credential's variable and its placeholder (SPEC §17): the child gets the placeholder
    /// where it would have found the secret (which it never gets).
    pub placeholders: &'a [(String, String)],
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
        for name in BUNDLE_VARIABLES {
            vars.push((name.into(), bundle.clone()));
        }
        vars.push((
            "NODE_EXTRA_CA_CERTS".into(),
            ca.node_extra.display().to_string(),
        ));
        // wget has no variable for a CA file, only for its configuration file.
        vars.push(("WGETRC".into(), ca.wgetrc.display().to_string()));
    }
    vars.extend(spec.placeholders.iter().cloned());
    vars
}

/// The variables that name a CA file a client uses instead of (or beside) its own roots, so each
/// gets the whole bundle: OpenSSL and what builds on it (Python, Ruby, Go, uv), Python requests,
/// curl, git, pip, cargo, npm and yarn 1, yarn 2+, the AWS CLI and SDKs, httplib2 (Google's API
/// clients), gRPC core, Nix, gcloud, Deno, Bundler.
const BUNDLE_VARIABLES: [&str; 15] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "CARGO_HTTP_CAINFO",
    "npm_config_cafile",
    "YARN_CA_FILE_PATH",
    "AWS_CA_BUNDLE",
    "HTTPLIB2_CA_CERTS",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "NIX_SSL_CERT_FILE",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
    "DENO_CERT",
    "BUNDLE_SSL_CA_CERT",
];

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

/// Single quotes, with embedded quotes closed, escaped and reopened: one word for sh and fish.
pub fn shell_quote(text: &str) -> String {
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
            placeholders: &[],
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
            node_extra: "/ca/node-extra.pem".into(),
            wgetrc: "/ca/wgetrc.conf".into(),
        };
        let vars = child_env(&EnvSpec {
            http: "127.0.0.1:4000".parse().unwrap(),
            socks: None,
            attempt: "a1",
            token: None,
            allow_local_all: false,
            ca: Some(&ca),
            leash_bin: None,
            placeholders: &[],
        });
        for name in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "PIP_CERT",
            "CARGO_HTTP_CAINFO",
            "npm_config_cafile",
            "AWS_CA_BUNDLE",
            "HTTPLIB2_CA_CERTS",
            "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
            "NIX_SSL_CERT_FILE",
            "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
            "YARN_CA_FILE_PATH",
            "DENO_CERT",
            "BUNDLE_SSL_CA_CERT",
        ] {
            assert_eq!(get(&vars, name), Some("/ca/bundle.pem"), "{name}");
        }
        assert_eq!(
            get(&vars, "NODE_EXTRA_CA_CERTS"),
            Some("/ca/node-extra.pem")
        );
        assert_eq!(get(&vars, "WGETRC"), Some("/ca/wgetrc.conf"));
        assert_eq!(
            get(&vars, "HTTP_PROXY"),
            Some("http://a1@127.0.0.1:4000"),
            "no token, no colon"
        );
    }

    /// A CA made in `dir/name`: its `ca.pem` path and PEM text.
    fn make_ca(dir: &Path, name: &str) -> (PathBuf, String) {
        let ca = mitm::CertificateAuthority::load_or_create(&dir.join(name)).unwrap();
        (ca.cert_path(), ca.cert_pem().to_owned())
    }

    /// The certificates of a PEM file, each as one PEM block.
    fn certs_in(path: &Path) -> Vec<String> {
        let mut bundle = CertBundle::new();
        bundle.add_file(path).unwrap();
        let pem = bundle.to_pem();
        pem.split_inclusive("-----END CERTIFICATE-----\n")
            .map(str::to_owned)
            .collect()
    }

    /// One certificate, as `certs_in` writes it.
    fn cert(pem: &str) -> String {
        let mut bundle = CertBundle::new();
        assert_eq!(bundle.add_pem(pem.as_bytes()), 1);
        bundle.to_pem()
    }

    #[test]
    fn without_user_cas_the_bundle_is_the_platform_roots_and_the_leash_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, pem) = make_ca(dir.path(), "leash");
        let files = CaFiles::write_with(&ca, &pem, &UserTrust::default()).unwrap();
        let mut expected = CertBundle::platform_roots();
        expected.add_pem(pem.as_bytes());
        assert_eq!(
            std::fs::read_to_string(&files.bundle).unwrap(),
            expected.to_pem()
        );
        assert_eq!(files.node_extra, ca, "Node gets the CA alone");
        assert_eq!(files.ca, ca);
        assert_eq!(files.bundle.parent(), ca.parent(), "beside the CA");
        let wgetrc = std::fs::read_to_string(&files.wgetrc).unwrap();
        assert_eq!(
            wgetrc,
            format!(
                "{WGETRC_MARK}\nca_certificate = {}\n",
                files.bundle.display()
            )
        );
    }

    #[test]
    fn the_cas_the_user_already_trusted_stay_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, pem) = make_ca(dir.path(), "leash");
        let (corporate, corporate_pem) = make_ca(dir.path(), "corporate");
        let (node_only, node_pem) = make_ca(dir.path(), "node-only");
        let user = UserTrust {
            ssl_cert_file: Some(corporate),
            node_extra_ca_certs: Some(node_only),
            wgetrc: None,
        };
        let files = CaFiles::write_with(&ca, &pem, &user).unwrap();
        let bundle = certs_in(&files.bundle);
        let platform = CertBundle::platform_roots().len();
        assert_eq!(
            bundle[platform..],
            [cert(&pem), cert(&corporate_pem), cert(&node_pem)],
            "platform roots, the leash CA, then the user's CAs"
        );
        assert_eq!(
            certs_in(&files.node_extra),
            [cert(&pem), cert(&node_pem)],
            "NODE_EXTRA_CA_CERTS: the leash CA plus the user's own"
        );
        assert!(files.node_extra.starts_with(dir.path().join("leash")));

        // A shell that already evaluated `leash env` names these files; nothing is repeated.
        let again = UserTrust {
            ssl_cert_file: Some(files.bundle.clone()),
            node_extra_ca_certs: Some(files.node_extra.clone()),
            wgetrc: Some(files.wgetrc.clone()),
        };
        assert_eq!(CaFiles::write_with(&ca, &pem, &again).unwrap(), files);

        // An unreadable or empty file is left out, not an error.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let broken = UserTrust {
            ssl_cert_file: Some(dir.path().join("missing.pem")),
            node_extra_ca_certs: Some(empty),
            wgetrc: Some(dir.path().join("missing.wgetrc")),
        };
        let files = CaFiles::write_with(&ca, &pem, &broken).unwrap();
        assert_eq!(certs_in(&files.bundle).len(), platform + 1);
        assert_eq!(files.node_extra, ca);
    }

    #[test]
    fn the_wgetrc_keeps_the_users_settings_and_adds_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, pem) = make_ca(dir.path(), "leash");
        let theirs = dir.path().join("wgetrc");
        std::fs::write(&theirs, "tries = 3\nca_certificate = /old.pem\nquiet = on").unwrap();
        let user = UserTrust {
            wgetrc: Some(theirs),
            ..UserTrust::default()
        };
        let files = CaFiles::write_with(&ca, &pem, &user).unwrap();
        let text = std::fs::read_to_string(&files.wgetrc).unwrap();
        let ours = format!("ca_certificate = {}", files.bundle.display());
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "tries = 3",
                "ca_certificate = /old.pem",
                "quiet = on",
                WGETRC_MARK,
                &ours
            ],
            "their lines first; the last ca_certificate wins"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.wgetrc)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "a wgetrc may hold passwords");
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
