use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest identifier accepted anywhere (mandator, user, account, transaction).
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters")]
    TooLong,
    #[error("may contain only letters, digits and . _ - : @ + = (found {0:?})")]
    InvalidChar(char),
    #[error("is not a valid job id")]
    InvalidJobId,
}

/// Identifiers are restricted to characters that sort after `#`, the separator of storage keys,
/// and that are safe in S3 keys. That keeps a user's items contiguous in a shard's sort order and
/// makes the order of the stored keys the byte order of the ids (docs/semantics.md sorts by byte order).
fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    // Every allowed character is ASCII, so the first byte that is not allowed starts a character.
    match s
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@' | b'+' | b'=')))
    {
        Some(at) => Err(IdError::InvalidChar(s[at..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER))),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(CompactString);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_id(s)?;
                Ok(Self(CompactString::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check_id(&s)?;
                Ok(Self(CompactString::from(s)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::try_from(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// The tenant: a bank or fintech client. Always taken from the verified token, never from input.
    MandatorId
);
string_id!(
    /// A user of a mandator.
    UserId
);
string_id!(
    /// An account of a user.
    AccountId
);
string_id!(
    /// A transaction of an account, unique within the account.
    TransactionId
);

/// A segment's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SegmentId(uuid::Uuid);

impl SegmentId {
    pub fn new() -> Self {
        SegmentId(uuid::Uuid::now_v7())
    }

    /// Any UUID text; an unknown id is simply not found.
    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::parse_str(s).ok().map(SegmentId)
    }
}

impl Default for SegmentId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(uuid::Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        // Only the canonical hyphenated lower-case form is accepted, so one job has one spelling.
        let id = uuid::Uuid::try_parse(s).map_err(|_| IdError::InvalidJobId)?;
        if id.hyphenated().to_string() != s {
            return Err(IdError::InvalidJobId);
        }
        Ok(Self(id))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for JobId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_allowed_alphabet() {
        assert!(UserId::parse("user-0001_a.b:c@d+e=f").is_ok());
    }

    #[test]
    fn ids_reject_separators_whitespace_and_empty() {
        assert_eq!(UserId::parse(""), Err(IdError::Empty));
        assert_eq!(UserId::parse("a#b"), Err(IdError::InvalidChar('#')));
        assert_eq!(UserId::parse("a/b"), Err(IdError::InvalidChar('/')));
        assert_eq!(UserId::parse("a b"), Err(IdError::InvalidChar(' ')));
        assert_eq!(UserId::parse(&"x".repeat(129)), Err(IdError::TooLong));
    }

    #[test]
    fn id_order_is_byte_order_even_with_the_storage_separator_appended() {
        // Storage keys append '#'; every allowed character sorts after it.
        let ids = ["a", "a-1", "a.b", "a0", "aB", "ab", "b"];
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            assert!(format!("{}#", w[0]) < format!("{}#", w[1]), "{w:?}");
        }
    }

    #[test]
    fn job_ids_round_trip_and_reject_other_spellings() {
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()), Ok(id));
        assert!(JobId::parse(&id.to_string().to_uppercase()).is_err());
        assert!(JobId::parse("not-a-job").is_err());
    }
}
