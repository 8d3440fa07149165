use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Amounts and balances must be below 10^16 in magnitude. Sums of millions of such values stay far
/// inside `Decimal`'s range (about 7.9e28), so money arithmetic can never overflow.
const MAX_ABS_UNITS: i64 = 10_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("is not a decimal number")]
    NotANumber,
    #[error("has more than 2 decimals")]
    TooManyDecimals,
    #[error("is out of range (at most 10^16 in magnitude)")]
    OutOfRange,
}

/// An exact amount of money with at most two decimals (cents). Never a binary float.
///
/// JSON carries it as a number; it is parsed from the number's literal text (serde_json's
/// `arbitrary_precision`), so `0.1` is exactly one tenth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(Decimal);

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// Parses a decimal literal such as `-12.5` or `1e3`; more than two significant decimals is an
    /// error rather than being rounded away.
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let s = s.trim();
        if let Some(m) = Self::parse_cents(s) {
            return Ok(m);
        }
        if s.is_empty() || s.len() > 64 {
            return Err(MoneyError::NotANumber);
        }
        let d = if s.contains(['e', 'E']) {
            Decimal::from_scientific(s).map_err(|_| MoneyError::NotANumber)?
        } else {
            Decimal::from_str_exact(s).map_err(|_| MoneyError::NotANumber)?
        };
        Self::from_decimal(d)
    }

    /// The literal form every store and file writes, `-?digits(.d|.dd)?` with at most 16 integer
    /// digits, read straight into whole cents; `None` for any other form, which [`Money::parse`]
    /// then reads as a general decimal. Worker reads parse millions of amounts: this skips the
    /// general decimal parser and its normalization for all of them.
    fn parse_cents(s: &str) -> Option<Money> {
        let (negative, digits) = match s.as_bytes() {
            [b'-', rest @ ..] => (true, rest),
            all => (false, all),
        };
        let (whole, fraction) = match digits.iter().position(|&b| b == b'.') {
            Some(dot) => (&digits[..dot], &digits[dot + 1..]),
            None => (digits, &[][..]),
        };
        let with_dot = whole.len() != digits.len();
        if whole.is_empty() || whole.len() > 16 || fraction.len() > 2 || (with_dot && fraction.is_empty()) {
            return None;
        }
        let mut cents: i64 = 0;
        for &b in whole.iter().chain(fraction) {
            if !b.is_ascii_digit() {
                return None;
            }
            cents = cents * 10 + i64::from(b - b'0');
        }
        if fraction.len() < 2 {
            cents *= if fraction.is_empty() { 100 } else { 10 };
        }
        // 16 integer digits stay below 10^16 units, the range of `Money`.
        Some(Money::from_cents(if negative { -cents } else { cents }))
    }

    /// Wraps a decimal that must already be a whole number of cents.
    pub fn from_decimal(d: Decimal) -> Result<Self, MoneyError> {
        let normalized = d.normalize();
        if normalized.scale() > 2 {
            return Err(MoneyError::TooManyDecimals);
        }
        if normalized.abs() >= Decimal::from(MAX_ABS_UNITS) {
            return Err(MoneyError::OutOfRange);
        }
        let mut cents = normalized;
        cents.rescale(2);
        Ok(Money(cents))
    }

    /// Whole cents, convenient for generators and tests.
    pub fn from_cents(cents: i64) -> Self {
        Money(Decimal::new(cents, 2))
    }

    pub fn decimal(self) -> Decimal {
        self.0
    }

    pub fn abs(self) -> Self {
        Money(self.0.abs())
    }

    pub fn is_positive(self) -> bool {
        self.0.is_sign_positive() && !self.0.is_zero()
    }

    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Rounds an exact derived value (an average, a median, a deviation) half-even to cents,
    /// as docs/semantics.md prescribes.
    pub fn round_half_even(d: Decimal) -> Self {
        let mut r = d.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
        r.rescale(2);
        Money(r)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always two decimals: the scale is fixed at construction and kept by + and -.
        let mut d = self.0;
        d.rescale(2);
        if d.is_zero() {
            d.set_sign_positive(true);
        }
        fmt::Display::fmt(&d, f)
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, MoneyError> {
        Money::parse(s)
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        self.0 += rhs.0;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0 - rhs.0)
    }
}

impl SubAssign for Money {
    fn sub_assign(&mut self, rhs: Money) {
        self.0 -= rhs.0;
    }
}

impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(-self.0)
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Money> for Money {
    fn sum<I: Iterator<Item = &'a Money>>(iter: I) -> Money {
        iter.copied().sum()
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A JSON number with exactly the decimal digits, not a float approximation.
        let n = serde_json::Number::from_str(&self.to_string()).map_err(serde::ser::Error::custom)?;
        n.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only JSON numbers: a string "5000" is a type error, like any other wrong type.
        let n = serde_json::Number::deserialize(d)?;
        Money::parse(n.as_str()).map_err(serde::de::Error::custom)
    }
}

/// An ISO 4217 currency code (three upper-case letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) { Some(Currency([b[0], b[1], b[2]])) } else { None }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CurrencyVisitor;

        impl serde::de::Visitor<'_> for CurrencyVisitor {
            type Value = Currency;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Currency, E> {
                Currency::parse(s).ok_or_else(|| E::custom("must be an ISO 4217 code of three upper-case letters"))
            }
        }

        d.deserialize_str(CurrencyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(Money::parse("0.1").unwrap().to_string(), "0.10");
        assert_eq!(Money::parse("-12").unwrap().to_string(), "-12.00");
        assert_eq!(Money::parse("1.230").unwrap().to_string(), "1.23");
        assert_eq!(Money::parse("1e3").unwrap().to_string(), "1000.00");
        assert_eq!(Money::parse("-0").unwrap().to_string(), "0.00");
    }

    #[test]
    fn rejects_sub_cent_and_garbage() {
        assert_eq!(Money::parse("0.001"), Err(MoneyError::TooManyDecimals));
        assert_eq!(Money::parse("1.005"), Err(MoneyError::TooManyDecimals));
        assert_eq!(Money::parse("abc"), Err(MoneyError::NotANumber));
        assert_eq!(Money::parse("NaN"), Err(MoneyError::NotANumber));
        assert_eq!(Money::parse("inf"), Err(MoneyError::NotANumber));
        assert_eq!(Money::parse(""), Err(MoneyError::NotANumber));
        assert!(Money::parse("1e40").is_err());
        assert_eq!(Money::parse("10000000000000000"), Err(MoneyError::OutOfRange));
    }

    #[test]
    fn tenths_add_up_exactly() {
        let tenth = Money::parse("0.1").unwrap();
        let sum: Money = std::iter::repeat_n(tenth, 10).sum();
        assert_eq!(sum, Money::parse("1").unwrap());
    }

    #[test]
    fn json_round_trip_keeps_the_digits() {
        let m: Money = serde_json::from_str("1234567890123.45").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "1234567890123.45");
        assert!(serde_json::from_str::<Money>("\"12\"").is_err());
        assert!(serde_json::from_str::<Money>("0.125").is_err());
    }

    #[test]
    fn half_even_rounding_of_derived_values() {
        let r = |s: &str| Money::round_half_even(Decimal::from_str_exact(s).unwrap()).to_string();
        assert_eq!(r("0.005"), "0.00");
        assert_eq!(r("0.015"), "0.02");
        assert_eq!(r("0.025"), "0.02");
        assert_eq!(r("-0.035"), "-0.04");
        assert_eq!(r("2.5"), "2.50");
    }

    proptest! {
        #[test]
        fn cents_round_trip_through_text_and_json(cents in -10_000_000_000_000i64..10_000_000_000_000i64) {
            let m = Money::from_cents(cents);
            prop_assert_eq!(Money::parse(&m.to_string()).unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        }

        #[test]
        fn addition_is_exact_and_associative(a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000, c in -1_000_000_000i64..1_000_000_000) {
            let (x, y, z) = (Money::from_cents(a), Money::from_cents(b), Money::from_cents(c));
            prop_assert_eq!((x + y) + z, x + (y + z));
            prop_assert_eq!(x + y, Money::from_cents(a + b));
            prop_assert_eq!((x - y) + y, x);
        }

        /// The fast path for plain literals reads exactly what the general decimal parser reads.
        #[test]
        fn plain_literals_parse_as_general_decimals(s in "-?[0-9]{1,17}(\\.[0-9]{0,3})?") {
            let general = if s.contains(['e', 'E']) { None } else { Decimal::from_str_exact(&s).ok() };
            let expected = general.map(Money::from_decimal);
            if let Some(fast) = Money::parse_cents(&s) {
                prop_assert_eq!(Some(Ok(fast)), expected.clone());
            }
            prop_assert_eq!(Money::parse(&s).ok(), expected.and_then(Result::ok));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Money::parse(&s);
        }
    }
}
