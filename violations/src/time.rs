//! RFC 3339 UTC timestamps with milliseconds, as every log line carries them.

use std::time::SystemTime;

use time::{format_description::BorrowedFormatItem, macros::format_description, OffsetDateTime};

/// Always three fraction digits and `Z`, so lines sort and align as text.
const RFC3339_MILLIS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `2026-11-26T12:00:00.123Z` for `now`.
pub(crate) fn rfc3339_millis(now: SystemTime) -> String {
    OffsetDateTime::from(now)
        .format(RFC3339_MILLIS)
        .expect("a UTC instant always formats")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[track_caller]
    fn check(secs: u64, millis: u64, expected: &str) {
        let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
        assert_eq!(rfc3339_millis(at), expected);
    }

    #[test]
    fn known_instants() {
        check(0, 0, "1970-01-01T00:00:00.000Z");
        check(951_782_400, 5, "2000-02-29T00:00:00.005Z");
        check(1_798_761_599, 999, "2026-12-31T23:59:59.999Z");
        check(4_107_542_400, 0, "2100-03-01T00:00:00.000Z");
    }
}
