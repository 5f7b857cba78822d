//! Text that log lines are made of: RFC 3339 timestamps and JSON strings, written straight
//! into a formatter (no intermediate `String`, no date or JSON crate).

use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC time in RFC 3339 with milliseconds: `2026-11-29T20:46:09.054Z`. The milliseconds are
/// truncated, not rounded, so a time never shows a later second than it is in.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis: i128 = match self.0.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_millis() as i128,
            // Before 1970 (a clock set wrong): count back, and floor below.
            Err(before) => -(before.duration().as_nanos().div_ceil(1_000_000) as i128),
        };
        let secs = millis.div_euclid(1000) as i64;
        let millis = millis.rem_euclid(1000);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let of_day = secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60
        )
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (day 0); negative days are
/// before it. Howard Hinnant's `civil_from_days`: shift the year to start on March 1 so the
/// leap day is the year's last, then split into 400-year eras (146 097 days each), years of
/// the era, and days of the year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // 0..=146_096
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // 0..=365
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March ... 11 = February
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = (if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 }) as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A JSON string (quoted and escaped, RFC 8259 §7) of whatever `T` displays as.
///
/// `"` and `\` are escaped, and so is every control character (C0 and DEL, as `\n`, `\t`, ...
/// or `\u00XX`) and U+2028/U+2029 (valid JSON, but line breaks to JavaScript and some log
/// viewers), so a line of JSON stays one line whatever a user name or a domain contains.
/// Other characters are written as they are (UTF-8); text that was not UTF-8 has been
/// converted lossily before it got here (`U+FFFD`).
pub struct JsonString<T>(pub T);

impl<T: fmt::Display> fmt::Display for JsonString<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        write!(Escaper(f), "{}", self.0)?;
        f.write_char('"')
    }
}

/// Escapes what is written through it and passes it on.
struct Escaper<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for Escaper<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Copy runs of plain characters at once; escape the rest one by one.
        let mut plain = 0;
        for (at, c) in s.char_indices() {
            let escaped: Option<&str> = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                '\u{8}' => Some("\\b"),
                '\u{c}' => Some("\\f"),
                '\0'..='\u{1f}' | '\u{7f}' | '\u{2028}' | '\u{2029}' => None,
                _ => continue,
            };
            self.0.write_str(&s[plain..at])?;
            match escaped {
                Some(text) => self.0.write_str(text)?,
                None => write!(self.0, "\\u{:04x}", c as u32)?,
            }
            plain = at + c.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

/// A JSON value for something that may be absent: its string, or `null`.
pub struct JsonOption<T>(pub Option<T>);

impl<T: fmt::Display> fmt::Display for JsonOption<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => JsonString(value).fmt(f),
            None => f.write_str("null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at_millis(millis: i64) -> String {
        let time = if millis >= 0 {
            UNIX_EPOCH + Duration::from_millis(millis as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(millis.unsigned_abs())
        };
        Rfc3339(time).to_string()
    }

    #[test]
    fn rfc3339_known_instants() {
        // Milliseconds since the epoch, as Python's datetime computes them.
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_985_169_054, "2026-11-29T20:46:09.054Z"),
            // 2000 is a leap year (divisible by 400).
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (951_868_800_000, "2000-03-01T00:00:00.000Z"),
            (1_709_210_096_789, "2024-02-29T12:34:56.789Z"),
            // 2100 is not (divisible by 100, not by 400): February has 28 days.
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
            (1_483_228_799_000, "2016-12-31T23:59:59.000Z"),
            (1_483_228_800_000, "2017-01-01T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            // Before the epoch: floored, so one millisecond before is the last of 1969.
            (-1, "1969-12-31T23:59:59.999Z"),
            (-1000, "1969-12-31T23:59:59.000Z"),
            // 1900 is not a leap year either.
            (-2_203_891_200_000, "1900-03-01T00:00:00.000Z"),
            (-2_203_891_200_001, "1900-02-28T23:59:59.999Z"),
        ];
        for &(millis, expected) in cases {
            assert_eq!(at_millis(millis), expected, "{millis} ms");
        }
    }

    #[test]
    fn rfc3339_truncates_to_milliseconds() {
        let time = UNIX_EPOCH + Duration::from_nanos(1_999_999_999);
        assert_eq!(Rfc3339(time).to_string(), "1970-01-01T00:00:01.999Z");
        let before = UNIX_EPOCH - Duration::from_nanos(1);
        assert_eq!(Rfc3339(before).to_string(), "1969-12-31T23:59:59.999Z");
    }

    /// Every day from 1600 to 2400 against a calendar counted the slow way.
    #[test]
    fn civil_from_days_matches_a_naive_calendar() {
        fn leap(year: i64) -> bool {
            year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        }
        fn month_days(year: i64, month: u32) -> u32 {
            match month {
                2 if leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            }
        }
        // Days from 1600-01-01 to 1970-01-01.
        let mut day: i64 = -(1600..1970).map(|y| if leap(y) { 366 } else { 365 }).sum::<i64>();
        for year in 1600..2400 {
            for month in 1..=12 {
                for date in 1..=month_days(year, month) {
                    assert_eq!(civil_from_days(day), (year, month, date), "day {day}");
                    day += 1;
                }
            }
        }
    }

    #[test]
    fn json_strings_escape_what_must_be() {
        let cases: &[(&str, &str)] = &[
            ("alice", r#""alice""#),
            ("", r#""""#),
            (r#"say "hi""#, r#""say \"hi\"""#),
            (r"C:\users\bob", r#""C:\\users\\bob""#),
            ("tab\there\nnew\rcr", r#""tab\there\nnew\rcr""#),
            ("\u{0}\u{1}\u{8}\u{c}\u{1b}[31m\u{1f}\u{7f}", r#""\u0000\u0001\b\f\u001b[31m\u001f\u007f""#),
            ("müller ünïcødé 用户 😀", "\"müller ünïcødé 用户 😀\""),
            ("\u{2028}line\u{2029}", r#""\u2028line\u2029""#),
            // What a user name that was not UTF-8 became (lossily converted).
            (&String::from_utf8_lossy(b"bad\xffbyte"), "\"bad\u{fffd}byte\""),
            (r#"\""#, r#""\\\"""#),
            ("}\"injected\":1,{", r#""}\"injected\":1,{""#),
        ];
        for &(raw, expected) in cases {
            assert_eq!(JsonString(raw).to_string(), expected, "{raw:?}");
        }
    }

    #[test]
    fn json_escapes_displayed_values_and_null() {
        let addr: std::net::SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(JsonString(addr).to_string(), r#""[::1]:80""#);
        assert_eq!(JsonOption(Some("a\"b")).to_string(), r#""a\"b""#);
        assert_eq!(JsonOption::<&str>(None).to_string(), "null");
    }
}
