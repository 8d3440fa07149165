use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! name_enum {
    ($(#[$doc:meta])* $name:ident, $err:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The valid names, for error messages.
            pub fn names() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        #[doc = concat!("An unknown ", $what, ".")]
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("unknown {} {:?}; valid: {}", $what, .0, $name::names())]
        pub struct $err(pub String);

        impl FromStr for $name {
            type Err = $err;
            fn from_str(s: &str) -> Result<Self, $err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($err(s.chars().take(64).collect())),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

name_enum!(
    /// The five financial segment types, by their path names (docs/api.md).
    SegmentType, UnknownSegmentType, "segment type", {
        HighBalance => "highBalance",
        LowBalance => "lowBalance",
        IncomeSpendingSummary => "incomeSpendingSummary",
        InsuranceSpending => "insuranceSpending",
        FinancialBreakdown => "financialBreakdown",
    }
);

name_enum!(
    /// Account types of the account data (docs/api.md, docs/data.md).
    AccountType, UnknownAccountType, "account type", {
        Checking => "checking",
        Savings => "savings",
        CreditCard => "creditCard",
        Security => "security",
        Loan => "loan",
        Pocket => "pocket",
        Membership => "membership",
        Bausparen => "bausparen",
    }
);

impl SegmentType {
    /// The OAuth scope that allows creating and reading jobs of this type (docs/security.md).
    pub fn scope(self) -> String {
        format!("segments/{}", self.as_str())
    }

    /// `HIGH_BALANCE` for `highBalance`: the stem of per-type environment variables.
    pub fn env_stem(self) -> String {
        let mut out = String::new();
        for c in self.as_str().chars() {
            if c.is_ascii_uppercase() {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }

    /// `high-balance` for `highBalance`: the stem of per-type resource and function names.
    pub fn kebab(self) -> String {
        self.env_stem().to_ascii_lowercase().replace('_', "-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in SegmentType::ALL {
            assert_eq!(t.as_str().parse::<SegmentType>().unwrap(), *t);
        }
        for t in AccountType::ALL {
            assert_eq!(t.as_str().parse::<AccountType>().unwrap(), *t);
        }
    }

    #[test]
    fn unknown_type_names_the_valid_ones() {
        let err = "lowbalance".parse::<SegmentType>().unwrap_err().to_string();
        assert!(err.contains("highBalance, lowBalance, incomeSpendingSummary"), "{err}");
    }

    #[test]
    fn derived_names() {
        assert_eq!(SegmentType::IncomeSpendingSummary.env_stem(), "INCOME_SPENDING_SUMMARY");
        assert_eq!(SegmentType::HighBalance.kebab(), "high-balance");
        assert_eq!(SegmentType::LowBalance.scope(), "segments/lowBalance");
    }
}
