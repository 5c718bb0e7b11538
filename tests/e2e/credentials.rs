//! Credentials that never enter the sandbox, and header rules (SPEC §17), end to end: the real
//! `leash` binary (`leash exec`, `leash proxy` + `leash env`), curl as the child, and local
//! origins standing in for the API (`api.origin.test`, HTTPS on a port that is not 443, and
//! `plain.origin.test`, plain HTTP) and for another allowed host (`other.test`, both).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::Value;
use tests::{leash_bin, stderr, BinaryProxy, Origin, SeenRequest, TestCa};

const SECRET: &str = "ghp_REAL-secret-9f8e7d6c5b4a";
const OTHER_SECRET: &str = "other_REAL-secret-0a1b2c";
const WAIT: Duration = Duration::from_secs(60);

/// The origins, the config naming them, and a directory for everything a run writes.
struct Fixture {
    dir: tempfile::TempDir,
    https: Origin,
    plain: Origin,
    config: PathBuf,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(None).await
    }

    /// The fixture; with `git`, also `git.origin.test` (a credential host) on that port.
    async fn start_with(git: Option<u16>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("credentials origin CA");
        let ca_pem = dir.path().join("origin-ca.pem");
        ca.write_pem(&ca_pem);
        let https = Origin::https(ca.server_config(&["api.origin.test", "other.test"], &[])).await;
        let plain = Origin::http().await;
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "127.0.0.1 api.origin.test other.test plain.origin.test git.origin.test\n",
        )
        .unwrap();
        for sub in ["data", "run"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let d = dir.path().display();
        let text = format!(
            r#"[policy]
allow = ["api.origin.test", "other.test", "plain.origin.test", "git.origin.test"]
allow_local = ["127.0.0.1:{s}", "127.0.0.1:{p}"{git_local}]
[dns]
hosts = "{d}/hosts"
[mitm]
enabled = true
ca_dir = "{d}/ca"
upstream_ca = ["{d}/origin-ca.pem"]
[log]
violations = "{d}/log.jsonl"
log_allowed = true
[ask]
approvals = "{d}/approvals.toml"
hold = "2s"

[[credentials]]
name = "github"
hosts = ["api.origin.test", "plain.origin.test", "git.origin.test"]
secret_env = "GITHUB_TOKEN"

[[credentials]]
name = "other"
hosts = ["other.test"]
secret_env = "OTHER_TOKEN"

[[headers]]
hosts = ["api.origin.test"]
methods = ["POST"]
paths = ["/v1/*"]
set = {{ "x-team" = "a" }}
remove = ["cookie"]
"#,
            s = https.port(),
            p = plain.port(),
            git_local = git
                .map(|g| format!(", \"127.0.0.1:{g}\""))
                .unwrap_or_default(),
        );
        let config = dir.path().join("leash.toml");
        std::fs::write(&config, text).unwrap();
        Fixture {
            dir,
            https,
            plain,
            config,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `leash ARGS` with this fixture's home, secrets in the environment.
    fn leash(&self, args: &[&str]) -> Command {
        let mut command = Command::new(leash_bin());
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("GITHUB_TOKEN", SECRET)
            .env("OTHER_TOKEN", OTHER_SECRET)
            .env_remove("LEASH_CONFIG");
        command
    }

    /// `leash exec --config C -- sh -c SCRIPT sh HTTPS_PORT PLAIN_PORT`, in the fixture's dir.
    async fn exec(&self, script: &str) -> Output {
        let mut command = self.leash(&["exec", "--config"]);
        command
            .arg(&self.config)
            .arg("--log")
            .arg(self.path("log.jsonl"))
            .args(["--", "sh", "-c", script, "sh"])
            .arg(self.https.port().to_string())
            .arg(self.plain.port().to_string());
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        output
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Every request either origin saw.
    fn seen(&self) -> Vec<SeenRequest> {
        let mut all = self.https.seen.requests();
        all.extend(self.plain.seen.requests());
        all
    }

    fn log(&self) -> Vec<Value> {
        self.read("log.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn header<'a>(request: &'a SeenRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn is_placeholder(text: &str, name: &str) -> bool {
    let prefix = format!("leash-cred-{name}-");
    text.strip_prefix(&prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_gets_the_secret_and_the_child_only_the_placeholder() {
    let fixture = Fixture::start().await;
    let script = r#"printf %s "$GITHUB_TOKEN" > seen-by-child
env > env-of-child
curl -sS -f -o https.out -H "Authorization: Bearer $GITHUB_TOKEN" "https://api.origin.test:$1/user"
curl -sS -f -o basic.out -u "x-access-token:$GITHUB_TOKEN" "https://api.origin.test:$1/basic"
curl -sS -f -o plain.out -H "Authorization: token $GITHUB_TOKEN" "http://plain.origin.test:$2/plain""#;
    fixture.exec(script).await;
    let placeholder = fixture.read("seen-by-child");
    assert!(is_placeholder(&placeholder, "github"), "{placeholder}");
    let env = fixture.read("env-of-child");
    assert!(
        !env.contains(SECRET) && !env.contains(OTHER_SECRET),
        "{env}"
    );
    assert_eq!(fixture.read("https.out"), "hello from origin");
    let seen = fixture.seen();
    let by_path = |path: &str| {
        seen.iter()
            .find(|r| r.uri == path)
            .unwrap_or_else(|| panic!("{path} reached no origin: {seen:?}"))
    };
    assert_eq!(
        header(by_path("/user"), "authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("x-access-token:{SECRET}"))
    );
    assert_eq!(
        header(by_path("/basic"), "authorization"),
        Some(basic.as_str())
    );
    // Plain HTTP to the credential's host: replaced as well.
    assert_eq!(
        header(by_path("/plain"), "authorization"),
        Some(format!("token {SECRET}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_placeholder_sent_to_another_allowed_host_is_refused() {
    let fixture = Fixture::start().await;
    // Over HTTPS (other.test is intercepted: it has a credential of its own) and plain HTTP.
    let script = r#"T="$GITHUB_TOKEN"
probe() { name=$1; shift; curl -sS -i -o "$name.out" "$@"; }
for base in "https://other.test:$1" "http://other.test:$2"; do
  kind=${base%%:*}
  probe "$kind-header" -H "Authorization: Bearer $T" "$base/h"
  probe "$kind-query" "$base/q?access_token=$T"
  probe "$kind-query-encoded" "$base/q?t=$(printf %s "$T" | sed 's/-/%2D/g')"
  probe "$kind-path" "$base/p/$T/x"
  probe "$kind-basic" -u "user:$T" "$base/b"
  probe "$kind-body" -d "token=$T" "$base/d"
  probe "$kind-json" -H 'content-type: application/json' -d "{\"t\":\"$T\"}" "$base/j"
  probe "$kind-clean" "$base/clean"
done"#;
    fixture.exec(script).await;
    let mut refused = 0;
    for kind in ["https", "http"] {
        for case in [
            "header",
            "query",
            "query-encoded",
            "path",
            "basic",
            "body",
            "json",
        ] {
            let out = fixture.read(&format!("{kind}-{case}.out")).to_lowercase();
            assert!(
                out.contains("x-proxy-error: blocked-by-credential-scope")
                    && out.contains("\"reason\":\"credential_scope\""),
                "{kind}-{case}: {out}"
            );
            refused += 1;
        }
        let clean = fixture.read(&format!("{kind}-clean.out"));
        assert!(clean.ends_with("hello from origin"), "{kind}: {clean}");
    }
    let seen = fixture.seen();
    assert_eq!(
        seen.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        ["/clean", "/clean"],
        "only the clean requests reached an origin"
    );
    let blocks: Vec<Value> = fixture
        .log()
        .into_iter()
        .filter(|l| l["reason"] == "credential_scope")
        .collect();
    assert_eq!(blocks.len(), refused, "{blocks:?}");
    for block in &blocks {
        assert_eq!(
            (&block["decision"], &block["detail"], &block["host"]),
            (&"deny".into(), &"github".into(), &"other.test".into()),
            "{block}"
        );
        assert!(!block.to_string().contains("leash-cred-github-"), "{block}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_apply_by_host_method_and_path() {
    let fixture = Fixture::start().await;
    let script = r#"h() { curl -sS -f -o /dev/null -H 'Cookie: c=1' -H 'X-Team: z' "$@"; }
h -X POST "https://api.origin.test:$1/v1/edited"
h "https://api.origin.test:$1/v1/get"
h -X POST "https://api.origin.test:$1/v2/other-path"
h -X POST "https://other.test:$1/v1/other-host""#;
    fixture.exec(script).await;
    let seen = fixture.seen();
    let edits = |path: &str| {
        let request = seen.iter().find(|r| r.uri == path).expect(path);
        (
            header(request, "x-team").map(str::to_owned),
            header(request, "cookie").is_some(),
        )
    };
    assert_eq!(edits("/v1/edited"), (Some("a".to_owned()), false));
    for path in ["/v1/get", "/v2/other-path", "/v1/other-host"] {
        assert_eq!(edits(path), (Some("z".to_owned()), true), "{path}");
    }
}

/// A GET of the admin API at `admin` with the bearer `token`.
fn admin_get(admin: &str, token: &str, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{admin}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir`, read.
fn every_file(dir: &Path, into: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => every_file(&path, into),
            false => into.push((path.clone(), std::fs::read(&path).unwrap_or_default())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_nowhere_in_what_a_run_leaves() {
    let fixture = Fixture::start().await;
    let ready = fixture.path("ready.json");
    let mut command = fixture.leash(&["proxy", "--ephemeral", "--config"]);
    command
        .arg(&fixture.config)
        .arg("--ready-file")
        .arg(&ready)
        .env("LEASH_LOG", "trace");
    let proxy = BinaryProxy::start(command, WAIT);
    // `leash env` learns the placeholders from the ready record; the shell never sees a secret.
    let script = r#"eval "$("$LEASH" env --ready-file "$READY")"
printf %s "$GITHUB_TOKEN" > seen-by-shell
curl -sS -o ok.out -H "Authorization: Bearer $GITHUB_TOKEN" -u "u:$GITHUB_TOKEN" "https://api.origin.test:$1/ok"
curl -sS -o plain.out -H "Authorization: Bearer $GITHUB_TOKEN" "http://plain.origin.test:$2/ok"
curl -sS -o refused.out -H "Authorization: Bearer $GITHUB_TOKEN" "https://other.test:$1/p/$GITHUB_TOKEN?t=$GITHUB_TOKEN"
curl -sS -o asked.out "http://not-allowed.test/?t=$GITHUB_TOKEN"
true"#;
    let mut shell = Command::new("sh");
    shell
        .args(["-c", script, "sh"])
        .arg(fixture.https.port().to_string())
        .arg(fixture.plain.port().to_string())
        .current_dir(fixture.dir.path())
        .env("LEASH", leash_bin())
        .env("READY", &ready)
        .env("XDG_RUNTIME_DIR", fixture.path("run"))
        .env_remove("GITHUB_TOKEN")
        .env_remove("OTHER_TOKEN");
    let out = tokio::task::spawn_blocking(move || shell.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(is_placeholder(&fixture.read("seen-by-shell"), "github"));
    let authorization = fixture
        .https
        .seen
        .requests()
        .iter()
        .find(|r| r.uri == "/ok")
        .and_then(|r| header(r, "authorization").map(str::to_owned));
    assert_eq!(authorization, Some(format!("Bearer {SECRET}")));
    let admin = proxy.ready["admin"]
        .as_str()
        .expect("an admin API")
        .to_owned();
    let token_file = proxy.ready["admin_token_file"]
        .as_str()
        .expect("a token file");
    let token = std::fs::read_to_string(token_file).unwrap();
    let mut answers = String::new();
    for path in [
        "/config",
        "/blocked",
        "/patterns",
        "/pending",
        "/metrics",
        "/health",
        "/attempts",
        "/",
    ] {
        let answer = admin_get(&admin, token.trim(), path);
        answers += &format!("== {path}\n{answer}\n");
    }
    assert!(answers.contains("credential_scope"), "{answers}");
    let output = proxy.terminate();
    std::fs::write(fixture.path("admin-answers.txt"), &answers).unwrap();
    std::fs::write(fixture.path("proxy-stdout.txt"), &output.stdout).unwrap();
    std::fs::write(fixture.path("proxy-stderr.txt"), &output.stderr).unwrap();
    // Lines below the default `warn` show the filter took `trace`.
    assert!(
        stderr(&output).contains("INFO"),
        "LEASH_LOG=trace logged: {}",
        stderr(&output)
    );
    let mut files = Vec::new();
    every_file(fixture.dir.path(), &mut files);
    let basic = STANDARD.encode(format!("u:{SECRET}"));
    let mut searched = 0;
    for (path, bytes) in &files {
        for needle in [SECRET, OTHER_SECRET, basic.as_str()] {
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "{} holds a secret ({needle})", path.display());
        }
        searched += bytes.len();
    }
    assert!(files.len() >= 8 && searched > 0, "{files:?}");
}

/// `git http-backend` over HTTPS behind a Basic check (`credentials/git_origin.py`); killed on
/// drop.
struct GitOrigin {
    child: std::process::Child,
    port: u16,
}

impl Drop for GitOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GitOrigin {
    /// Serves the bare repositories under `root` to `user` with the password in `password`.
    fn start(dir: &Path, root: &Path, user: &str, password: &Path) -> GitOrigin {
        let ca = TestCa::new("git origin CA");
        ca.write_pem(&dir.join("git-ca.pem"));
        let (cert, key) = (dir.join("git-leaf.pem"), dir.join("git-leaf.key"));
        ca.write_leaf(&["git.origin.test"], &cert, &key);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/credentials/git_origin.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([&cert, &key, root])
            .arg(user)
            .arg(password)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped");
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = send.send(line);
        });
        let line = receive
            .recv_timeout(WAIT)
            .expect("the git origin prints its port");
        let port = line.trim().parse().expect("a port");
        GitOrigin { child, port }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
}

/// A bare repository `ROOT/repo.git` with one commit holding `README` = `text`.
fn bare_repo(root: &Path, text: &str) {
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), text).unwrap();
    git(&work, &["add", "README"]);
    git(
        &work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "one",
        ],
    );
    git(root, &["clone", "-q", "--bare", "work", "repo.git"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_over_https_with_the_placeholder_as_its_password() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("repos");
    std::fs::create_dir(&root).unwrap();
    bare_repo(&root, "cloned with a credential leash kept\n");
    let password = scratch.path().join("password");
    std::fs::write(&password, SECRET).unwrap();
    let origin = GitOrigin::start(scratch.path(), &root, "x-access-token", &password);
    let fixture = Fixture::start_with(Some(origin.port)).await;
    // leash trusts the git origin's CA too (the fixture's config names one file: add this one).
    let config = std::fs::read_to_string(&fixture.config).unwrap().replace(
        "upstream_ca = [",
        &format!(
            "upstream_ca = [\"{}\", ",
            scratch.path().join("git-ca.pem").display()
        ),
    );
    std::fs::write(&fixture.config, config).unwrap();
    let script = r#"export GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1 HOME="$PWD"
helper='!f() { echo username=x-access-token; echo "password=$GITHUB_TOKEN"; }; f'
git -c credential.helper= -c "credential.helper=$helper" clone -q "https://git.origin.test:$3/repo.git" clone 2> git.err
echo "exit $?" >> git.err"#;
    let mut command = fixture.leash(&["exec", "--config"]);
    command
        .arg(&fixture.config)
        .arg("--log")
        .arg(fixture.path("log.jsonl"))
        .args(["--", "sh", "-c", script, "sh", "-", "-"])
        .arg(origin.port.to_string());
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fixture.read("clone/README"),
        "cloned with a credential leash kept\n",
        "{}",
        fixture.read("git.err")
    );
    let mut files = Vec::new();
    every_file(&fixture.path("clone/.git"), &mut files);
    for (path, bytes) in files {
        let found = bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
        assert!(!found, "{} holds the secret", path.display());
    }
}

/// A sandboxed program runs as the same user as `leash proxy`, so it could read leash's own
/// `/proc/PID/environ`, where the `secret_env` value still is: leash makes itself non-dumpable
/// when it holds credentials, which closes that file (and its memory) to same-user processes
/// (`leash exec` already was). Run as `nobody` (root reads every process's environment whatever
/// it does), so the test needs root to switch users.
#[test]
fn a_same_user_process_cannot_read_the_secret_from_leash_s_environment() {
    let root = Command::new("id").arg("-u").output().unwrap();
    let setpriv = Command::new("setpriv").arg("--version").output();
    if String::from_utf8_lossy(&root.stdout).trim() != "0" || setpriv.is_err() {
        eprintln!(
            "SKIPPED a_same_user_process_cannot_read_the_secret_from_leash_s_environment: needs \
             root and setpriv, to run leash and the reader as another user"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let d = dir.path().display();
    let config = dir.path().join("leash.toml");
    std::fs::write(
        &config,
        format!(
            "[mitm]\nenabled = true\nca_dir = \"{d}/ca\"\n[log]\nviolations = \"{d}/log.jsonl\"\n\
             [admin]\nenabled = false\n[[credentials]]\nname = \"github\"\n\
             hosts = [\"api.origin.test\"]\nsecret_env = \"GITHUB_TOKEN\"\n"
        ),
    )
    .unwrap();
    let as_nobody = |program: &Path| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("LEASH_CONFIG");
        command
    };
    let mut command = as_nobody(leash_bin());
    command
        .args(["proxy", "--ephemeral", "--config"])
        .arg(&config)
        .env("GITHUB_TOKEN", SECRET);
    let proxy = BinaryProxy::start(command, WAIT);
    let environ = format!("/proc/{}/environ", proxy.pid());
    let read = as_nobody(Path::new("cat")).arg(&environ).output().unwrap();
    proxy.terminate();
    let found = read
        .stdout
        .windows(SECRET.len())
        .any(|w| w == SECRET.as_bytes());
    assert!(!found, "a same-user process read the secret from {environ}");
    assert!(
        stderr(&read).contains("Permission denied"),
        "{}",
        stderr(&read)
    );
}

/// The proxy substitutes with what it built at start, so a reload that changes `credentials`
/// or `headers` is refused (the old policy stays); one that leaves them alone goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_change_credentials_or_header_rules() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let text = |hosts: &str, allow: &str| {
        format!(
            "[policy]\nallow = [\"{allow}\"]\n[mitm]\nenabled = true\nca_dir = \"{}\"\n\
             [[credentials]]\nname = \"github\"\nhosts = [{hosts}]\nsecret_file = \"{}\"\n\
             env = \"GITHUB_TOKEN\"\n",
            dir.path().join("ca").display(),
            secret.display()
        )
    };
    let file = dir.path().join("leash.toml");
    std::fs::write(&file, text("\"api.origin.test\"", "a.test")).unwrap();
    let resolver = std::sync::Arc::new(listeners::StaticResolver::new());
    let proxy = tests::start_proxy_from_file(&file, resolver);
    let admin = proxy.admin_client();
    std::fs::write(&file, text("\"api.origin.test\", \"x.test\"", "a.test")).unwrap();
    let (status, body) = crate::admin::call(&admin, "POST", "/reload", None, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("restart leash"), "{body}");
    std::fs::write(&file, text("\"api.origin.test\"", "b.test")).unwrap();
    let (status, body) = crate::admin::call(&admin, "POST", "/reload", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains(SECRET));
}

/// The body scan reads the first 64 KiB before anything is sent, then the rest streams: a large
/// body arrives whole and unchanged; the placeholder inside the first 64 KiB is refused, past
/// them it is not seen (the documented limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_whole_and_only_its_first_64_kib_are_scanned() {
    let fixture = Fixture::start().await;
    let script = r#"T="$GITHUB_TOKEN"
head -c 200000 /dev/zero | tr '\0' 'a' > clean.bin
{ head -c 1000 clean.bin; printf %s "$T"; head -c 150000 clean.bin; } > early.bin
{ head -c 70000 clean.bin; printf %s "$T"; head -c 1000 clean.bin; } > late.bin
for f in clean early late; do
  for base in "https://other.test:$1" "http://other.test:$2"; do
    kind=${base%%:*}
    curl -sS -o "$kind-$f.out" -w '%{http_code}' --data-binary "@$f.bin" "$base/echo" > "$kind-$f.code"
  done
done"#;
    fixture.exec(script).await;
    for kind in ["https", "http"] {
        for (file, code) in [("clean", "200"), ("early", "403"), ("late", "200")] {
            assert_eq!(
                fixture.read(&format!("{kind}-{file}.code")),
                code,
                "{kind} {file}"
            );
            if code == "200" {
                let sent = std::fs::read(fixture.path(&format!("{file}.bin"))).unwrap();
                let echoed = std::fs::read(fixture.path(&format!("{kind}-{file}.out"))).unwrap();
                assert!(sent == echoed, "{kind} {file}: the body came back changed");
            }
        }
    }
}
