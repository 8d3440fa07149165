//! Reading the `YYYY-MM-DD` dates of files and stores. Every date is written in that form, and
//! importers and workers read one per transaction: chrono's format-driven parser costs more than
//! the rest of the value, so the exact form is read directly and anything else falls back to
//! chrono, which decides (and words the error) as before.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Deserializer;
use serde::de::{Error, Visitor};

/// An instant as the API writes it: RFC 3339 in UTC with milliseconds (`2026-11-22T10:00:00.000Z`).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `YYYY-MM-DD` with exactly four, two and two digits, if it is a valid date.
pub fn iso_date(b: &[u8]) -> Option<NaiveDate> {
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(i32::try_from(digits(0..4)?).ok()?, digits(5..7)?, digits(8..10)?)
}

/// A `NaiveDate` field read as chrono's `Deserialize` reads it (a string in `FromStr` form),
/// the common form without the format parser. For `#[serde(deserialize_with = ...)]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    struct DateVisitor;

    impl Visitor<'_> for DateVisitor {
        type Value = NaiveDate;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a formatted date string")
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<NaiveDate, E> {
            match iso_date(s.as_bytes()) {
                Some(date) => Ok(date),
                None => s.parse().map_err(E::custom),
            }
        }
    }

    d.deserialize_str(DateVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Direct(#[serde(deserialize_with = "deserialize")] NaiveDate);

    #[test]
    fn given_dates_when_read_directly_then_they_agree_with_chrono_and_refuse_the_invalid() {
        let texts = ["2024-02-29", "1999-12-31", "0001-01-01", "2026-11-20", "+2024-01-01", "12024-01-01"];
        let bad =
            ["2023-02-29", "2024-13-01", "2024-00-10", "2024-01-32", "2024-1-01", "20240101", "2024/01/01", "", "x"];
        for text in texts.iter().chain(&bad) {
            let chrono: Result<NaiveDate, _> = serde_json::from_value(serde_json::json!(text));
            let direct: Result<Direct, _> = serde_json::from_value(serde_json::json!(text));
            match (chrono, direct) {
                (Ok(c), Ok(Direct(d))) => assert_eq!(c, d, "{text}"),
                (Err(c), Err(d)) => assert_eq!(c.to_string(), d.to_string(), "{text}"),
                (c, d) => panic!("{text}: chrono {c:?}, direct {d:?}"),
            }
        }
        for text in &texts[..4] {
            assert_eq!(iso_date(text.as_bytes()), NaiveDate::parse_from_str(text, "%Y-%m-%d").ok());
        }
        for text in bad {
            assert_eq!(iso_date(text.as_bytes()), None, "{text}");
        }
        let not_a_string: Result<Direct, _> = serde_json::from_value(serde_json::json!(20240101));
        assert!(not_a_string.is_err());
    }
}
