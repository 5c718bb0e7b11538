use super::*;

#[track_caller]
fn error(text: &str) -> String {
    Config::parse(text, Path::new("leash.toml"))
        .expect_err(text)
        .to_string()
}

#[test]
fn the_spec_example_parses() {
    let text = r#"
mode = "full"
[policy]
allow = ["github.com", "**.githubusercontent.com", "pypi.org:443"]
deny = ["evil.example"]
allow_local = false
[listen]
ephemeral = false
http = "127.0.0.1:3128"
socks = "127.0.0.1:1080"
admin = "127.0.0.1:9180"
dangerously_allow_non_loopback_proxy = false
dangerously_allow_non_loopback_admin = false
[socks]
enabled = true
udp = false
[mitm]
enabled = false
ca_dir = "~/.local/share/leash/ca"
upstream_ca = []
[auth]
token = ""
[admin]
enabled = true
token = ""
[log]
violations = "leash-violations.jsonl"
rotate = "never"
log_allowed = false
ring = 1000
[limits]
connect_timeout = "10s"
dns_timeout = "5s"
idle_timeout = "5m"
max_request_head = 65536
max_connections = 4096
"#;
    let config = Config::parse(text, Path::new("leash.toml")).unwrap();
    assert_eq!(config.policy.allow.len(), 3);
    assert_eq!(config.limits.idle_timeout.get().as_secs(), 300);
    let mut expected = Config {
        policy: config.policy.clone(),
        ..Config::default()
    };
    expected.mitm.ca_dir = Some("~/.local/share/leash/ca".into());
    assert_eq!(config, expected, "the example spells out the defaults");
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = Config::parse("", Path::new("leash.toml")).unwrap();
    assert_eq!(config, Config::default());
    assert!(
        config.policy.allow.is_empty(),
        "the default asks for everything"
    );
    assert_eq!(config.listen.http.to_string(), "127.0.0.1:3128");
}

#[test]
fn errors_name_file_key_and_expectation() {
    let e = error("[policy]\nallw = []\n");
    assert!(e.starts_with("leash.toml:2: key `policy.allw`:"), "{e}");
    assert!(
        e.contains("unknown field `allw`, expected one of `allow`, `deny`, `allow_local`"),
        "{e}"
    );

    let e = error("mode = \"fast\"\n");
    assert!(e.starts_with("leash.toml:1: key `mode`:"), "{e}");
    assert!(e.contains("expected `full` or `limited`"), "{e}");

    let e = error("[policy]\nallow = [\"github.com\", \"*.com\"]\n");
    assert_eq!(e, "leash.toml:2: key `policy.allow[1]`: invalid rule `*.com`: a wildcard may not cover the public suffix `com`");

    let e = error("[policy]\nallow_local = \"yes\"\n");
    assert!(e.contains("key `policy.allow_local`"), "{e}");
    assert!(
        e.contains("true, false, or a list of IP, CIDR or `localhost` rules"),
        "{e}"
    );

    let e = error("[limits]\ndns_timeout = \"5 parsecs\"\n");
    assert!(e.contains("key `limits.dns_timeout`"), "{e}");
    assert!(e.contains("expected a number with a unit"), "{e}");

    let e = error("[listen]\nhttp = \"localhost\"\n");
    assert!(e.contains("key `listen.http`"), "{e}");

    let e = error("[unknown]\n");
    assert!(e.contains("unknown field `unknown`"), "{e}");

    let e = error("[auth]\ntoken = \"a:b\"\n");
    assert!(
        e.starts_with("leash.toml: key `auth.token`: a proxy token cannot contain `:`"),
        "{e}"
    );

    let e = error("[policy\n");
    assert!(e.starts_with("leash.toml:1:"), "{e}");
}

