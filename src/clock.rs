//! Wall-clock formatting: the HTTP `Date` header (IMF-fixdate, RFC 9110),
//! the common-log-format timestamp and RFC 3339 UTC timestamps with
//! microseconds (function logs), which are also parsed back. All come from
//! one civil-date conversion so that no date crate is needed for three fixed
//! formats.

use std::time::{SystemTime, UNIX_EPOCH};

/// `date: Sun, 06 Nov 1994 08:49:37 GMT\r\n`
pub const DATE_LINE_LEN: usize = 37;

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `30s`, `5m`, `1h`: a whole number of seconds, minutes or hours; `None`
/// for anything else (callers bound the range and word the error).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let (digits, unit_secs) = match text.as_bytes().last()? {
        b's' => (&text[..text.len() - 1], 1),
        b'm' => (&text[..text.len() - 1], 60),
        b'h' => (&text[..text.len() - 1], 3600),
        _ => return None,
    };
    let n: u64 = digits.parse().ok()?;
    Some(std::time::Duration::from_secs(n.checked_mul(unit_secs)?))
}

/// Seconds since the Unix epoch, 0 if the clock is before it.
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch, 0 if the clock is before it.
pub fn unix_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

const MICROS_PER_SEC: u64 = 1_000_000;
const SECS_PER_DAY: u64 = 86_400;

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

/// Howard Hinnant's days-from-civil algorithm: days since 1970-01-01 of a
/// proleptic Gregorian date (negative before it).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
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

/// `2026-12-02T05:21:07.123456Z`: RFC 3339, UTC, always six fraction
/// digits (years past 9999 print more digits and do not parse back).
pub fn rfc3339_us(unix_us: u64) -> String {
    let mut text = Vec::with_capacity(RFC3339_US_LEN);
    write_rfc3339_us(unix_us, &mut text);
    // Only ASCII digits and separators were written.
    String::from_utf8(text).unwrap_or_default()
}

/// Length of [`rfc3339_us`] for four-digit years.
pub const RFC3339_US_LEN: usize = 27;

/// [`rfc3339_us`] appended to `out`, without formatting machinery or an
/// allocation (a log line takes two of these per call).
pub fn write_rfc3339_us(unix_us: u64, out: &mut Vec<u8>) {
    let c = civil(unix_us / MICROS_PER_SEC);
    let year = u64::try_from(c.year).unwrap_or(0);
    if year > 9999 {
        out.extend_from_slice(year.to_string().as_bytes());
    } else {
        push_digits(out, year, 4);
    }
    out.push(b'-');
    push_digits(out, c.month as u64, 2);
    out.push(b'-');
    push_digits(out, u64::from(c.day), 2);
    out.push(b'T');
    push_digits(out, u64::from(c.hour), 2);
    out.push(b':');
    push_digits(out, u64::from(c.minute), 2);
    out.push(b':');
    push_digits(out, u64::from(c.second), 2);
    out.push(b'.');
    push_digits(out, unix_us % MICROS_PER_SEC, 6);
    out.push(b'Z');
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for at in (start..start + width).rev() {
        out[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Microseconds since the Unix epoch of an RFC 3339 date-time
/// (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; fraction digits past the
/// sixth are ignored). `None` for anything else or a time before 1970.
pub fn parse_rfc3339_us(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    // The fixed part: 19 bytes up to the seconds.
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        let digits = bytes.get(from..to)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')),
        )
    };
    let year = i64::from(number(0, 4)?);
    let month = number(5, 7)?;
    let day = number(8, 10)?;
    let hour = number(11, 13)?;
    let minute = number(14, 16)?;
    // 60: a leap second, counted as the next second's start.
    let second = number(17, 19)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &bytes[19..];
    let mut micros = 0u64;
    if let Some((b'.', fraction)) = rest.split_first() {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Six digits: missing ones are zeros, later ones are dropped.
        let shown = &fraction[..digits.min(6)];
        micros = shown
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'))
            * 10u64.pow(6 - shown.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_secs: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let field = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (hours, minutes) = (field(*h1, *h2)?, field(*m1, *m2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let local_secs = days_from_civil(year, month, day) * SECS_PER_DAY as i64
        + i64::from(hour * 3600 + minute * 60 + second);
    let unix_secs = u64::try_from(local_secs - offset_secs).ok()?;
    unix_secs.checked_mul(MICROS_PER_SEC)?.checked_add(micros)
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

    #[test]
    fn rfc3339_has_microseconds_and_utc() {
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.999999Z
        assert_eq!(
            rfc3339_us(1_709_251_199_999_999),
            "2024-02-29T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339_us(784_111_777_000_042),
            "1994-11-06T08:49:37.000042Z"
        );
    }

    #[test]
    fn rfc3339_round_trips() {
        let samples = [
            0,
            1,
            999_999,
            1_709_251_199_999_999,
            1_709_251_200_000_000,
            1_796_181_667_123_456,
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999Z
        ];
        for unix_us in samples {
            let text = rfc3339_us(unix_us);
            assert_eq!(parse_rfc3339_us(&text), Some(unix_us), "{text}");
        }
        // Every day boundary over a few leap cycles.
        for day in (0..20_000u64).step_by(7) {
            let unix_us = day * SECS_PER_DAY * MICROS_PER_SEC + 12_345;
            assert_eq!(parse_rfc3339_us(&rfc3339_us(unix_us)), Some(unix_us));
        }
    }

    #[test]
    fn rfc3339_parses_offsets_and_short_fractions() {
        assert_eq!(parse_rfc3339_us("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00.5z"), Some(500_000));
        assert_eq!(
            parse_rfc3339_us("1970-01-01T00:00:01.123456789Z"),
            Some(1_123_456)
        );
        assert_eq!(parse_rfc3339_us("1969-12-31T23:00:00-01:00"), Some(0));
    }

    #[test]
    fn rfc3339_rejects_malformed_dates() {
        for text in [
            "",
            "1970-01-01",
            "1970-01-01T00:00:00",
            "1970-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1970-01-01T24:00:00Z",
            "1970-01-01T00:00:00.Z",
            "1970-01-01T00:00:00+1:00",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Zjunk",
            "197a-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_us(text), None, "{text:?}");
        }
    }
}
