//! The months of the generated history, and the random draws the generator makes.

use chrono::{Datelike, NaiveDate, TimeDelta, Weekday};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use segments_core::domain::Month;

/// Every draw goes through these helpers, which take integer ranges only: floating-point
/// arithmetic on the draws could round differently across platforms, integer draws from ChaCha
/// cannot. Empty ranges yield their lower bound instead of panicking, so tiny histories work.
pub(super) struct Draw(pub ChaCha8Rng);

impl Draw {
    /// An integer in `lo..=hi`.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo { lo } else { self.0.random_range(lo..=hi) }
    }

    /// An index in `lo..=hi`.
    pub fn index(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo { lo } else { lo + self.0.random_range(0..=(hi - lo) as u64) as usize }
    }

    /// An index below `len` (0 for an empty range).
    pub fn below(&mut self, len: usize) -> usize {
        self.index(0, len.saturating_sub(1))
    }

    /// True with a probability of `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.0.random_range(0..1000u32) < per_mille
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index into `weights`, each chosen in proportion to its weight.
    pub fn weighted(&mut self, weights: impl Iterator<Item = u32> + Clone) -> usize {
        let total: u64 = weights.clone().map(u64::from).sum();
        let mut roll = self.0.random_range(0..total.max(1));
        for (i, w) in weights.enumerate() {
            if roll < u64::from(w) {
                return i;
            }
            roll -= u64::from(w);
        }
        0
    }

    /// `amount` scaled by `percent`, in whole cents.
    pub fn percent_of(amount: i64, percent: i64) -> i64 {
        amount * percent / 100
    }
}

/// The calendar months of the history, oldest first, ending with the (partial) month of the end
/// date.
#[derive(Debug)]
pub(super) struct Timeline {
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub months: Vec<Month>,
}

impl Timeline {
    pub fn new(end: NaiveDate, months: u32) -> Self {
        let mut month = Month::of(end);
        let mut all = vec![month];
        for _ in 1..months.max(1) {
            month = month.prev();
            all.push(month);
        }
        all.reverse();
        Timeline { start: all[0].first_day(), end, months: all }
    }

    pub fn len(&self) -> usize {
        self.months.len()
    }

    /// The number of complete months (all but the month of the end date, unless it ends there).
    pub fn complete(&self) -> usize {
        if self.end == self.months[self.len() - 1].last_day() { self.len() } else { self.len() - 1 }
    }

    /// Day `day` of month `k`, or the month's last day when it is shorter.
    pub fn day(&self, k: usize, day: u32) -> NaiveDate {
        let m = self.months[k];
        NaiveDate::from_ymd_opt(m.year(), m.month(), day).unwrap_or_else(|| m.last_day())
    }

    /// The last day of month `k` within the history.
    pub fn last_day(&self, k: usize) -> NaiveDate {
        self.months[k].last_day().min(self.end)
    }

    /// The number of days of month `k` within the history.
    pub fn days(&self, k: usize) -> u32 {
        self.last_day(k).day()
    }

    /// A random day of month `k` within the history.
    pub fn any_day(&self, k: usize, draw: &mut Draw) -> NaiveDate {
        self.day(k, draw.int(1, i64::from(self.days(k))) as u32)
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.start <= d && d <= self.end
    }

    /// The index of the month of `d`, if it is in the history.
    pub fn month_of(&self, d: NaiveDate) -> Option<usize> {
        let first = self.months[0];
        let k = (d.year() - first.year()) as i64 * 12 + i64::from(d.month()) - i64::from(first.month());
        usize::try_from(k).ok().filter(|&k| k < self.len())
    }
}

pub(super) fn add_days(d: NaiveDate, days: i64) -> NaiveDate {
    d.checked_add_signed(TimeDelta::days(days)).unwrap_or(d)
}

/// Standing orders and direct debits due on a weekend are booked on the next Monday, which
/// moves some of them into the next month.
pub(super) fn next_banking_day(d: NaiveDate) -> NaiveDate {
    match d.weekday() {
        Weekday::Sat => add_days(d, 2),
        Weekday::Sun => add_days(d, 1),
        _ => d,
    }
}

/// Salaries due on a weekend are paid on the Friday before, which moves some into the previous
/// month.
pub(super) fn previous_banking_day(d: NaiveDate) -> NaiveDate {
    match d.weekday() {
        Weekday::Sat => add_days(d, -1),
        Weekday::Sun => add_days(d, -2),
        _ => d,
    }
}
