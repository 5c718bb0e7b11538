//! The approvals file (SPEC §14, `ask.approvals`): the `always` answers, as TOML `allow`/`deny`
//! lists of rules. Read at start and on reload (a bad rule is a load error naming file and line,
//! like the config's); an answer is appended by rewriting the whole file to a temp file in the
//! same directory, `0600`, and renaming it over the old one, so a reader never sees half a file.

use std::{
    fs, io,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use policy::{AskAnswer, Rule};
use serde::Deserialize;
use toml::Spanned;

use crate::config::{line_of, ConfigError};

/// The rules the approvals file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Approvals {
    pub(crate) allow: Vec<Rule>,
    pub(crate) deny: Vec<Rule>,
}

/// The file as written and as read (each rule with its span, for the line of a bad one).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spans {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

/// Where the approvals live.
#[derive(Clone, Debug)]
pub(crate) struct ApprovalsFile {
    path: PathBuf,
}

impl ApprovalsFile {
    /// `configured` (relative to the config file's directory, never to the working directory,
    /// which `leash exec`'s command may control), else `leash-approvals.toml` beside the config
    /// file (SPEC §14), else `approvals.toml` in leash's state directory.
    pub(crate) fn locate(configured: Option<&Path>, config_file: Option<&Path>) -> ApprovalsFile {
        let beside = |file: &Path, name: &Path| file.parent().unwrap_or(Path::new(".")).join(name);
        let path = match (configured, config_file) {
            (Some(path), Some(file)) if path.is_relative() => beside(file, path),
            (Some(path), _) => path.to_owned(),
            (None, Some(file)) => file.with_file_name("leash-approvals.toml"),
            (None, None) => state_dir().join("approvals.toml"),
        };
        ApprovalsFile { path }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; a missing file holds no approvals. A file someone else could have
    /// written (another owner, or writable by group or others) is refused: its rules would be
    /// allow rules nobody approved.
    pub(crate) fn load(&self) -> Result<Approvals, ConfigError> {
        if let Err(error) = self.trusted() {
            return Err(ConfigError::Read {
                path: self.path.clone(),
                error,
            });
        }
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Approvals::default())
            }
            Err(error) => {
                return Err(ConfigError::Read {
                    path: self.path.clone(),
                    error,
                })
            }
        };
        self.parse(&text)
    }

    fn parse(&self, text: &str) -> Result<Approvals, ConfigError> {
        let bad = |line: Option<usize>, key: String, message: String| ConfigError::Parse {
            path: self.path.clone(),
            line,
            key,
            message,
        };
        let spans: Spans = toml::from_str(text).map_err(|error| {
            let line = error.span().map(|span| line_of(text, span.start));
            bad(line, "approvals".to_owned(), error.message().to_owned())
        })?;
        let rules = |list: &[Spanned<String>], name: &str| {
            let parse = |(index, rule): (usize, &Spanned<String>)| {
                rule.get_ref().parse::<Rule>().map_err(|error| {
                    let line = Some(line_of(text, rule.span().start));
                    bad(line, format!("{name}[{index}]"), error.to_string())
                })
            };
            list.iter()
                .enumerate()
                .map(parse)
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Approvals {
            allow: rules(&spans.allow, "allow")?,
            deny: rules(&spans.deny, "deny")?,
        })
    }

    /// Adds `rule` to the list of `answer` (re-reading the file first, so a hand edit made while
    /// leash runs is kept) and writes the file atomically; returns what the file now holds.
    pub(crate) fn append(&self, answer: AskAnswer, rule: Rule) -> Result<Approvals, ConfigError> {
        let mut approvals = self.load()?;
        let list = match answer {
            AskAnswer::Allow => &mut approvals.allow,
            AskAnswer::Deny => &mut approvals.deny,
        };
        if !list.contains(&rule) {
            list.push(rule);
        }
        self.write(&approvals).map_err(|error| ConfigError::Read {
            path: self.path.clone(),
            error,
        })?;
        Ok(approvals)
    }

    /// Whether the file, if there, is leash's user's (or root's) and writable by nobody else.
    fn trusted(&self) -> io::Result<()> {
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        let message = match crate::foreign_writer(&meta) {
            None => return Ok(()),
            Some(crate::ForeignWriter::Owner(owner)) => {
                let ours = rustix::process::geteuid().as_raw();
                format!("owned by uid {owner}, not by leash's user {ours}")
            }
            Some(crate::ForeignWriter::GroupOrOthers(mode)) => format!(
                "writable by group or others (mode {mode:o}); fix: chmod 600 {}",
                self.path.display()
            ),
        };
        Err(io::Error::new(io::ErrorKind::PermissionDenied, message))
    }

    fn write(&self, approvals: &Approvals) -> io::Result<()> {
        let text = render(approvals);
        let dir = crate::admin_token::parent_dir(&self.path);
        // A directory leash makes is its user's alone (`0700`), like the token file's.
        crate::admin_token::create_private_dir(dir)?;
        // A temp file in the same directory: the rename is atomic only within one filesystem.
        let temp = tempfile::Builder::new()
            .prefix(".leash-approvals")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)?;
        let mut file = temp.as_file();
        // The mode given at creation is narrowed by the umask, never widened: set it anyway.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        temp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The file's text. A JSON string is a valid TOML basic string (the same escapes), and the
/// build's `toml` parses only.
fn render(approvals: &Approvals) -> String {
    let list = |rules: &[Rule]| {
        let quoted: Vec<String> = rules
            .iter()
            .map(|rule| serde_json::to_string(&rule.to_string()).expect("a string"))
            .map(|rule| format!("  {rule},\n"))
            .collect();
        format!("[\n{}]", quoted.concat())
    };
    format!(
        "# leash approvals (`always` answers). A bad rule here stops leash from loading.\nallow = {}\ndeny = {}\n",
        list(&approvals.allow),
        list(&approvals.deny)
    )
}

/// `$XDG_STATE_HOME/leash`, else `~/.local/state/leash`, else a per-user directory in `/tmp`.
fn state_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let uid = rustix::process::geteuid().as_raw();
    var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".local/state")))
        .map(|dir| dir.join("leash"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("leash-{uid}")))
}

#[cfg(test)]
mod tests;