/// Limits that would make the proxy refuse everything (or overflow a deadline) are refused at
/// load, each naming file, line, key and the accepted range.
#[test]
fn nonsense_limits_are_refused_at_load() {
    let cases = [
        (
            "max_connections = 0",
            "limits.max_connections",
            "expected 1 to 1048576",
        ),
        (
            "max_connections = 2000000",
            "limits.max_connections",
            "expected 1 to 1048576",
        ),
        (
            "max_request_head = 0",
            "limits.max_request_head",
            "expected 1024 to 1048576",
        ),
        (
            "max_request_head = 100",
            "limits.max_request_head",
            "expected 1024 to 1048576",
        ),
        (
            "max_request_head = -1",
            "limits.max_request_head",
            "invalid value",
        ),
        (
            "connect_timeout = \"0s\"",
            "limits.connect_timeout",
            "expected more than 0",
        ),
        (
            "dns_timeout = \"0ms\"",
            "limits.dns_timeout",
            "expected more than 0",
        ),
        (
            "idle_timeout = \"0m\"",
            "limits.idle_timeout",
            "expected more than 0",
        ),
        (
            "header_timeout = \"0s\"",
            "limits.header_timeout",
            "expected more than 0",
        ),
        (
            "upstream_timeout = \"0h\"",
            "limits.upstream_timeout",
            "expected more than 0",
        ),
        (
            "idle_timeout = \"400days\"",
            "limits.idle_timeout",
            "at most 30 days",
        ),
    ];
    for (line, key, expected) in cases {
        let e = error(&format!("mode = \"full\"\n[limits]\n{line}\n"));
        assert!(
            e.starts_with(&format!("leash.toml:3: key `{key}`:")),
            "{line}: {e}"
        );
        assert!(e.contains(expected), "{line}: {e}");
    }
    let edge = "[limits]\nmax_connections = 1\nmax_request_head = 1024\nidle_timeout = \"1ms\"\n";
    let config = Config::parse(edge, Path::new("leash.toml")).unwrap();
    assert_eq!(config.limits.max_connections.get(), 1);
}

#[test]
fn a_bad_rule_names_its_line() {
    let cases = [
        // The same text earlier on (a comment, a good rule of another list) does not fool it.
        (
            "# allow = [\"*.com\"]\n[policy]\ndeny = [\"x.test\"]\nallow = [\"ok.test\", \"*.com\"]\n",
            "leash.toml:4: key `policy.allow[1]`: invalid rule `*.com`",
        ),
        (
            "[policy]\nallow = [\n  \"ok.test\",\n  \"ok2.test\",\n  \"https://pypi.org/simple\",\n]\n",
            "leash.toml:5: key `policy.allow[2]`: invalid rule `https://pypi.org/simple`: rules are hosts, not URLs: use `pypi.org`",
        ),
        (
            "mode = \"full\"\n\npolicy = { deny = [\"a..b\"] }\n",
            "leash.toml:3: key `policy.deny[0]`: invalid rule `a..b`",
        ),
        (
            "policy.allow = [\"ok.test\"]\npolicy.allow_local = [\n\"127.0.0.1\",\n\"example.com\"]\n",
            "leash.toml:4: key `policy.allow_local[1]`: invalid rule `example.com`: allow_local takes only",
        ),
        (
            "[policy]\nallow_local = [\"127.0.0.1:0\"]\n",
            "leash.toml:2: key `policy.allow_local[0]`: invalid rule `127.0.0.1:0`",
        ),
    ];
    for (text, expected) in cases {
        let e = error(text);
        assert!(e.starts_with(expected), "{e}\nexpected: {expected}");
    }
}

#[test]
fn tokens_are_redacted_in_debug_output() {
    let config = Config::parse(
        "[auth]\ntoken = \"s3cret\"\n[admin]\ntoken = \"adm1n\"\n",
        Path::new("x"),
    )
    .unwrap();
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("adm1n"),
        "{debug}"
    );
    assert!(debug.contains("<redacted>"));
}

#[test]
fn a_missing_file_names_the_file() {
    let e = Config::load(Path::new("/nonexistent/leash.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/leash.toml: cannot read the config file"),
        "{e}"
    );
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn fuzz_config() -> ProptestConfig {
        let cases = std::env::var("LEASH_FUZZ_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256);
        ProptestConfig::with_cases(cases)
    }

    const VALID: &str = "mode = \"limited\"\n[policy]\nallow = [\"github.com\", \"**.x.test:443\"]\nallow_local = [\"127.0.0.1:8000\"]\n[limits]\ndns_timeout = \"5s\"\n[listen]\nhttp = \"127.0.0.1:3128\"\n";

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn fuzz_the_config_loader_never_panics(text in any::<String>(), edits in prop::collection::vec((0..VALID.len(), any::<char>()), 0..6)) {
            let _ = Config::parse(&text, Path::new("fuzz.toml"));
            let mut damaged: Vec<char> = VALID.chars().collect();
            for (at, c) in edits {
                if at < damaged.len() {
                    damaged[at] = c;
                }
            }
            let damaged: String = damaged.into_iter().collect();
            if let Err(error) = Config::parse(&damaged, Path::new("fuzz.toml")) {
                prop_assert!(error.to_string().starts_with("fuzz.toml"), "errors name the file: {}", error);
            }
        }
    }
}

