use super::*;

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

#[test]
fn the_hosts_file_answers_both_families_and_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts");
    write(
        &path,
        "# comment\n192.0.2.7 box.test other.test\n2001:db8::7 box.test\n",
    );
    let hosts = HostsFile::new(path.clone());
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        hosts.lookup("box.test"),
        Some(vec![ip("192.0.2.7"), ip("2001:db8::7")])
    );
    assert_eq!(
        hosts.lookup("BOX.test"),
        Some(vec![ip("192.0.2.7"), ip("2001:db8::7")])
    );
    assert_eq!(hosts.lookup("nowhere.test"), None);
    write(&path, "192.0.2.8 box.test\n");
    // Seen within the check interval, bounded: a few intervals at most.
    let mut answer = None;
    for _ in 0..50 {
        answer = hosts.lookup("box.test");
        if answer == Some(vec![ip("192.0.2.8")]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answer, Some(vec![ip("192.0.2.8")]));
    assert_eq!(hosts.lookup("other.test"), None, "the old entries are gone");
}

#[test]
fn a_missing_hosts_file_is_an_empty_one() {
    let hosts = HostsFile::new(PathBuf::from("/nonexistent/leash-hosts"));
    assert_eq!(hosts.lookup("localhost"), None);
}

#[test]
fn resolv_conf_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let error = check_resolv_conf(&missing).unwrap_err();
    assert!(matches!(error, DnsConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("missing"), "{error}");
    let empty = dir.path().join("empty");
    write(&empty, "search example.test\n");
    let error = check_resolv_conf(&empty).unwrap_err();
    assert!(matches!(error, DnsConfigError::Invalid { .. }), "{error:?}");
    let good = dir.path().join("good");
    write(
        &good,
        "nameserver 198.51.100.2\noptions timeout:30 attempts:3\n",
    );
    check_resolv_conf(&good).unwrap();
}

#[test]
fn the_cache_keeps_nothing_past_its_ttl_and_queries_never_outlive_leashs_timeout() {
    let (_, mut options) =
        parse_resolv_conf("nameserver 198.51.100.2\noptions timeout:30\n").unwrap();
    tune(&mut options, Duration::from_secs(5));
    assert_eq!(options.timeout, Duration::from_secs(5));
    assert_eq!(options.positive_min_ttl, Some(Duration::ZERO));
    assert_eq!(options.negative_min_ttl, Some(Duration::ZERO));
    assert_eq!(options.positive_max_ttl, Some(MAX_CACHE_TTL));
    assert_eq!(options.ip_strategy, LookupIpStrategy::Ipv4AndIpv6);
    assert_eq!(options.use_hosts_file, ResolveHosts::Never);
}

#[tokio::test]
async fn a_name_in_the_hosts_file_never_reaches_dns() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    write(&hosts, "192.0.2.9 only-here.test\n");
    let resolv_conf = dir.path().join("resolv.conf");
    // A name server nothing listens on: a query would fail, not answer.
    write(&resolv_conf, "nameserver 127.0.0.1\n");
    let resolver = DnsResolver::new(&DnsSettings {
        resolv_conf: Some(resolv_conf),
        hosts,
        timeout: Duration::from_secs(1),
    })
    .unwrap();
    let addrs = resolver.resolve("only-here.test").await.unwrap();
    assert_eq!(addrs, ["192.0.2.9".parse::<IpAddr>().unwrap()]);
}

#[test]
fn builds_outside_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let resolv_conf = dir.path().join("resolv.conf");
    write(&resolv_conf, "nameserver 127.0.0.1\n");
    let settings = DnsSettings {
        resolv_conf: Some(resolv_conf),
        ..DnsSettings::system(Duration::from_secs(1))
    };
    // An embedder may build leash before it starts its runtime.
    DnsResolver::new(&settings).unwrap();
}
