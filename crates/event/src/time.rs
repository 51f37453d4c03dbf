//! Timestamps: epoch milliseconds, read from RFC 3339 text or numbers, written as either.
//!
//! The common shapes are read and written by hand with integer date arithmetic (no chrono on
//! the hot path); anything else goes through chrono, whose behaviour the fast paths mirror
//! exactly (the property tests below compare them).

use chrono::{DateTime, SecondsFormat, Utc};

/// Parses RFC 3339 text (`2024-05-01T12:00:00.250Z`, any offset) into epoch milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    match parse_rfc3339_fast(text.as_bytes()) {
        Some(millis) => Some(millis),
        None => parse_rfc3339_chrono(text),
    }
}

/// chrono's reading of RFC 3339 text: the reference the fast parser mirrors.
fn parse_rfc3339_chrono(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.timestamp_millis())
}

/// The two ASCII digits at `at` as a number.
#[inline]
fn two_digits(bytes: &[u8], at: usize) -> Option<i64> {
    match (bytes.get(at), bytes.get(at + 1)) {
        (Some(&a @ b'0'..=b'9'), Some(&b @ b'0'..=b'9')) => {
            Some(i64::from(a - b'0') * 10 + i64::from(b - b'0'))
        }
        _ => None,
    }
}

/// Reads `YYYY-MM-DD(T|t| )HH:MM:SS[.digits](Z|z|±HH:MM)` exactly as chrono does, or returns
/// `None` for anything it is not sure of (other shapes, out-of-range fields), for chrono to
/// decide. Seconds may be `60` (a leap second, which chrono folds into the next second);
/// fraction digits beyond milliseconds are dropped, as chrono's `timestamp_millis` does (the
/// fraction counts forward from the whole second, so times before 1970 round down too).
#[inline]
fn parse_rfc3339_fast(bytes: &[u8]) -> Option<i64> {
    if bytes.len() < 20 {
        return None;
    }
    let year = two_digits(bytes, 0)? * 100 + two_digits(bytes, 2)?;
    if bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let month = two_digits(bytes, 5)?;
    let day = two_digits(bytes, 8)?;
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let hour = two_digits(bytes, 11)?;
    let minute = two_digits(bytes, 14)?;
    let second = two_digits(bytes, 17)?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut at = 19;
    let mut millis = 0;
    if bytes[at] == b'.' {
        at += 1;
        let start = at;
        while let Some(&digit @ b'0'..=b'9') = bytes.get(at) {
            if at - start < 3 {
                millis = millis * 10 + i64::from(digit - b'0');
            }
            at += 1;
        }
        match at - start {
            0 => return None,
            1 => millis *= 100,
            2 => millis *= 10,
            _ => {}
        }
    }

    let offset = match bytes.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hours = two_digits(bytes, at + 1)?;
            let minutes = two_digits(bytes, at + 4)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds * 1000 + millis)
}

#[inline]
fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

#[inline]
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (month 1..=12, day 1..=31).
/// Howard Hinnant's `days_from_civil`.
#[inline]
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian `(year, month, day)` of a day counted from 1970-01-01. Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses epoch milliseconds given as text (`"1714564800250"`) or RFC 3339 text.
pub fn parse_text(text: &str) -> Option<i64> {
    // The common case first: RFC 3339 text of the fast parser's shape has no surrounding
    // whitespace and is not all digits, so the steps below would hand it to it unchanged.
    if let Some(millis) = parse_rfc3339_fast(text.as_bytes()) {
        return Some(millis);
    }
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return trimmed.parse().ok();
    }
    parse_rfc3339(trimmed)
}

/// Epoch milliseconds given as a JSON number that is not an integer of `i64` (it has a fraction
/// or an exponent, or is beyond `i64`): its value if that is a whole number of milliseconds in
/// `i64`'s range (`1.7e12`, `1700000000000.0`); `None` for a fraction of a millisecond
/// (`0.0125`, `1700000000000.5`) or a value out of range, which are refused rather than
/// truncated or saturated.
#[inline]
pub fn whole_millis(number: f64) -> Option<i64> {
    // -2^63 and 2^63 are exact as `f64`; every `f64` in between with no fraction is an `i64`.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (number.fract() == 0.0 && (-LIMIT..LIMIT).contains(&number)).then_some(number as i64)
}

/// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z in epoch milliseconds: the range the fast
/// formatter writes (four-digit years); chrono writes the rest.
const FOUR_DIGIT_YEARS: std::ops::Range<i64> = -62_167_219_200_000..253_402_300_800_000;

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision. RFC 3339 has four-digit
/// years only: a time before 0000-01-01 or from 10000-01-01 on is written as its epoch
/// milliseconds (`"253402300800000"`), which [`parse_text`] reads back, so that whatever the
/// decoder accepts, the encoder writes in a form it accepts again.
pub fn format_rfc3339(millis: i64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(millis, &mut out);
    // Only ASCII digits and punctuation are written.
    String::from_utf8(out).unwrap_or_else(|_| format_rfc3339_chrono(millis))
}