#[test]
fn dns_keys_parse_and_default_to_the_system() {
    let config = Config::parse("", Path::new("leash.toml")).unwrap();
    assert_eq!(config.dns, DnsConfig::default());
    assert_eq!(config.dns.resolv_conf, None, "the system's resolv.conf");
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 198.51.100.2\n").unwrap();
    let text = format!(
        "[dns]\nresolv_conf = {:?}\nhosts = \"/tmp/hosts\"\nmax_lookups = 64\nmax_lookups_per_client = 8\n",
        resolv.display().to_string()
    );
    let config = Config::parse(&text, Path::new("leash.toml")).unwrap();
    assert_eq!(config.dns.resolv_conf, Some(resolv));
    assert_eq!(config.dns.hosts, PathBuf::from("/tmp/hosts"));
    assert_eq!(config.dns.max_lookups.get(), 64);
    assert_eq!(config.dns.max_lookups_per_client.get(), 8);
}

#[test]
fn bad_dns_keys_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.conf");
    std::fs::write(&empty, "# no servers\n").unwrap();
    let missing = dir.path().join("missing.conf");
    for (text, expected) in [
        (
            format!("[dns]\nresolv_conf = {:?}\n", missing.display().to_string()),
            "leash.toml:2: key `dns.resolv_conf`: cannot read",
        ),
        (
            format!("[dns]\n\nresolv_conf = {:?}\n", empty.display().to_string()),
            "leash.toml:3: key `dns.resolv_conf`:",
        ),
        (
            "[dns]\nmax_lookups = 0\n".to_owned(),
            "leash.toml:2: key `dns.max_lookups`:",
        ),
        (
            "[dns]\nmax_lookups_per_client = 0\n".to_owned(),
            "leash.toml:2: key `dns.max_lookups_per_client`:",
        ),
        (
            "[dns]\nmax_lookups = 4\nmax_lookups_per_client = 5\n".to_owned(),
            "leash.toml:3: key `dns.max_lookups_per_client`: must be at most `dns.max_lookups` (4), got 5",
        ),
        (
            "[dns]\nservers = [\"1.1.1.1\"]\n".to_owned(),
            "leash.toml:2: key `dns.servers`: unknown field `servers`",
        ),
    ] {
        let error = error(&text);
        assert!(error.contains(expected), "{text}: {error}");
    }
    let error = error(&format!(
        "[dns]\nresolv_conf = {:?}\n",
        empty.display().to_string()
    ));
    assert!(error.contains("no nameservers"), "{error}");
}

/// `ask.decider` is checked when the file is read, the error naming the key and the two forms.
#[test]
fn the_decider_address_is_checked_at_load() {
    let config = Config::parse(
        "[ask]\ndecider = \"unix:/run/d.sock\"\n",
        Path::new("leash.toml"),
    )
    .expect("a unix decider");
    assert_eq!(
        config.ask.decider,
        Some(crate::DeciderAddr::Unix("/run/d.sock".into()))
    );
    let config = Config::parse("[ask]\ndecider = \"fd:3\"\n", Path::new("leash.toml")).unwrap();
    assert_eq!(config.ask.decider, Some(crate::DeciderAddr::Fd(3)));
    assert_eq!(Config::default().ask.decider, None);
    for bad in ["/run/d.sock", "unix:", "fd:-2", "tcp:127.0.0.1:9"] {
        let e = error(&format!("[ask]\nhold = \"5s\"\ndecider = \"{bad}\"\n"));
        assert!(e.starts_with("leash.toml:3: key `ask.decider`:"), "{e}");
        assert!(e.contains("expected `unix:PATH` or `fd:N`"), "{e}");
    }
}

#[test]
fn upstream_keys_parse_and_the_password_never_shows() {
    let text = "[upstream]\nproxy = \"http://corp%5Cme:s3cret@proxy.corp:3128\"\nno_proxy = [\"**.corp.example\", \"10.0.0.0/8\", \"intranet.test:8080\"]\nresolve = \"local\"\n";
    let config = Config::parse(text, Path::new("leash.toml")).unwrap();
    assert_eq!(config.upstream.no_proxy.len(), 3);
    assert_eq!(config.upstream.resolve, crate::ResolveSetting::Local);
    let shown = serde_json::to_value(&config).unwrap().to_string();
    assert!(
        shown.contains("http://corp%5Cme:<redacted>@proxy.corp:3128"),
        "{shown}"
    );
    let debug = format!("{config:?}");
    assert!(
        !shown.contains("s3cret") && !debug.contains("s3cret"),
        "{shown}\n{debug}"
    );

    let env = Config::parse("[upstream]\nproxy = \"env\"\n", Path::new("leash.toml")).unwrap();
    assert_eq!(env.upstream.proxy, Some(crate::ProxySetting::Env));
    assert_eq!(
        Config::default().upstream.proxy,
        None,
        "no upstream unless configured"
    );
}

