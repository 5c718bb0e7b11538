//! MITM set up on every entry point (SPEC §5, §9, §12): the ready record of `leash proxy --mitm`
//! names the CA, the first start says how to trust it, and a shell that evaluates `leash env
//! --ready-file` lets real clients (curl, Python's urllib and requests, wget) trust the
//! intercepting proxy, while the same shell without the CA variables gets certificate errors.

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;
use tests::{leash_bin, stderr, stdout, BinaryProxy, Origin, TestCa};

const WAIT: Duration = Duration::from_secs(60);

/// The variables that make a client trust the leash CA; unset for the runs that must fail.
const CA_VARIABLES: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
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
    "WGETRC",
];

/// A home of its own for one leash: data (the CA), runtime (the admin token) and the working
/// directory all in a temporary directory, so a test never touches the real home.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        let home = Home {
            dir: tempfile::tempdir().unwrap(),
        };
        for sub in ["data", "run", "work", "shell"] {
            std::fs::create_dir(home.path(sub)).unwrap();
        }
        std::fs::write(home.path("empty"), "").unwrap();
        home
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// `leash ARGS` in `work/`, with this home's XDG directories.
    fn leash(&self, args: &[&str]) -> Command {
        let mut command = Command::new(leash_bin());
        command
            .args(args)
            .current_dir(self.path("work"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env_remove("LEASH_CONFIG")
            // The user's own Node CAs would be folded into the files; these tests bring none.
            .env_remove("NODE_EXTRA_CA_CERTS");
        command
    }

    /// `leash proxy --ephemeral --ready-file ready.json ARGS`, started.
    fn proxy(&self, args: &[&str]) -> BinaryProxy {
        let ready = self.path("ready.json");
        let mut command = self.leash(&["proxy", "--ephemeral", "--ready-file"]);
        command.arg(&ready).args(args);
        BinaryProxy::start(command, WAIT)
    }

    /// Where `leash ca` keeps the CA under this home.
    fn ca_cert(&self) -> PathBuf {
        self.path("data/leash/ca/ca.pem")
    }
}

fn path_of(value: &Value) -> PathBuf {
    PathBuf::from(value.as_str().unwrap_or_else(|| panic!("a path: {value}")))
}

#[test]
fn the_ready_record_names_the_ca_and_only_its_creation_is_announced() {
    let home = Home::new();
    let first = home.proxy(&["--mitm"]);
    let ready = first.ready.clone();
    assert_eq!(ready["mitm"], true, "{ready}");
    let ca_cert = path_of(&ready["ca_cert"]);
    assert_eq!(ca_cert, home.ca_cert(), "{ready}");
    let bundle = path_of(&ready["ca_bundle"]);
    assert_eq!(
        bundle.parent(),
        ca_cert.parent(),
        "the bundle sits beside the CA"
    );
    let ca_pem = std::fs::read_to_string(&ca_cert).unwrap();
    let bundle_pem = std::fs::read_to_string(&bundle).unwrap();
    assert!(
        bundle_pem.contains(ca_pem.trim_end()),
        "the bundle holds the leash CA"
    );
    assert!(
        bundle_pem.matches("BEGIN CERTIFICATE").count() > 1,
        "and roots besides it"
    );
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(home.path("ready.json")).unwrap()).unwrap();
    assert_eq!(on_disk, ready, "the ready file says what stdout said");
    let out = first.terminate();
    let text = stderr(&out);
    assert!(
        text.contains(&format!("created the MITM CA at {}", ca_cert.display()))
            && text.contains("leash env"),
        "the first start says where the CA is and how to trust it: {text}"
    );

    let second = home.proxy(&["--mitm"]);
    assert_eq!(path_of(&second.ready["ca_cert"]), ca_cert);
    let text = stderr(&second.terminate());
    assert!(
        !text.contains("created the MITM CA"),
        "an existing CA is not announced again: {text}"
    );

    let plain = home.proxy(&[]);
    let ready = plain.ready.clone();
    assert_eq!(
        (&ready["mitm"], &ready["ca_bundle"], &ready["ca_cert"]),
        (&false.into(), &Value::Null, &Value::Null),
        "{ready}"
    );
    let out = home
        .leash(&["env", "--ready-file"])
        .arg(home.path("ready.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("SSL_CERT_FILE"),
        "no CA variables for a proxy without MITM: {}",
        stdout(&out)
    );
}

/// A limited-mode MITM leash (every CONNECT is intercepted, whatever the port) that may reach one
/// local HTTPS origin, whose CA it is told to trust; the origin's CA is never given to clients.
struct Intercepting {
    home: Home,
    origin: Origin,
    proxy: BinaryProxy,
}

async fn intercepting() -> Intercepting {
    let home = Home::new();
    let origin_ca = TestCa::new("origin CA");
    let origin_ca_file = home.path("origin-ca.pem");
    origin_ca.write_pem(&origin_ca_file);
    let origin = Origin::https(origin_ca.server_config(&[], &["127.0.0.1".parse().unwrap()])).await;
    // The config gives only what no flag can (the origin's CA); MITM itself comes from the flag.
    let config = home.path("work/leash.toml");
    let text = format!(
        "[mitm]\nupstream_ca = [{:?}]\n",
        origin_ca_file.to_str().unwrap()
    );
    std::fs::write(&config, text).unwrap();
    let allow = format!("127.0.0.1:{}", origin.port());
    let proxy = home.proxy(&[
        "--mitm",
        "--mode",
        "limited",
        "--allow-local",
        &allow,
        "--config",
        config.to_str().unwrap(),
    ]);
    Intercepting {
        home,
        origin,
        proxy,
    }
}

impl Intercepting {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.origin.port())
    }

    /// `command` in a shell that evaluated `leash env --ready-file` (run from a directory with no
    /// config: the ready record alone must say that the proxy intercepts), then, unless
    /// `trusting`, unset every CA variable again.
    fn shell(&self, trusting: bool, command: &[&str]) -> Output {
        let unset = match trusting {
            true => String::new(),
            // wget would read ~/.wgetrc without WGETRC: an empty file leaves it its defaults.
            false => format!(
                "unset {}; export WGETRC=\"$EMPTY\"; ",
                CA_VARIABLES.join(" ")
            ),
        };
        let script = format!(
            "vars=\"$(\"$LEASH\" env --ready-file \"$READY\")\" || exit 99; eval \"$vars\"; \
             {unset}exec \"$@\""
        );
        Command::new("sh")
            .args(["-c", &script, "sh"])
            .args(command)
            .current_dir(self.home.path("shell"))
            .env("LEASH", leash_bin())
            .env("READY", self.home.path("ready.json"))
            .env("EMPTY", self.home.path("empty"))
            .env("XDG_RUNTIME_DIR", self.home.path("run"))
            .env_remove("LEASH_CONFIG")
            .output()
            .expect("sh runs")
    }

    /// `command` trusts leash through `leash env` and fails with a certificate error without it
    /// (`refused` is how that error shows: an exit status, or text on stderr).
    fn check(&self, name: &str, command: &[&str], refused: Refused) {
        let out = self.shell(true, command);
        assert_eq!(
            (out.status.code(), stdout(&out).trim()),
            (Some(0), "hello from origin"),
            "{name} through leash env: {}",
            stderr(&out)
        );
        let out = self.shell(false, command);
        let failed = match refused {
            Refused::Status(code) => out.status.code() == Some(code),
            Refused::Says(text) => out.status.code() != Some(0) && stderr(&out).contains(text),
        };
        assert!(
            failed,
            "{name} without the CA variables must fail to verify leash's certificate \
             ({refused:?}): status {:?}, {}",
            out.status.code(),
            stderr(&out)
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Refused {
    Status(i32),
    Says(&'static str),
}

fn python_requests_available() -> bool {
    let import = Command::new("python3")
        .args(["-c", "import requests"])
        .output();
    match import {
        Ok(out) if out.status.success() => true,
        _ if std::env::var_os("CI").is_some() => panic!("CI must install Python requests"),
        _ => {
            eprintln!("skipping Python requests: `import requests` fails (pip install requests)");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_trust_the_intercepting_proxy_through_leash_env() {
    let setup = intercepting().await;
    let url = setup.url();
    // curl: exit 60 is "peer certificate cannot be authenticated with known CA certificates";
    // -q first keeps a ~/.curlrc out of it.
    setup.check(
        "curl",
        &["curl", "-q", "-sS", "--fail", &url],
        Refused::Status(60),
    );
    let urllib = format!(
        "import urllib.request; print(urllib.request.urlopen({url:?}, timeout=30).read().decode())"
    );
    setup.check(
        "python urllib",
        &["python3", "-c", &urllib],
        Refused::Says("CERTIFICATE_VERIFY_FAILED"),
    );
    let with_requests = python_requests_available();
    if with_requests {
        let requests = format!("import requests; print(requests.get({url:?}, timeout=30).text)");
        setup.check(
            "python requests",
            &["python3", "-c", &requests],
            Refused::Says("CERTIFICATE_VERIFY_FAILED"),
        );
    }
    // wget: exit 5 is "SSL verification failure".
    setup.check(
        "wget",
        &["wget", "-q", "-O", "-", "--tries=1", &url],
        Refused::Status(5),
    );
    // Every trusted run reached the origin, through leash; no failed one did.
    assert_eq!(
        setup.origin.seen.requests().len(),
        3 + usize::from(with_requests)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leash_env_names_every_ca_file_from_the_ready_record() {
    let setup = intercepting().await;
    let out = setup
        .home
        .leash(&["env", "--shell", "json", "--ready-file"])
        .arg(setup.home.path("ready.json"))
        .current_dir(setup.home.path("shell"))
        .env_remove("NODE_EXTRA_CA_CERTS")
        .env_remove("WGETRC")
        .env("HOME", setup.home.path("shell"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let vars: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ca_cert = setup.home.ca_cert();
    let bundle = path_of(&vars["SSL_CERT_FILE"]);
    assert_eq!(bundle.parent(), ca_cert.parent(), "{vars}");
    for name in CA_VARIABLES {
        let expected = match *name {
            "SSL_CERT_DIR" => continue,
            "NODE_EXTRA_CA_CERTS" => ca_cert.clone(),
            "WGETRC" => continue,
            _ => bundle.clone(),
        };
        assert_eq!(path_of(&vars[*name]), expected, "{name}: {vars}");
    }
    let wgetrc = std::fs::read_to_string(path_of(&vars["WGETRC"])).unwrap();
    assert!(
        wgetrc.ends_with(&format!("\nca_certificate = {}\n", bundle.display())),
        "{wgetrc}"
    );
    assert_eq!(
        bundle,
        path_of(&setup.proxy.ready["ca_bundle"]),
        "leash env and the proxy, in the same environment, write the same bundle"
    );
}
