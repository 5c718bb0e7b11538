use base64::{engine::general_purpose::STANDARD, Engine};
use hyper::{header::AUTHORIZATION, HeaderMap, Method, Uri};
use policy::{Credential, RuleList, Secret, Target};
use proptest::prelude::*;

use super::*;

const PLACEHOLDER: &str = "leash-cred-gh-0123456789abcdef";
const SECRET: &str = "ghp_REALsecret";

fn credentials(rules: Vec<HeaderRule>) -> Credentials {
    let credential = Credential {
        name: "gh".into(),
        hosts: RuleList::new(["api.github.test".parse().unwrap()]),
        variable: "GITHUB_TOKEN".into(),
        placeholder: PLACEHOLDER.into(),
        secret: Secret::new(SECRET),
    };
    Credentials::new(vec![credential], rules)
}

fn target(host: &str) -> Target {
    Target::parse(host, Some(443)).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// The scope check of a GET of `uri` with `pairs` to `host`.
#[track_caller]
fn scope(host: &str, uri: &str, pairs: &[(&str, &str)]) -> Result<(), OutOfScope> {
    let mut map = headers(pairs);
    let uri: Uri = uri.parse().unwrap();
    credentials(Vec::new()).apply(&target(host), &Method::GET, &uri, &mut map)
}

fn basic(user_pass: &str) -> String {
    format!("Basic {}", STANDARD.encode(user_pass))
}

#[test]
fn the_placeholder_becomes_the_secret_for_its_hosts_only() {
    let creds = credentials(Vec::new());
    let mut map = headers(&[
        ("authorization", &format!("Bearer {PLACEHOLDER}")),
        ("x-other", &format!("a{PLACEHOLDER}b{PLACEHOLDER}")),
    ]);
    let uri: Uri = "/user".parse().unwrap();
    creds
        .apply(&target("api.github.test"), &Method::GET, &uri, &mut map)
        .unwrap();
    assert_eq!(map[AUTHORIZATION], format!("Bearer {SECRET}").as_str());
    assert!(map[AUTHORIZATION].is_sensitive());
    assert_eq!(map["x-other"], format!("a{SECRET}b{SECRET}").as_str());
}

#[test]
fn the_placeholder_inside_basic_is_decoded_replaced_and_encoded_again() {
    let creds = credentials(Vec::new());
    for user_pass in [
        format!("x-access-token:{PLACEHOLDER}"),
        format!("{PLACEHOLDER}:"),
    ] {
        let mut map = headers(&[("authorization", &basic(&user_pass))]);
        let uri: Uri = "/repo.git/info/refs".parse().unwrap();
        creds
            .apply(&target("api.github.test"), &Method::GET, &uri, &mut map)
            .unwrap();
        let want = basic(&user_pass.replace(PLACEHOLDER, SECRET));
        assert_eq!(map[AUTHORIZATION], want.as_str());
    }
}

#[test]
fn the_placeholder_to_another_host_is_out_of_scope_wherever_it_is() {
    let p = PLACEHOLDER;
    let (half, other_half) = p.split_at(12);
    let encoded: String = p.bytes().map(|b| format!("%{b:02X}")).collect();
    let twice = encoded.replace('%', "%25");
    let cases: Vec<(String, Vec<(&str, String)>)> = vec![
        ("/".into(), vec![("authorization", format!("Bearer {p}"))]),
        ("/".into(), vec![("x-anything", format!("pre{p}post"))]),
        (
            "/".into(),
            vec![("authorization", basic(&format!("u:{p}")))],
        ),
        (
            "/".into(),
            vec![(
                "authorization",
                basic(&format!("u:{p}")).trim_end_matches('=').to_owned(),
            )],
        ),
        (
            "/".into(),
            vec![("x-a", half.into()), ("x-b", other_half.into())],
        ),
        (format!("/{p}/x"), vec![]),
        (format!("/x?token={p}"), vec![]),
        (format!("/x?token={encoded}"), vec![]),
        (format!("/x?token={twice}"), vec![]),
        (format!("/x?token=leash%2Dcred{}", &p[10..]), vec![]),
    ];
    for (uri, pairs) in cases {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let got = scope("other.test", &uri, &pairs);
        assert_eq!(
            got,
            Err(OutOfScope {
                credential: "gh".into()
            }),
            "{uri} {pairs:?}"
        );
        // The same request to the credential's own host is not a block.
        assert_eq!(scope("api.github.test", &uri, &pairs), Ok(()), "{uri}");
    }
}

#[test]
fn what_the_scope_check_does_not_see() {
    // Recorded in the README: base64 outside `Basic`, other encodings and transformations.
    let p = PLACEHOLDER;
    let b64 = STANDARD.encode(p);
    let reversed: String = p.chars().rev().collect();
    for value in [format!("Bearer {b64}"), reversed, p.to_uppercase()] {
        assert_eq!(
            scope("other.test", "/", &[("x-a", &value)]),
            Ok(()),
            "{value}"
        );
    }
}

#[test]
fn a_body_is_checked_raw_and_percent_decoded() {
    let creds = credentials(Vec::new());
    let form = format!("a=1&token={}", PLACEHOLDER.replace('-', "%2D"));
    for body in [format!("{{\"t\":\"{PLACEHOLDER}\"}}"), form] {
        let got = creds.check_body(&target("other.test"), body.as_bytes());
        assert!(got.is_err(), "{body}");
        assert_eq!(
            creds.check_body(&target("api.github.test"), body.as_bytes()),
            Ok(())
        );
    }
}

#[test]
fn header_rules_set_and_remove_by_host_method_and_path() {
    let spec = HeaderRuleSpec {
        methods: &["post".to_owned()],
        paths: &["/v1/*".to_owned()],
        set: vec![("x-team", "a")],
        remove: &["cookie".to_owned()],
    };
    let rule = HeaderRule::new(RuleList::new(["**.api.test".parse().unwrap()]), &spec).unwrap();
    let creds = credentials(vec![rule]);
    let run = |host: &str, method: Method, path: &str| {
        let mut map = headers(&[("cookie", "c=1"), ("x-team", "z")]);
        let uri: Uri = path.parse().unwrap();
        creds.apply(&target(host), &method, &uri, &mut map).unwrap();
        (
            map.get("x-team").map(|v| v.to_str().unwrap().to_owned()),
            map.contains_key("cookie"),
        )
    };
    assert_eq!(
        run("x.api.test", Method::POST, "/v1/a/b"),
        (Some("a".into()), false)
    );
    let untouched = (Some("z".into()), true);
    assert_eq!(run("x.api.test", Method::GET, "/v1/a"), untouched);
    assert_eq!(run("x.api.test", Method::POST, "/v2/a"), untouched);
    assert_eq!(run("other.test", Method::POST, "/v1/a"), untouched);
}

#[test]
fn bad_header_rules_name_their_key() {
    let hosts = || RuleList::new(["a.test".parse().unwrap()]);
    let bad = [
        (
            HeaderRuleSpec {
                methods: &["G T".to_owned()],
                ..Default::default()
            },
            "methods[0]",
        ),
        (
            HeaderRuleSpec {
                paths: &["v1/*".to_owned()],
                ..Default::default()
            },
            "paths[0]",
        ),
        (
            HeaderRuleSpec {
                set: vec![("x y", "1")],
                ..Default::default()
            },
            "set.x y",
        ),
        (
            HeaderRuleSpec {
                set: vec![("x", "a\nb")],
                ..Default::default()
            },
            "set.x",
        ),
        (
            HeaderRuleSpec {
                remove: &["ok".to_owned(), "b@d".to_owned()],
                ..Default::default()
            },
            "remove[1]",
        ),
    ];
    for (spec, key) in bad {
        assert_eq!(HeaderRule::new(hosts(), &spec).unwrap_err().key, key);
    }
}

#[test]
fn globs() {
    for (pattern, path, want) in [
        ("/v1/*", "/v1/", true),
        ("/v1/*", "/v1/a/b", true),
        ("/v1/*", "/v2/a", false),
        ("/v1/*", "/v1", false),
        ("/exact", "/exact", true),
        ("/exact", "/exact/more", false),
        ("/*/x", "/a/b/x", true),
        ("/a*b*c", "/abc", true),
        ("/a*b*c", "/acb", false),
        ("*", "/", true),
    ] {
        assert_eq!(glob(pattern, path), want, "{pattern} {path}");
    }
}

fn header_text() -> impl Strategy<Value = String> {
    "[ -~]{0,40}"
}

proptest! {
    /// Substitution never changes a request that does not carry the placeholder.
    #[test]
    fn a_request_without_the_placeholder_is_unchanged(
        pairs in prop::collection::vec(("[a-z][a-z-]{0,10}", header_text()), 0..8),
        path in "/[a-zA-Z0-9/._~%-]{0,30}",
        to_own_host in any::<bool>(),
    ) {
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .filter(|(_, v)| !v.contains(PLACEHOLDER))
            .map(|(n, v)| (n, v.trim().to_owned()))
            .collect();
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let before = headers(&refs);
        let mut after = before.clone();
        let host = if to_own_host { "api.github.test" } else { "other.test" };
        let uri: Uri = path.parse().unwrap();
        let got = credentials(Vec::new()).apply(&target(host), &Method::GET, &uri, &mut after);
        prop_assert_eq!(got, Ok(()));
        prop_assert_eq!(before, after);
    }

    /// The placeholder in a query to another host is caught however its bytes are
    /// percent-encoded (each byte raw, `%XX` upper or lower case, or `%25XX`).
    #[test]
    fn a_percent_encoded_placeholder_in_a_query_is_caught(
        encodings in prop::collection::vec(0u8..4, PLACEHOLDER.len()),
        prefix in "[a-z0-9=&]{0,10}",
    ) {
        let encoded: String = PLACEHOLDER
            .bytes()
            .zip(encodings)
            .map(|(b, how)| match how {
                0 => (b as char).to_string(),
                1 => format!("%{b:02X}"),
                2 => format!("%{b:02x}"),
                _ => format!("%25{b:02X}"),
            })
            .collect();
        let uri = format!("/search?{prefix}{encoded}");
        prop_assert!(scope("other.test", &uri, &[]).is_err(), "{}", uri);
    }

    /// The placeholder split anywhere across consecutive header values is caught.
    #[test]
    fn a_placeholder_split_across_header_values_is_caught(at in 1usize..PLACEHOLDER.len()) {
        let (a, b) = PLACEHOLDER.split_at(at);
        prop_assert!(scope("other.test", "/", &[("x-a", a), ("x-b", b)]).is_err());
    }
}
