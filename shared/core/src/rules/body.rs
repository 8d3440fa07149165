//! A small reader over a JSON request body that names the offending field in every error.
//!
//! Requests are read field by field from a JSON object instead of through a derived
//! `Deserialize`: serde's messages name a line and column, not the field, and docs/api.md asks for
//! a problem that names the field for every wrong type, range or unknown field.

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::domain::{Currency, Money, MoneyError};

/// A request body that is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedBody(pub String);

/// A field that is missing, of the wrong type, out of range or not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Malformed(#[from] MalformedBody),
    #[error(transparent)]
    Field(#[from] FieldError),
}

pub struct Fields {
    prefix: String,
    map: Map<String, Value>,
    /// Fields named as JSON pointers (`/accounts/0/amount`) instead of dotted paths.
    pointer: bool,
}

/// What a JSON value is, for messages: "must be a string, not {kind}".
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Fields {
    /// Parses a body; an empty body is an empty object (every field at its default).
    pub fn parse(body: &[u8]) -> Result<Fields, MalformedBody> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields { prefix: String::new(), map: Map::new(), pointer: false });
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| MalformedBody(format!("request body is not valid JSON: {e}")))?;
        match value {
            Value::Object(map) => Ok(Fields { prefix: String::new(), map, pointer: false }),
            other => Err(MalformedBody(format!("request body must be a JSON object, not {}", kind(&other)))),
        }
    }

    /// Reads a nested object, naming its fields `prefix.name`.
    pub fn nested(prefix: String, map: Map<String, Value>) -> Fields {
        Fields { prefix, map, pointer: false }
    }

    /// The fields of a body read by [`Fields::parse`], named as JSON pointers (`/accounts`).
    pub fn with_pointer_names(self) -> Fields {
        Fields { prefix: String::new(), map: self.map, pointer: true }
    }

    /// Reads an object found at the JSON pointer `pointer` (`""` for the body itself), naming its
    /// fields `{pointer}/name`: the form of bodies whose fields sit deep in arrays.
    pub fn at_pointer(pointer: String, map: Map<String, Value>) -> Fields {
        Fields { prefix: pointer, map, pointer: true }
    }

    pub fn name(&self, field: &str) -> String {
        if self.pointer {
            format!("{}/{}", self.prefix, pointer_token(field))
        } else if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    fn err(&self, field: &str, message: impl Into<String>) -> FieldError {
        FieldError::new(self.name(field), message)
    }

    /// Takes a field out; `null` counts as absent.
    pub fn take(&mut self, field: &str) -> Option<Value> {
        match self.map.remove(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn money(&mut self, field: &str) -> Result<Option<Money>, FieldError> {
        let Some(v) = self.take(field) else { return Ok(None) };
        match &v {
            Value::Number(n) => Money::parse(&n.to_string()).map(Some).map_err(|e| match e {
                MoneyError::TooManyDecimals => self.err(field, "must have at most 2 decimals"),
                MoneyError::OutOfRange => self.err(field, "is out of range"),
                MoneyError::NotANumber => self.err(field, "must be a finite decimal number"),
            }),
            other => Err(self.err(field, format!("must be a decimal number, not {}", kind(other)))),
        }
    }

    pub fn required_money(&mut self, field: &str) -> Result<Money, FieldError> {
        self.money(field)?.ok_or_else(|| self.err(field, "is required"))
    }

    pub fn integer(&mut self, field: &str, min: u32, max: u32) -> Result<Option<u32>, FieldError> {
        let Some(v) = self.take(field) else { return Ok(None) };
        let n = match &v {
            Value::Number(n) => n.as_u64().or_else(|| integral_value(&n.to_string())),
            other => return Err(self.err(field, format!("must be an integer, not {}", kind(other)))),
        };
        match n {
            Some(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Ok(Some(n as u32)),
            _ => Err(self.err(field, format!("must be an integer from {min} to {max}"))),
        }
    }

    pub fn required_integer(&mut self, field: &str, min: u32, max: u32) -> Result<u32, FieldError> {
        self.integer(field, min, max)?.ok_or_else(|| self.err(field, "is required"))
    }

    pub fn string(&mut self, field: &str) -> Result<Option<String>, FieldError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(field, format!("must be a string, not {}", kind(&other)))),
        }
    }

    /// A string parsed by `FromStr`, with the parser's message.
    pub fn parsed<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, FieldError> {
        match self.string(field)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).map_err(|e| self.err(field, e.to_string())),
        }
    }

    pub fn date(&mut self, field: &str) -> Result<Option<NaiveDate>, FieldError> {
        self.parsed(field, parse_date)
    }

    pub fn required_date(&mut self, field: &str) -> Result<NaiveDate, FieldError> {
        self.date(field)?.ok_or_else(|| self.err(field, "is required"))
    }

    pub fn currency(&mut self, field: &str) -> Result<Option<Currency>, FieldError> {
        self.parsed(field, |s| Currency::parse(s).ok_or("must be an ISO 4217 code of three upper-case letters"))
    }

    pub fn array(&mut self, field: &str) -> Result<Option<Vec<Value>>, FieldError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.err(field, format!("must be an array, not {}", kind(&other)))),
        }
    }

    /// Refuses whatever field was not read: a typo must not silently fall back to a default.
    pub fn finish(self) -> Result<(), FieldError> {
        let mut unknown: Vec<&String> = self.map.keys().collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(k) => Err(self.err(k, "is not a known field")),
        }
    }
}