/// Appends epoch milliseconds as RFC 3339 UTC with millisecond precision
/// (`2024-05-01T12:00:00.250Z`) to `out`: the same text as [`format_rfc3339`], without
/// allocating.
pub fn write_rfc3339(millis: i64, out: &mut Vec<u8>) {
    if !FOUR_DIGIT_YEARS.contains(&millis) {
        out.extend_from_slice(millis.to_string().as_bytes());
        return;
    }
    let days = millis.div_euclid(86_400_000);
    let of_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let seconds = of_day / 1000;
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, value: i64, width: usize| {
        let mut value = value;
        for index in (at..at + width).rev() {
            text[index] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, seconds / 3600, 2);
    put(14, seconds / 60 % 60, 2);
    put(17, seconds % 60, 2);
    put(20, of_day % 1000, 3);
    out.extend_from_slice(&text);
}

/// chrono's formatting of four-digit years, epoch milliseconds otherwise: the reference the
/// fast formatter mirrors, and its fallback.
fn format_rfc3339_chrono(millis: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(millis) {
        Some(time) if FOUR_DIGIT_YEARS.contains(&millis) => {
            time.to_rfc3339_opts(SecondsFormat::Millis, true)
        }
        _ => millis.to_string(),
    }
}

/// The current wall-clock time in epoch milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let millis = parse_rfc3339("2024-05-01T12:00:00.250Z").expect("valid time");
        assert_eq!(millis, 1_714_564_800_250);
        assert_eq!(format_rfc3339(millis), "2024-05-01T12:00:00.250Z");
        assert_eq!(parse_rfc3339("2024-05-01T14:00:00.250+02:00"), Some(millis));
        assert_eq!(parse_text("1714564800250"), Some(millis));
        assert_eq!(parse_text("yesterday"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A number as exactly `width` digits.
    fn digits(value: u32, width: usize) -> String {
        format!("{value:0width$}")
    }

    /// Timestamps of the fast parser's shape, with every field drawn from a range a little wider
    /// than the valid one, and every separator sometimes replaced.
    fn rfc3339_like() -> impl Strategy<Value = String> {
        let date = (
            prop_oneof![0u32..10_000, 1965u32..2035],
            0u32..14,
            0u32..33,
            prop_oneof![8 => Just('-'), 1 => Just('/'), 1 => Just('0')],
        );
        let separator = prop_oneof![
            4 => Just("T"),
            1 => Just("t"),
            1 => Just(" "),
            1 => Just("_"),
            1 => Just(""),
        ];
        let time = (
            0u32..26,
            0u32..62,
            0u32..62,
            prop_oneof![Just(':'), Just('.')],
        );
        let fraction = prop_oneof![
            2 => Just(String::new()),
            4 => "\\.[0-9]{1,12}",
            1 => Just(".".to_string()),
            1 => "\\.[0-9]{1,3}[a-z]",
        ];
        let offset = prop_oneof![
            4 => Just("Z".to_string()),
            1 => Just("z".to_string()),
            1 => Just(String::new()),
            1 => Just("UTC".to_string()),
            4 => (
                prop_oneof![Just("+"), Just("-"), Just("\u{2212}"), Just("~")],
                0u32..26,
                prop_oneof![8 => Just(":"), 1 => Just(""), 1 => Just(";")],
                0u32..62,
                prop_oneof![8 => Just(""), 1 => Just(":00"), 1 => Just("0")],
            )
                .prop_map(|(sign, hours, colon, minutes, tail)| format!(
                    "{sign}{}{colon}{}{tail}",
                    digits(hours, 2),
                    digits(minutes, 2)
                )),
        ];
        (date, separator, time, fraction, offset).prop_map(
            |(
                (year, month, day, dash),
                separator,
                (hour, minute, second, colon),
                fraction,
                offset,
            )| {
                format!(
                    "{}{dash}{}-{}{separator}{}:{}{colon}{}{fraction}{offset}",
                    digits(year, 4),
                    digits(month, 2),
                    digits(day, 2),
                    digits(hour, 2),
                    digits(minute, 2),
                    digits(second, 2),
                )
            },
        )
    }

    /// `text` with a byte range replaced by `insert` (bytes, so possibly invalid UTF-8, which
    /// is then read lossily).
    fn corrupt(text: &str, at: usize, cut: usize, insert: &[u8]) -> String {
        let bytes = text.as_bytes();
        let at = at % (bytes.len() + 1);
        let end = (at + cut).min(bytes.len());
        let mut out = bytes[..at].to_vec();
        out.extend_from_slice(insert);
        out.extend_from_slice(&bytes[end..]);
        String::from_utf8_lossy(&out).into_owned()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn fast_parse_equals_chrono(text in rfc3339_like()) {
            prop_assert_eq!(parse_rfc3339(&text), parse_rfc3339_chrono(&text), "{:?}", text);
            if let Some(millis) = parse_rfc3339_fast(text.as_bytes()) {
                prop_assert_eq!(Some(millis), parse_rfc3339_chrono(&text));
            }
        }

        #[test]
        fn fast_parse_equals_chrono_on_corrupted_text(
            text in rfc3339_like(),
            at in 0usize..40,
            cut in 0usize..3,
            insert in proptest::collection::vec(prop_oneof![
                4 => proptest::char::range('0', '9').prop_map(|c| c as u8),
                2 => Just(b':'), 2 => Just(b'-'), 2 => Just(b'.'), 1 => Just(b'+'),
                1 => Just(b'Z'), 1 => Just(b' '), 1 => any::<u8>(),
            ], 0..3),
        ) {
            let text = corrupt(&text, at, cut, &insert);
            prop_assert_eq!(parse_rfc3339(&text), parse_rfc3339_chrono(&text), "{:?}", text);
            prop_assert_eq!(parse_text(&text), {
                let trimmed = text.trim();
                if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                    trimmed.parse().ok()
                } else {
                    parse_rfc3339_chrono(trimmed)
                }
            });
        }

        #[test]
        fn fast_parse_equals_chrono_on_any_text(text in "\\PC{0,40}") {
            prop_assert_eq!(parse_rfc3339(&text), parse_rfc3339_chrono(&text), "{:?}", text);
        }

        #[test]
        fn fast_format_equals_chrono(millis in prop_oneof![
            any::<i64>(),
            FOUR_DIGIT_YEARS.start - 100_000_000_000..FOUR_DIGIT_YEARS.end + 100_000_000_000,
            -100_000_000_000i64..4_000_000_000_000,
            (FOUR_DIGIT_YEARS.start - 5..FOUR_DIGIT_YEARS.start + 5),
            (FOUR_DIGIT_YEARS.end - 5..FOUR_DIGIT_YEARS.end + 5),
        ]) {
            let expected = format_rfc3339_chrono(millis);
            prop_assert_eq!(&format_rfc3339(millis), &expected);
            let mut out = b"prefix".to_vec();
            write_rfc3339(millis, &mut out);
            prop_assert_eq!(&out[6..], expected.as_bytes());
        }

        #[test]
        fn formatted_times_parse_back(millis in FOUR_DIGIT_YEARS) {
            let text = format_rfc3339(millis);
            prop_assert_eq!(parse_rfc3339_fast(text.as_bytes()), Some(millis));
        }

        /// Every time, four-digit year or not, is written in a form that is read back
        /// (a fuzz finding: year 26370 was written as `+26370-05-01T…`, which RFC 3339 and
        /// the decoder refuse).
        #[test]
        fn every_formatted_time_is_read_back(millis in prop_oneof![
            any::<i64>(),
            (FOUR_DIGIT_YEARS.start - 5..FOUR_DIGIT_YEARS.start + 5),
            (FOUR_DIGIT_YEARS.end - 5..FOUR_DIGIT_YEARS.end + 5),
        ]) {
            prop_assert_eq!(parse_text(&format_rfc3339(millis)), Some(millis));
        }
    }

    #[test]
    fn fast_paths_agree_with_chrono_on_edge_cases() {
        let cases = [
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:00:00+23:59",
            "0000-01-01T00:00:00-23:59",
            "9999-12-31T23:59:59.999999999Z",
            "9999-12-31T23:59:60.999-23:59",
            "1969-12-31T23:59:59.9999Z",
            "1969-12-31T23:59:60.5Z",
            "2016-12-31T23:59:60Z",
            "2015-06-30T12:34:60.123+05:30",
            "2024-02-29T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "2024-05-01T12:00:00.250Z",
            "2024-05-01t12:00:00.250z",
            "2024-05-01 12:00:00.250+00:00",
            "2024-05-01T12:00:00.250-00:00",
            "2024-05-01T12:00:00.250+24:00",
            "2024-05-01T12:00:00.250+23:60",
            "2024-05-01T12:00:00.250\u{2212}02:00",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00.1234567890123456789012Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00+02",
            "+2024-05-01T12:00:00Z",
            "2024-5-01T12:00:00Z",
            "２０２４-05-01T12:00:00Z",
        ];
        for text in cases {
            assert_eq!(parse_rfc3339(text), parse_rfc3339_chrono(text), "{text:?}");
            // Everything chrono accepts here is the fast parser's, but the Unicode minus sign.
            if parse_rfc3339_chrono(text).is_some() && !text.contains('\u{2212}') {
                assert!(parse_rfc3339_fast(text.as_bytes()).is_some(), "{text:?}");
            }
        }
        for millis in [
            i64::MIN,
            i64::MAX,
            0,
            -1,
            1,
            FOUR_DIGIT_YEARS.start,
            FOUR_DIGIT_YEARS.start - 1,
            FOUR_DIGIT_YEARS.end,
            FOUR_DIGIT_YEARS.end - 1,
            8_210_266_876_799_999,
            8_210_266_876_800_000,
            -8_334_601_228_800_000,
            -8_334_601_228_800_001,
        ] {
            assert_eq!(
                format_rfc3339(millis),
                format_rfc3339_chrono(millis),
                "{millis}"
            );
        }
    }
}
