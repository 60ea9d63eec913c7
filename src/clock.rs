//! Wall-clock formatting: the HTTP `Date` header (IMF-fixdate, RFC 9110) and
//! the common-log-format timestamp. Both come from one civil-date conversion
//! so that no date crate is needed for two fixed formats.

use std::time::{SystemTime, UNIX_EPOCH};

/// `date: Sun, 06 Nov 1994 08:49:37 GMT\r\n`
pub const DATE_LINE_LEN: usize = 37;

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds since the Unix epoch, 0 if the clock is before it.
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Civil {
    year: i64,
    month: usize, // 1..=12
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: usize, // index into WEEKDAYS (0 = Thursday, 1970-01-01)
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil(unix_secs: u64) -> Civil {
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = (unix_secs % 86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: secs_of_day / 3600,
        minute: secs_of_day / 60 % 60,
        second: secs_of_day % 60,
        weekday: (days.rem_euclid(7)) as usize,
    }
}

/// The whole `date:` header line, CRLF included.
pub fn date_line(unix_secs: u64) -> [u8; DATE_LINE_LEN] {
    let c = civil(unix_secs);
    let text = format!(
        "date: {}, {:02} {} {:04} {:02}:{:02}:{:02} GMT\r\n",
        WEEKDAYS[c.weekday],
        c.day,
        MONTHS[c.month - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    );
    let mut line = [b' '; DATE_LINE_LEN];
    let bytes = text.as_bytes();
    debug_assert_eq!(bytes.len(), DATE_LINE_LEN, "four-digit years only");
    let n = bytes.len().min(DATE_LINE_LEN);
    line[..n].copy_from_slice(&bytes[..n]);
    line
}

/// `23/Nov/2026:17:56:43 +0000` (UTC).
pub fn clf_timestamp(unix_secs: u64) -> String {
    let c = civil(unix_secs);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        c.day,
        MONTHS[c.month - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_line_matches_rfc_example() {
        // RFC 9110's example date: Sun, 06 Nov 1994 08:49:37 GMT.
        let line = date_line(784_111_777);
        assert_eq!(&line[..], b"date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
    }

    #[test]
    fn clf_timestamp_handles_leap_day() {
        // 2024-02-29T23:59:59Z
        assert_eq!(clf_timestamp(1_709_251_199), "29/Feb/2024:23:59:59 +0000");
    }

    #[test]
    fn epoch_is_thursday() {
        assert_eq!(
            &date_line(0)[..],
            b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        );
    }
}