/// The value of a JSON number literal that is a whole number however it is written (`22.0`,
/// `2.2e1`): JSON Schema, and so the OpenAPI document and the clients generated from it, counts
/// those as integers. `None` for a fraction, a negative number or one beyond `u64`.
fn integral_value(literal: &str) -> Option<u64> {
    if literal.len() > 64 {
        return None;
    }
    let value = if literal.contains(['e', 'E']) {
        rust_decimal::Decimal::from_scientific(literal).ok()?
    } else {
        rust_decimal::Decimal::from_str_exact(literal).ok()?
    };
    if value.fract().is_zero() { u64::try_from(value.trunc()).ok() } else { None }
}

/// A member name as one token of a JSON pointer (RFC 6901: `~` and `/` escaped).
pub fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// An ISO date `YYYY-MM-DD`, strictly.
pub fn parse_date(s: &str) -> Result<NaiveDate, &'static str> {
    const ERR: &str = "must be a date in the form YYYY-MM-DD";
    if s.len() != 10 {
        return Err(ERR);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| ERR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(body: &str) -> Result<Option<u32>, FieldError> {
        Fields::parse(body.as_bytes()).unwrap().integer("durationInMonth", 1, 24)
    }

    #[test]
    fn an_integer_written_with_a_zero_fraction_or_an_exponent_is_that_integer() {
        // Given numbers that JSON Schema counts as integers, however they are written
        for body in [r#"{"durationInMonth":22}"#, r#"{"durationInMonth":22.0}"#, r#"{"durationInMonth":22.000}"#] {
            // Then they read as 22
            assert_eq!(duration(body), Ok(Some(22)), "{body}");
        }
        assert_eq!(duration(r#"{"durationInMonth":2.2e1}"#), Ok(Some(22)));
        assert_eq!(duration(r#"{"durationInMonth":1E0}"#), Ok(Some(1)));
    }

    #[test]
    fn a_fraction_or_an_out_of_range_whole_number_is_refused_naming_the_field() {
        for body in [
            r#"{"durationInMonth":22.5}"#,
            r#"{"durationInMonth":2.25e1}"#,
            r#"{"durationInMonth":25.0}"#,
            r#"{"durationInMonth":0.0}"#,
            r#"{"durationInMonth":-1.0}"#,
            r#"{"durationInMonth":1e400}"#,
            r#"{"durationInMonth":18446744073709551616.0}"#,
        ] {
            let err = duration(body).expect_err(body);
            assert_eq!(err.field, "durationInMonth", "{body}");
            assert_eq!(err.message, "must be an integer from 1 to 24", "{body}");
        }
        assert_eq!(duration(r#"{"durationInMonth":"12"}"#).unwrap_err().message, "must be an integer, not a string");
        assert_eq!(duration(r#"{"durationInMonth":null}"#), Ok(None));
    }
}