#[test]
fn bad_upstream_keys_name_the_file_line_and_key_and_never_echo_a_password() {
    let e = error("[upstream]\n\nproxy = \"https://me:s3cret@proxy.corp:3128\"\n");
    assert!(e.starts_with("leash.toml:3: key `upstream.proxy`: scheme `https` is not supported; expected \"env\" or \"http://[user:password@]host:port\""), "{e}");
    assert!(!e.contains("s3cret"), "{e}");

    let e = error("[upstream]\nproxy = \"http://me:s3cret@proxy.corp\"\n");
    assert!(
        e.starts_with("leash.toml:2: key `upstream.proxy`: the port is missing"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");

    let e = error("[upstream]\nno_proxy = [\"ok.test\",\n  \"*.com\"]\n");
    assert_eq!(e, "leash.toml:3: key `upstream.no_proxy[1]`: invalid rule `*.com`: a wildcard may not cover the public suffix `com`");

    let e = error("[upstream]\nresolve = \"dns\"\n");
    assert!(
        e.starts_with("leash.toml:2: key `upstream.resolve`:"),
        "{e}"
    );
    assert!(e.contains("expected `upstream` or `local`"), "{e}");

    let e = error("[upstream]\nproxi = \"env\"\n");
    assert!(
        e.contains("unknown field `proxi`, expected one of `proxy`, `no_proxy`, `resolve`"),
        "{e}"
    );
}

/// `[[credentials]]` errors name the file, the line and the key, and never quote the secret.
#[test]
fn bad_credentials_are_refused_at_load_naming_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (good, empty, control) = (
        file("good", "tok-ABC123\n"),
        file("empty", "\n"),
        file("control", "tok\u{1}x\n"),
    );
    let missing = dir.path().join("missing").display().to_string();
    let mitm = "[mitm]\nenabled = true\n";
    let cred = |body: &str| format!("{mitm}[[credentials]]\nname = \"gh\"\n{body}");
    let cases = [
        (
            cred(&format!("hosts = [\"*.com\"]\nsecret_file = \"{good}\"\nenv = \"T\"\n")),
            "leash.toml:5: key `credentials[0].hosts[0]`: invalid rule `*.com`",
        ),
        (
            cred(&format!("hosts = [\"*\"]\nsecret_file = \"{good}\"\nenv = \"T\"\n")),
            "leash.toml:5: key `credentials[0].hosts[0]`: `*` would send",
        ),
        (
            cred(&format!("hosts = []\nsecret_file = \"{good}\"\nenv = \"T\"\n")),
            "leash.toml:5: key `credentials[0].hosts`",
        ),
        (
            format!("[[credentials]]\nname = \"gh\"\nhosts = [\"a.test\"]\nsecret_file = \"{good}\"\nenv = \"T\"\n"),
            "leash.toml:1: key `credentials[0]`: a credential needs `mitm.enabled = true`",
        ),
        (
            cred(&format!("hosts = [\"a.test\"]\nsecret_file = \"{empty}\"\nenv = \"T\"\n")),
            "leash.toml:6: key `credentials[0].secret_file`: the secret is empty",
        ),
        (
            cred(&format!("hosts = [\"a.test\"]\nsecret_file = \"{control}\"\nenv = \"T\"\n")),
            "leash.toml:6: key `credentials[0].secret_file`: the secret holds bytes",
        ),
        (
            cred(&format!("hosts = [\"a.test\"]\nsecret_file = \"{missing}\"\nenv = \"T\"\n")),
            "leash.toml:6: key `credentials[0].secret_file`: cannot read",
        ),
        (
            cred("hosts = [\"a.test\"]\nsecret_env = \"LEASH_TEST_SURELY_UNSET_VARIABLE\"\n"),
            "leash.toml:6: key `credentials[0].secret_env`: cannot read the variable",
        ),
        (
            cred(&format!("hosts = [\"a.test\"]\nsecret_env = \"PATH\"\nsecret_file = \"{good}\"\n")),
            "leash.toml:3: key `credentials[0]`: exactly one of",
        ),
        (
            cred("hosts = [\"a.test\"]\n"),
            "leash.toml:3: key `credentials[0]`: exactly one of",
        ),
        (
            cred(&format!("hosts = [\"a.test\"]\nsecret_file = \"{good}\"\n")),
            "leash.toml:3: key `credentials[0].env`: a `secret_file` credential names",
        ),
        (
            cred("hosts = [\"a.test\"]\nsecret_env = \"PATH\"\nenv = \"X\"\n"),
            "leash.toml:7: key `credentials[0].env`: `env` is for `secret_file`",
        ),
        (
            format!("{mitm}[[credentials]]\nname = \"a b\"\nhosts = [\"a.test\"]\nsecret_env = \"PATH\"\n"),
            "leash.toml:4: key `credentials[0].name`",
        ),
        (
            format!(
                "{mitm}[[credentials]]\nname = \"a\"\nhosts = [\"a.test\"]\nsecret_env = \"PATH\"\n\
                 [[credentials]]\nname = \"b\"\nhosts = [\"b.test\"]\nsecret_file = \"{good}\"\nenv = \"PATH\"\n"
            ),
            "leash.toml:11: key `credentials[1].env`: the variable is already used by credentials[0]",
        ),
        (
            format!(
                "{mitm}[[credentials]]\nname = \"a\"\nhosts = [\"a.test\"]\nsecret_env = \"PATH\"\n\
                 [[credentials]]\nname = \"b\"\nhosts = [\"b.test\"]\nsecret_env = \"PATH\"\n"
            ),
            "leash.toml:10: key `credentials[1].secret_env`: the variable is already used",
        ),
        (
            cred("hosts = [\"a.test\"]\nsecret_env = \"PATH\"\nsecret = \"x\"\n"),
            "leash.toml:7: key `credentials[0].secret`: unknown field `secret`",
        ),
    ];
    for (text, expected) in cases {
        let e = error(&text);
        assert!(e.starts_with(expected), "{e}\nexpected: {expected}\n{text}");
        assert!(!e.contains("tok-ABC123") && !e.contains("tok\u{1}"), "{e}");
    }
}

#[test]
fn a_good_credential_loads_is_intercepted_on_every_port_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "tok-ABC123\r\n").unwrap();
    let text = format!(
        "[mitm]\nenabled = true\n[[credentials]]\nname = \"gh\"\nhosts = [\"api.gh.test\"]\n\
         secret_file = \"{}\"\nenv = \"GH_TOKEN\"\n\
         [[headers]]\nhosts = [\"**.gh.test\"]\nmethods = [\"GET\"]\npaths = [\"/v1/*\"]\n\
         set = {{ \"x-team\" = \"a\" }}\nremove = [\"cookie\"]\n",
        secret.display()
    );
    let config = Config::parse(&text, Path::new("leash.toml")).unwrap();
    let policy = config.policy().unwrap();
    let target = |t: &str| policy::Target::parse(t, None).unwrap();
    assert!(policy.inspects(&target("api.gh.test:8443")));
    assert!(!policy.inspects(&target("other.test:8443")));
    let mut n = 0;
    let (credentials, placeholders) = config
        .credentials(|| {
            n += 1;
            format!("{n:032x}")
        })
        .unwrap();
    assert_eq!(
        placeholders,
        [("GH_TOKEN".to_owned(), format!("leash-cred-gh-{:032x}", 1))]
    );
    let printed = format!(
        "{config:?}{credentials:?}{}",
        serde_json::to_string(&config).unwrap()
    );
    assert!(!printed.contains("tok-ABC123"), "{printed}");
}

#[test]
fn bad_header_rules_name_line_and_key() {
    let cases = [
        (
            "[[headers]]\nhosts = [\"a.test\"]\nset = { \"bad name\" = \"1\" }\n",
            "leash.toml:3: key `headers[0].set.bad name`: not a header name",
        ),
        (
            "[[headers]]\nhosts = [\"a.test\"]\npaths = [\"v1\"]\n",
            "leash.toml:3: key `headers[0].paths[0]`",
        ),
        (
            "[[headers]]\nhosts = [\"*.com\"]\n",
            "leash.toml:2: key `headers[0].hosts[0]`: invalid rule",
        ),
        (
            "[[headers]]\nhosts = []\n",
            "leash.toml:2: key `headers[0].hosts`",
        ),
    ];
    for (text, expected) in cases {
        let e = error(text);
        assert!(e.starts_with(expected), "{e}\nexpected: {expected}");
    }
}
