use std::os::unix::fs::PermissionsExt;

use super::*;

fn rule(text: &str) -> Rule {
    text.parse().expect("a rule")
}

fn file_in(dir: &Path) -> ApprovalsFile {
    ApprovalsFile::locate(Some(&dir.join("sub/approvals.toml")), None)
}

#[test]
fn a_missing_file_holds_nothing_and_an_append_creates_it_0600() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_in(dir.path());
    assert_eq!(file.load().unwrap(), Approvals::default());
    file.append(AskAnswer::Allow, rule("a.test:443")).unwrap();
    let mode = fs::metadata(file.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(file.load().unwrap().allow, vec![rule("a.test:443")]);
}

#[test]
fn appends_keep_what_is_there_and_merge_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_in(dir.path());
    file.append(AskAnswer::Allow, rule("a.test:443")).unwrap();
    // A hand edit while leash runs is kept by the next append.
    let text = fs::read_to_string(file.path()).unwrap();
    fs::write(
        file.path(),
        text.replace("deny = [\n]", "deny = [\"b.test\"]"),
    )
    .unwrap();
    file.append(AskAnswer::Deny, rule("c.test:80")).unwrap();
    file.append(AskAnswer::Allow, rule("A.test.:443")).unwrap();
    file.append(AskAnswer::Allow, rule("[::1]:8000")).unwrap();
    let approvals = file.load().unwrap();
    assert_eq!(
        approvals.allow,
        vec![rule("a.test:443"), rule("[::1]:8000")]
    );
    assert_eq!(approvals.deny, vec![rule("b.test"), rule("c.test:80")]);
}

#[test]
fn an_append_replaces_the_file_atomically_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_in(dir.path());
    file.append(AskAnswer::Allow, rule("a.test:443")).unwrap();
    let before = fs::metadata(file.path()).unwrap();
    file.append(AskAnswer::Allow, rule("b.test:443")).unwrap();
    let after = fs::metadata(file.path()).unwrap();
    use std::os::unix::fs::MetadataExt;
    // A rename puts a new inode in place: the old file was never rewritten in place.
    assert_ne!(before.ino(), after.ino());
    let names: Vec<_> = fs::read_dir(file.path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("approvals.toml")]);
}

#[test]
fn a_bad_rule_is_an_error_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_in(dir.path());
    fs::create_dir_all(file.path().parent().unwrap()).unwrap();
    let cases = [
        (
            "allow = [\n  \"a.test\",\n  \"a..b\",\n]\n",
            ":3: key `allow[1]`",
        ),
        ("deny = [\"*.com\"]\n", ":1: key `deny[0]`"),
        ("allow = []\nbogus = 1\n", ":2: key `approvals`"),
        ("allow = \"a.test\"\n", ":1: key `approvals`"),
    ];
    for (text, expected) in cases {
        fs::write(file.path(), text).unwrap();
        let error = file.load().expect_err(text).to_string();
        let named = format!("{}{expected}", file.path().display());
        assert!(error.starts_with(&named), "{text:?}: {error}");
    }
}

#[test]
fn the_default_sits_beside_the_config_file() {
    let config = Path::new("/etc/leash/leash.toml");
    let file = ApprovalsFile::locate(None, Some(config));
    assert_eq!(file.path(), Path::new("/etc/leash/leash-approvals.toml"));
    let file = ApprovalsFile::locate(Some(Path::new("/x/a.toml")), Some(config));
    assert_eq!(file.path(), Path::new("/x/a.toml"));
    let file = ApprovalsFile::locate(None, None);
    assert!(file.path().ends_with("leash/approvals.toml"), "{file:?}");
}

/// A file others could have written is refused, naming the fix; the directory leash makes is
/// `0700`; a relative `ask.approvals` is taken beside the config file, not in the working
/// directory (which `leash exec`'s command may control).
#[test]
fn a_file_others_could_write_is_refused_and_paths_are_the_configs() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_in(dir.path());
    file.append(AskAnswer::Allow, rule("a.test:443")).unwrap();
    let made = fs::metadata(dir.path().join("sub"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(made & 0o777, 0o700);
    for mode in [0o620, 0o602, 0o666] {
        fs::set_permissions(file.path(), fs::Permissions::from_mode(mode)).unwrap();
        let error = file.load().expect_err("writable by others").to_string();
        assert!(error.contains("chmod 600"), "{error}");
        assert!(error.contains("approvals.toml"), "{error}");
    }
    fs::set_permissions(file.path(), fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(file.load().unwrap().allow, vec![rule("a.test:443")]);

    let config = dir.path().join("conf/leash.toml");
    let relative = ApprovalsFile::locate(Some(Path::new("mine.toml")), Some(&config));
    assert_eq!(relative.path(), dir.path().join("conf/mine.toml"));
    let absolute = ApprovalsFile::locate(Some(&dir.path().join("x.toml")), Some(&config));
    assert_eq!(absolute.path(), dir.path().join("x.toml"));
}
