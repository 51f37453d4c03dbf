//! Timestamps: epoch milliseconds, read from RFC 3339 text or numbers, written as either.

use chrono::{DateTime, SecondsFormat, Utc};

/// Parses RFC 3339 text (`2024-05-01T12:00:00.250Z`, any offset) into epoch milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.timestamp_millis())
}

/// Parses epoch milliseconds given as text (`"1714564800250"`) or RFC 3339 text.
pub fn parse_text(text: &str) -> Option<i64> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return trimmed.parse().ok();
    }
    parse_rfc3339(trimmed)
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339(millis: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(millis) {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => millis.to_string(),
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
