//! Durations as people write them in the config file: `"250ms"`, `"10s"`, `"5m"`, `"1h"`.

use std::{fmt, str::FromStr, time::Duration};

/// A `Duration` read from and written as `"10s"`-style text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration `{text}` (expected a number with ms, s, m or h, like \"10s\")"
            )
        };
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let millis = match unit {
            "ms" => Some(number),
            "s" => number.checked_mul(1_000),
            "m" => number.checked_mul(60_000),
            "h" => number.checked_mul(3_600_000),
            _ => None,
        };
        millis
            .map(|ms| HumanDuration(Duration::from_millis(ms)))
            .ok_or_else(bad)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            ms if ms % 3_600_000 == 0 && ms > 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 && ms > 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: Option<u64>) {
        let parsed = text
            .parse::<HumanDuration>()
            .ok()
            .map(|d| d.0.as_millis() as u64);
        assert_eq!(parsed, expected, "{text:?}");
    }

    #[test]
    fn parses_units() {
        check("250ms", Some(250));
        check("10s", Some(10_000));
        check("5m", Some(300_000));
        check("1h", Some(3_600_000));
        check("0s", Some(0));
        check("10", None);
        check("s", None);
        check("-1s", None);
        check("1.5s", None);
        check("10 s", None);
        check("1d", None);
        check("99999999999999999999h", None);
    }

    #[test]
    fn displays_the_largest_whole_unit() {
        for text in ["250ms", "10s", "5m", "1h", "0s", "90s"] {
            assert_eq!(text.parse::<HumanDuration>().unwrap().to_string(), text);
        }
    }
}
