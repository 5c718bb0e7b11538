//! `leash check` and `leash config check` as a person runs them (SPEC §11).

use std::fs;

use tests::{leash, stderr, stdout};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn check_allows_with_the_matching_rule_and_exits_0() {
    let dir = dir();
    let out = leash(
        dir.path(),
        &["check", "api.github.com:443", "--allow", "**.github.com"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("allow api.github.com:443 (rule `**.github.com`)"),
        "{text}"
    );
    assert!(
        text.contains("4. allow list: matched `**.github.com`"),
        "{text}"
    );
}

#[test]
fn check_names_the_deny_rule_and_exits_1() {
    let dir = dir();
    let out = leash(
        dir.path(),
        &[
            "check",
            "www.evil.example",
            "--allow",
            "*",
            "--deny",
            "**.evil.example",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("deny www.evil.example (denylist: `**.evil.example`)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_with_no_config_asks_for_everything() {
    let dir = dir();
    let out = leash(dir.path(), &["check", "example.com", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(json["decision"], "ask");
    assert_eq!(json["reason"], "allowlist_miss");
    assert_eq!(json["target"], "example.com");
    assert_eq!(json["steps"][3]["step"], "allowlist");
}

#[test]
fn check_refuses_local_spellings_and_invalid_targets() {
    let dir = dir();
    for (target, reason) in [
        ("0x7f.1:80", "local_address"),
        ("[::ffff:127.0.0.1]:80", "local_address"),
        ("a..b", "invalid_target"),
    ] {
        let out = leash(dir.path(), &["check", target, "--allow", "*", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{target}");
        let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        assert_eq!(json["reason"], reason, "{target}");
    }
}

#[test]
fn a_malformed_rule_exits_2_naming_it() {
    let dir = dir();
    let out = leash(dir.path(), &["check", "example.com", "--allow", "*.com"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("invalid rule `*.com`"), "{err}");
    assert!(err.contains("public suffix `com`"), "{err}");
}

#[test]
fn a_token_with_a_colon_is_refused_at_start() {
    let dir = dir();
    let out = leash(
        dir.path(),
        &[
            "proxy",
            "--ephemeral",
            "--token",
            "to:ken",
            "--log",
            "v.jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("auth.token") && err.contains("cannot contain `:`"),
        "{err}"
    );
}

#[test]
fn check_reads_the_config_file_and_flags_add_to_it() {
    let dir = dir();
    fs::write(
        dir.path().join("leash.toml"),
        "[policy]\nallow = [\"**.example.com\"]\ndeny = [\"bad.example.com\"]\n",
    )
    .unwrap();
    let out = leash(dir.path(), &["check", "a.example.com"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "./leash.toml is found: {}",
        stdout(&out)
    );
    let out = leash(
        dir.path(),
        &["check", "bad.example.com", "--allow", "bad.example.com"],
    );
    assert_eq!(out.status.code(), Some(1), "deny wins over a flag's allow");
    let out = leash(
        dir.path(),
        &["check", "pypi.org", "--allow", "pypi.org:443"],
    );
    assert_eq!(out.status.code(), Some(0));
    let out = leash(
        dir.path(),
        &["check", "pypi.org:80", "--allow", "pypi.org:443"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_in_limited_mode_explains_the_method() {
    let dir = dir();
    let args = [
        "check",
        "example.com",
        "--allow",
        "example.com",
        "--mode",
        "limited",
        "--protocol",
        "http",
        "--method",
        "POST",
    ];
    let out = leash(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("(method_not_allowed)"),
        "{}",
        stdout(&out)
    );
    let out = leash(
        dir.path(),
        &[
            "check",
            "example.com",
            "--allow",
            "example.com",
            "--mode",
            "limited",
        ],
    );
    assert!(stdout(&out).contains("(mitm_required)"), "{}", stdout(&out));
    let out = leash(
        dir.path(),
        &[
            "check",
            "example.com",
            "--allow",
            "example.com",
            "--mode",
            "limited",
            "--mitm",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn check_says_an_allowed_name_is_checked_again_after_dns() {
    let dir = dir();
    let note = "note: api.github.com is a name: after DNS every address it resolves to is checked too (a local address is refused unless allow_local covers it";
    let out = leash(
        dir.path(),
        &["check", "api.github.com", "--allow", "**.github.com"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(note), "{}", stdout(&out));
    let json = |args: &[&str]| -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&stdout(&leash(dir.path(), &args))).expect("json")
    };
    let allowed = json(&["check", "api.github.com", "--allow", "**.github.com"]);
    assert_eq!(allowed["post_dns_check"], true, "{allowed}");
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    // An address is decided here for good; a refused name is never resolved.
    for args in [
        &["check", "1.2.3.4", "--allow", "1.2.3.4"][..],
        &["check", "[2001:4860::1]", "--allow", "[2001:4860::1]"],
        &["check", "api.github.com"],
        &[
            "check",
            "api.github.com",
            "--allow",
            "*",
            "--deny",
            "api.github.com",
        ],
    ] {
        assert_eq!(json(args)["post_dns_check"], false, "{args:?}");
        let text = stdout(&leash(dir.path(), args));
        assert!(!text.contains("note:"), "{args:?}: {text}");
    }
}

#[test]
fn a_url_given_as_a_rule_is_refused_with_its_host() {
    let dir = dir();
    for (rule, host) in [
        ("https://pypi.org/simple", "pypi.org"),
        ("pypi.org/simple", "pypi.org"),
        ("http://user@pypi.org:8080/", "pypi.org:8080"),
    ] {
        let out = leash(dir.path(), &["check", "pypi.org", "--allow", rule]);
        assert_eq!(out.status.code(), Some(2), "{rule}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("rules are hosts, not URLs: use `{host}`")),
            "{err}"
        );
    }
}

#[test]
fn config_check_warns_about_dead_local_rules_and_limited_mode_without_mitm() {
    let dir = dir();
    let file = dir.path().join("leash.toml");
    fs::write(
        &file,
        "mode = \"limited\"\n[policy]\nallow = [\"github.com\", \"10.0.0.0/8\", \"192.168.1.5\", \"[fd00::]/8\", \"172.20.1.2:8000\"]\nallow_local = [\"10.1.0.0/16\", \"172.20.0.0/16\"]\n",
    )
    .unwrap();
    let out = leash(dir.path(), &["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    for rule in ["10.0.0.0/8", "192.168.1.5", "[fd00::]/8"] {
        assert!(
            err.contains(&format!(
                "warning: {}: allow rule `{rule}` names local targets that allow_local does not cover",
                file.display()
            )),
            "{rule}: {err}"
        );
    }
    assert!(!err.contains("`172.20.1.2:8000`"), "covered: {err}");
    assert!(
        err.contains("mode = \"limited\" without [mitm] enabled: every HTTPS CONNECT is refused with mitm_required"),
        "{err}"
    );
    assert!(stdout(&out).contains("4 warnings"), "{}", stdout(&out));

    fs::write(
        &file,
        "mode = \"limited\"\n[policy]\nallow = [\"github.com\"]\n[mitm]\nenabled = true\n",
    )
    .unwrap();
    let out = leash(dir.path(), &["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn config_check_warns_when_the_admin_token_is_turned_off() {
    let dir = dir();
    let file = dir.path().join("leash.toml");
    fs::write(&file, "[admin]\ntoken = \"none\"\n").unwrap();
    let out = leash(dir.path(), &["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("admin.token = \"none\": the admin API takes changes without a token"),
        "{}",
        stderr(&out)
    );
    fs::write(&file, "[admin]\nenabled = false\ntoken = \"none\"\n").unwrap();
    let out = leash(dir.path(), &["config", "check", file.to_str().unwrap()]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn config_check_lints_and_reports_errors_with_file_and_key() {
    let dir = dir();
    let good = dir.path().join("good.toml");
    fs::write(
        &good,
        "[policy]\nallow = [\"a.github.com\", \"**.github.com\"]\n",
    )
    .unwrap();
    let out = leash(dir.path(), &["config", "check", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("ok (2 allow rules, 0 deny rules, 1 warnings)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("allow rule `a.github.com` is already covered by `**.github.com`")
    );

    let bad = dir.path().join("bad.toml");
    fs::write(
        &bad,
        "mode = \"full\"\n[policy]\nallow = [\"ok.test\", \"a*.b.test\"]\n",
    )
    .unwrap();
    let out = leash(dir.path(), &["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml:3: key `policy.allow[1]`: invalid rule `a*.b.test`"),
        "{err}"
    );

    fs::write(&bad, "[listen]\nhttp = \"127.0.0.1:3128\"\nhtps = 1\n").unwrap();
    let out = leash(dir.path(), &["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad.toml:3: key `listen.htps`: unknown field `htps`"),
        "{}",
        stderr(&out)
    );

    let out = leash(dir.path(), &["config", "check"]);
    assert_eq!(out.status.code(), Some(1), "no file anywhere");
    assert!(stderr(&out).contains("no config file"));
}

#[test]
fn env_prints_the_proxy_variables_for_a_running_proxy() {
    let dir = dir();
    let ready = dir.path().join("ready.json");
    fs::write(&ready, r#"{"event":"ready","pid":1,"http":"127.0.0.1:4100","socks":"127.0.0.1:4101","admin":null}"#).unwrap();
    let out = leash(
        dir.path(),
        &[
            "env",
            "--ready-file",
            ready.to_str().unwrap(),
            "--attempt",
            "a9",
            "--token",
            "t",
            "--shell",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let vars: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(vars["HTTP_PROXY"], "http://a9:t@127.0.0.1:4100");
    assert_eq!(vars["all_proxy"], "socks5h://a9:t@127.0.0.1:4101");
    assert_eq!(vars["NO_PROXY"], "");

    let out = leash(dir.path(), &["env", "--http", "127.0.0.1:4100"]);
    let text = stdout(&out);
    assert!(
        text.contains("export HTTPS_PROXY='http://shell@127.0.0.1:4100'\n"),
        "{text}"
    );
    assert!(
        text.contains("export ALL_PROXY='http://shell@127.0.0.1:4100'\n"),
        "the HTTP URL when SOCKS is off: {text}"
    );
    let out = leash(
        dir.path(),
        &["env", "--http", "127.0.0.1:4100", "--shell", "fish"],
    );
    assert!(stdout(&out).contains("set -gx http_proxy 'http://shell@127.0.0.1:4100'\n"));

    fs::write(
        dir.path().join("leash.toml"),
        "[policy]\nallow_local = true\n",
    )
    .unwrap();
    let out = leash(
        dir.path(),
        &["env", "--http", "127.0.0.1:4100", "--shell", "json"],
    );
    let vars: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        vars["NO_PROXY"], "localhost,127.0.0.1,::1",
        "only with allow_local = true"
    );
    assert_eq!(
        leash(dir.path(), &["env"]).status.code(),
        Some(2),
        "addresses are required"
    );
}
