//! The `[limits]` values as people write them, refused at load when they make no sense: a zero
//! timeout, connection limit or head size would make the proxy refuse everything.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A timeout written `"250ms"`, `"10s"`, `"5m"`, `"1h"` (humantime's grammar): more than zero and
/// at most [`Timeout::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timeout(Duration);

impl Timeout {
    /// The longest timeout accepted: longer ones are typos, and `Instant + Duration` must not
    /// overflow.
    pub const MAX: Duration = Duration::from_secs(30 * 24 * 3600);

    /// `duration`, if it is a timeout that makes sense.
    pub fn new(duration: Duration) -> Result<Timeout, String> {
        match duration.is_zero() || duration > Timeout::MAX {
            true => Err(format!(
                "`{}` is out of range: expected more than 0 and at most 30 days",
                humantime::format_duration(duration)
            )),
            false => Ok(Timeout(duration)),
        }
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Timeout {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let duration = humantime::parse_duration(text).map_err(|error| {
            format!("invalid duration `{text}`: {error} (expected a number with a unit, like \"10s\", \"250ms\" or \"5m\")")
        })?;
        Timeout::new(duration)
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// A count within `MIN..=MAX`, refused at load otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bounded<const MIN: usize, const MAX: usize>(usize);

impl<const MIN: usize, const MAX: usize> Bounded<MIN, MAX> {
    /// `value`, if it is within bounds.
    pub fn new(value: usize) -> Result<Self, String> {
        match (MIN..=MAX).contains(&value) {
            true => Ok(Bounded(value)),
            false => Err(format!(
                "`{value}` is out of range: expected {MIN} to {MAX}"
            )),
        }
    }

    /// The value.
    pub fn get(self) -> usize {
        self.0
    }
}

impl<const MIN: usize, const MAX: usize> Serialize for Bounded<MIN, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, const MIN: usize, const MAX: usize> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Bounded::new(usize::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// `limits.max_request_head`: below 1 KiB a request line with a few ordinary headers no longer
/// fits; above 1 MiB it is a memory lever for the client, not a limit.
pub type HeadSize = Bounded<1024, { 1 << 20 }>;

/// `limits.max_connections`: at least one, and no more than descriptors could ever allow.
pub type ConnectionCount = Bounded<1, { 1 << 20 }>;

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: Option<u64>) {
        let parsed = text.parse::<Timeout>().ok().map(|d| d.0.as_millis() as u64);
        assert_eq!(parsed, expected, "{text:?}");
    }

    #[test]
    fn parses_units() {
        check("250ms", Some(250));
        check("10s", Some(10_000));
        check("5m", Some(300_000));
        check("1h", Some(3_600_000));
        check("1m 30s", Some(90_000));
        check("10", None);
        check("s", None);
        check("-1s", None);
        check("10 parsecs", None);
        check("99999999999999999999h", None);
    }

    #[test]
    fn refuses_timeouts_that_make_no_sense() {
        check("0s", None);
        check("0ms", None);
        check("31days", None);
        check("30days", Some(30 * 24 * 3_600_000));
        check("1ms", Some(1));
        let e = "0s".parse::<Timeout>().unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn displays_what_it_parsed() {
        for text in ["250ms", "10s", "5m", "1h", "1m 30s"] {
            assert_eq!(text.parse::<Timeout>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn counts_are_bounded_on_both_sides() {
        assert!(HeadSize::new(0).is_err());
        assert!(HeadSize::new(1023).is_err());
        assert_eq!(HeadSize::new(1024).unwrap().get(), 1024);
        assert!(HeadSize::new((1 << 20) + 1).is_err());
        assert!(ConnectionCount::new(0).is_err());
        assert_eq!(ConnectionCount::new(1).unwrap().get(), 1);
        assert_eq!(
            ConnectionCount::new(0).unwrap_err(),
            "`0` is out of range: expected 1 to 1048576"
        );
    }
}
