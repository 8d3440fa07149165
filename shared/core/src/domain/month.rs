use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, 1).map(|_| Month { year, month })
    }

    pub fn of(date: NaiveDate) -> Self {
        Month { year: date.year(), month: date.month() }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("a Month is always a valid month")
    }

    pub fn last_day(self) -> NaiveDate {
        self.next().first_day().pred_opt().expect("a month has a last day")
    }

    pub fn next(self) -> Month {
        Month::of(self.first_day() + Months::new(1))
    }

    pub fn prev(self) -> Month {
        Month::of(self.first_day() - Months::new(1))
    }

    pub fn contains(self, date: NaiveDate) -> bool {
        Month::of(date) == self
    }

    /// The window of N complete months (docs/semantics.md): the `n` calendar months before the month of
    /// `as_of`, oldest first.
    pub fn window_before(as_of: NaiveDate, n: u32) -> Vec<Month> {
        let current = Month::of(as_of);
        let mut months: Vec<Month> =
            std::iter::successors(Some(current.prev()), |m| Some(m.prev())).take(n as usize).collect();
        months.reverse();
        months
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ERR: &str = "must be a month in the form YYYY-MM";
        let (y, m) = s.split_once('-').ok_or(ERR)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(ERR);
        }
        let year: i32 = y.parse().map_err(|_| ERR)?;
        let month: u32 = m.parse().map_err(|_| ERR)?;
        Month::new(year, month).ok_or(ERR)
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn window_is_the_complete_months_before_as_of_oldest_first() {
        let w = Month::window_before(d("2024-03-15"), 3);
        let names: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["2023-12", "2024-01", "2024-02"]);
        assert_eq!(w[2].last_day(), d("2024-02-29"));
    }

    #[test]
    fn window_on_the_first_day_of_a_month_excludes_that_month() {
        let w = Month::window_before(d("2024-01-01"), 1);
        assert_eq!(w[0].to_string(), "2023-12");
        assert_eq!(w[0].last_day(), d("2023-12-31"));
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("2024-02".parse::<Month>().unwrap(), Month::new(2024, 2).unwrap());
        assert!("2024-13".parse::<Month>().is_err());
        assert!("2024-2".parse::<Month>().is_err());
        assert!("24-02".parse::<Month>().is_err());
    }
}
