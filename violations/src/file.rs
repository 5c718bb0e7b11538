//! The log file itself: rotation by the clock (the file names tracing-appender's rolling files
//! used, so existing setups find their files where they were), and appends that leave only whole
//! lines behind. tracing-appender hid the `File`, so a write that failed half-way (a full disk)
//! could not be cut back, and the next line was glued to the torn one.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{log::Rotation, time::rfc3339_millis};

/// An append that did not complete: the whole lines at the front of the batch that did reach the
/// file, and why the rest did not.
#[derive(Debug)]
pub(crate) struct Failed {
    /// Bytes of the batch now in the file, always ending a line (0 if none).
    pub(crate) whole: usize,
    pub(crate) error: io::Error,
}

/// The current file, opened for appending.
#[derive(Debug)]
pub(crate) struct LogFile {
    dir: PathBuf,
    prefix: String,
    rotation: Rotation,
    /// The period (hour or day since the epoch) the open file belongs to, and the file.
    open: Option<(u64, File)>,
    /// Bytes of a torn line at the end of the open file that could not be cut yet.
    torn: u64,
}

impl LogFile {
    /// Opens (creates or appends to) the file for now.
    pub(crate) fn open(dir: PathBuf, prefix: String, rotation: Rotation) -> io::Result<LogFile> {
        let mut file = LogFile {
            dir,
            prefix,
            rotation,
            open: None,
            torn: 0,
        };
        file.current()?;
        Ok(file)
    }

    /// Appends `batch` (whole lines). On failure the bytes of a line cut short are removed again
    /// before anything else is written, so the file only ever holds whole lines.
    pub(crate) fn append(&mut self, batch: &[u8]) -> Result<(), Failed> {
        let failed = |error| Failed { whole: 0, error };
        self.cut_torn().map_err(failed)?;
        let file = self.current().map_err(failed)?;
        let mut done = 0;
        let error = loop {
            if done == batch.len() {
                return Ok(());
            }
            match file.write(&batch[done..]) {
                Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => done += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break error,
            }
        };
        let whole = batch[..done]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        self.torn = (done - whole) as u64;
        // If this fails too, the next append tries again before writing.
        let _ = self.cut_torn();
        Err(Failed { whole, error })
    }

    /// Removes the torn bytes at the end of the open file. The file may have been truncated or
    /// replaced behind our back, so the length is read, never remembered.
    fn cut_torn(&mut self) -> io::Result<()> {
        if self.torn == 0 {
            return Ok(());
        }
        if let Some((_, file)) = &self.open {
            let len = file.metadata()?.len();
            file.set_len(len.saturating_sub(self.torn))?;
        }
        self.torn = 0;
        Ok(())
    }

    /// The file for the current period, opening the next one when the period has changed.
    fn current(&mut self) -> io::Result<&mut File> {
        let now = SystemTime::now();
        let period = self.rotation.period(now);
        if self.open.as_ref().is_none_or(|(p, _)| *p != period) {
            let path = self.dir.join(self.rotation.file_name(&self.prefix, now));
            self.open = Some((period, open_repaired(&path)?));
        }
        Ok(&mut self.open.as_mut().expect("just opened").1)
    }
}

impl Rotation {
    /// A number that changes exactly when a new file starts.
    fn period(self, now: SystemTime) -> u64 {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        match self {
            Rotation::Never => 0,
            Rotation::Hourly => secs / 3600,
            Rotation::Daily => secs / 86_400,
        }
    }

    /// `PREFIX`, `PREFIX.YYYY-MM-DD-HH` or `PREFIX.YYYY-MM-DD` (UTC), as tracing-appender named
    /// its rolling files.
    pub(crate) fn file_name(self, prefix: &str, now: SystemTime) -> String {
        // `2026-11-26T12:…`: the date is the first 10 characters, the hour the 2 after the `T`.
        let ts = rfc3339_millis(now);
        match self {
            Rotation::Never => prefix.to_owned(),
            Rotation::Hourly => format!("{prefix}.{}-{}", &ts[..10], &ts[11..13]),
            Rotation::Daily => format!("{prefix}.{}", &ts[..10]),
        }
    }
}

/// Opens `path` for appending (creating its directory if needed) and cuts a torn last line left
/// by an earlier process (killed in the middle of a write), so the next line starts on its own.
fn open_repaired(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            options.create(true).open(path)?
        }
        Err(error) => return Err(error),
    };
    let len = file.metadata()?.len();
    let whole = whole_lines_len(&mut file, len)?;
    if whole < len {
        file.set_len(whole)?;
    }
    Ok(file)
}

/// The length of the file up to and including its last newline, reading backwards from `len`.
fn whole_lines_len(file: &mut File, len: u64) -> io::Result<u64> {
    let mut buf = [0u8; 4096];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn file_names_follow_the_rolling_scheme() {
        let at = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        let name = |rotation: Rotation| rotation.file_name("v.jsonl", at);
        assert_eq!(name(Rotation::Never), "v.jsonl");
        assert_eq!(name(Rotation::Hourly), "v.jsonl.2026-12-31-23");
        assert_eq!(name(Rotation::Daily), "v.jsonl.2026-12-31");
        let next = at + Duration::from_secs(1);
        assert_ne!(Rotation::Hourly.period(at), Rotation::Hourly.period(next));
        assert_ne!(Rotation::Daily.period(at), Rotation::Daily.period(next));
        assert_eq!(Rotation::Never.period(at), Rotation::Never.period(next));
    }

    #[track_caller]
    fn check_repair(before: &str, after: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/v.jsonl");
        if !before.is_empty() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, before).unwrap();
        }
        let mut file = LogFile::open(
            path.parent().unwrap().into(),
            "v.jsonl".into(),
            Rotation::Never,
        )
        .unwrap();
        file.append(b"{\"seq\":9}\n").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{after}{{\"seq\":9}}\n")
        );
    }

    #[test]
    fn a_torn_last_line_is_cut_when_the_file_is_opened() {
        check_repair("", "");
        check_repair("{\"seq\":1}\n", "{\"seq\":1}\n");
        check_repair("{\"seq\":1}\n{\"se", "{\"seq\":1}\n");
        check_repair("{\"se", "");
        let long = format!("{{\"seq\":1}}\n{}", "x".repeat(10_000));
        check_repair(&long, "{\"seq\":1}\n");
    }
}
