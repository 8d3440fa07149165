//! One user's accounts and transactions, in cents and before ids are given.
//!
//! A user's checking account is driven by a monthly budget: income, then fixed costs (rent,
//! contracts, insurance, standing orders to the user's other accounts), then day-to-day spending
//! sized so that what is left matches the user's saving habit. The starting balance is chosen last,
//! from the finished history, so that a persona's balance profile holds: steady users never go
//! below a floor, affluent ones stay above several thousand, low-balance ones dip below a low mark
//! every single month, overdraft-prone ones are pushed below zero by a one-off expense and
//! recover within weeks.

use std::borrow::Cow;

use chrono::{Datelike, NaiveDate};

use super::catalog::{
    CONTRACTS, EMPLOYERS, FREQUENCY_WEIGHTS, INSURANCE_KINDS, INSURERS, InsuranceKind, LANDLORDS, MERCHANTS, Merchant,
    REFUNDS, RENT_LABELS, SALARY_LABELS, SHOCKS, SINKS,
};
use super::timeline::{Draw, Timeline, add_days, next_banking_day, previous_banking_day};
use segments_core::domain::{AccountType, Currency};

/// A transaction before it gets its id.
pub(super) struct Tx {
    pub date: NaiveDate,
    pub cents: i64,
    pub counterpart: Cow<'static, str>,
    pub purpose: Cow<'static, str>,
    pub labels: &'static [&'static str],
}

/// How an account's starting balance is chosen once its history is known.
#[derive(Clone, Copy)]
enum Anchor {
    /// Exactly this.
    Start(i64),
    /// So that the lowest end-of-day balance of the history is this.
    Lowest(i64),
    /// So that the lowest end-of-day balance of every month is at most this.
    MonthlyLowestAtMost(i64),
}

/// An account before it gets its id.
pub(super) struct Draft {
    pub account_type: AccountType,
    pub currency: Currency,
    /// In booking order once [`Draft::start`] has run.
    pub txs: Vec<Tx>,
    anchor: Anchor,
}

impl Draft {
    fn new(account_type: AccountType, currency: Currency, anchor: Anchor) -> Self {
        Draft { account_type, currency, txs: Vec::new(), anchor }
    }

    /// Books a transaction if its date is within the history; says whether it did.
    fn book(
        &mut self,
        tl: &Timeline,
        date: NaiveDate,
        cents: i64,
        counterpart: impl Into<Cow<'static, str>>,
        purpose: impl Into<Cow<'static, str>>,
        labels: &'static [&'static str],
    ) -> bool {
        if !tl.contains(date) {
            return false;
        }
        self.txs.push(Tx { date, cents, counterpart: counterpart.into(), purpose: purpose.into(), labels });
        true
    }

    fn buy(&mut self, tl: &Timeline, date: NaiveDate, cents: i64, m: &Merchant) -> bool {
        self.book(tl, date, -cents, m.name, m.purpose, m.labels)
    }

    /// The balance before the first day of the history, as the anchor asks; sorts the
    /// transactions into booking order.
    pub fn start(&mut self, tl: &Timeline) -> i64 {
        match self.anchor {
            Anchor::Start(s) => {
                self.txs.sort_by_key(|t| t.date);
                s
            }
            Anchor::Lowest(floor) => floor - lows(tl, &mut self.txs).0,
            Anchor::MonthlyLowestAtMost(mark) => {
                let (_, monthly) = lows(tl, &mut self.txs);
                mark - monthly.into_iter().max().unwrap_or(0)
            }
        }
    }

    /// Settles the starting balance now, so later bookings move the balance instead of the start.
    fn fix_start(&mut self, tl: &Timeline) {
        self.anchor = Anchor::Start(self.start(tl));
    }
}

/// End-of-day balances of a start of zero: the lowest of the whole history (the start itself
/// included) and the lowest of each month. Sorts `txs` by booking date.
fn lows(tl: &Timeline, txs: &mut [Tx]) -> (i64, Vec<i64>) {
    txs.sort_by_key(|t| t.date);
    let mut monthly = Vec::with_capacity(tl.len());
    let (mut balance, mut i) = (0i64, 0usize);
    for k in 0..tl.len() {
        let (first, last) = (tl.months[k].first_day(), tl.last_day(k));
        // The carried balance is an end-of-day balance of this month unless the first day moves it.
        let mut low = if txs.get(i).is_some_and(|t| t.date == first) { i64::MAX } else { balance };
        while i < txs.len() && txs[i].date <= last {
            let day = txs[i].date;
            while i < txs.len() && txs[i].date == day {
                balance += txs[i].cents;
                i += 1;
            }
            low = low.min(balance);
        }
        monthly.push(low);
    }
    let lowest = monthly.iter().copied().fold(0, i64::min);
    (lowest, monthly)
}

/// Moves money between two accounts of the user, booked on both on the same day.
#[allow(clippy::too_many_arguments)]
fn transfer(
    tl: &Timeline,
    from: &mut Draft,
    to: &mut Draft,
    date: NaiveDate,
    cents: i64,
    from_name: &'static str,
    to_name: &'static str,
    purpose: &'static str,
    labels: &'static [&'static str],
) -> bool {
    if !tl.contains(date) || cents <= 0 {
        return false;
    }
    from.book(tl, date, -cents, to_name, purpose, labels);
    to.book(tl, date, cents, from_name, purpose, labels);
    true
}

const OWN_CHECKING: &str = "Eigenes Girokonto";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persona {
    /// Balances stay above a modest floor.
    Steady,
    /// High balances throughout, saves a large share of a high income.
    Affluent,
    /// Spends what comes in; every month dips below a low mark.
    Low,
    /// Lives close to zero and is pushed into overdraft by occasional large expenses.
    Overdraft,
}

/// The accounts of one user, checking account first.
pub(super) fn generate(tl: &Timeline, draw: &mut Draw) -> Vec<Draft> {
    let home = match draw.int(0, 99) {
        0..=93 => eur(),
        94..=97 => currency("CHF"),
        _ => currency("USD"),
    };
    let mut drafts = match draw.int(0, 999) {
        0..=9 => dormant(draw, home),
        10..=29 => without_checking(tl, draw, home),
        _ => banked(tl, draw, home),
    };
    // A few card payments already booked for the coming days: after the balance date, so not
    // part of the balance.
    for d in &mut drafts {
        if matches!(d.account_type, AccountType::Checking | AccountType::CreditCard) && draw.chance(20) {
            for _ in 0..draw.int(1, 2) {
                let m = merchant(draw);
                let cents = draw.int(m.min, m.max);
                let date = add_days(tl.end, draw.int(1, 5));
                d.txs.push(Tx {
                    date,
                    cents: -cents,
                    counterpart: m.name.into(),
                    purpose: "Vormerkung".into(),
                    labels: m.labels,
                });
            }
        }
    }
    drafts
}

fn currency(code: &str) -> Currency {
    Currency::parse(code).unwrap_or_else(eur)
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR is an ISO 4217 code")
}

fn foreign_to(home: Currency, draw: &mut Draw) -> Currency {
    let others: Vec<Currency> = ["EUR", "USD", "CHF"].into_iter().map(currency).filter(|c| *c != home).collect();
    *draw.pick(&others)
}

/// Accounts without a single transaction in the history.
fn dormant(draw: &mut Draw, home: Currency) -> Vec<Draft> {
    let mut out = vec![Draft::new(AccountType::Checking, home, Anchor::Start(draw.int(-50_000, 3_000_000)))];
    if draw.chance(400) {
        out.push(Draft::new(AccountType::Savings, home, Anchor::Start(draw.int(0, 5_000_000))));
    }
    out
}

/// Savers who bank elsewhere: a savings account fed from outside, sometimes a depot.
fn without_checking(tl: &Timeline, draw: &mut Draw, home: Currency) -> Vec<Draft> {
    let floor = draw.int(50_000, 5_000_000);
    let mut savings = Draft::new(AccountType::Savings, home, Anchor::Lowest(floor));
    let deposit = draw.chance(500).then(|| draw.int(5_000, 50_000));
    let day = draw.int(1, 28) as u32;
    let rate_bp = draw.int(10, 250);
    let mut deposited = 0;
    for k in 0..tl.len() {
        if let Some(cents) = deposit
            && savings.book(
                tl,
                next_banking_day(tl.day(k, day)),
                cents,
                "Externe Ueberweisung",
                "Sparen",
                &["TRANSFER"],
            )
        {
            deposited += cents;
        }
        if tl.months[k].month() == 12 {
            let interest = (floor + deposited) * rate_bp / 10_000;
            savings.book(tl, tl.months[k].last_day(), interest, "Zinsgutschrift", "Zinsen", &["INTEREST"]);
        }
    }
    let mut out = vec![savings];
    if draw.chance(400) {
        out.push(depot(tl, draw, Persona::Steady, home, None));
    }
    if draw.chance(150) {
        out.push(foreign(tl, draw, home));
    }
    out
}

fn banked(tl: &Timeline, draw: &mut Draw, home: Currency) -> Vec<Draft> {
    let n = tl.len();
    let persona = match draw.weighted([55u32, 14, 16, 15].into_iter()) {
        0 => Persona::Steady,
        1 => Persona::Affluent,
        2 => Persona::Low,
        _ => Persona::Overdraft,
    };
    let anchor = match persona {
        Persona::Steady => Anchor::Lowest(draw.int(5_000, 200_000)),
        Persona::Affluent => Anchor::Lowest(draw.int(500_000, 6_000_000)),
        Persona::Low => Anchor::MonthlyLowestAtMost(draw.int(-40_000, 20_000)),
        Persona::Overdraft => Anchor::Lowest(draw.int(0, 40_000)),
    };
    let mut checking = Draft::new(AccountType::Checking, home, anchor);
    // What each month's income must cover before day-to-day spending. Insurance paid by card
    // counts too: the card is settled from the checking account.
    let mut fixed = vec![0i64; n];

    let income = income(tl, draw, persona, &mut checking);
    housing(tl, draw, persona, &mut checking, &mut fixed);
    contracts(tl, draw, &mut checking, &mut fixed);
    let mut card = draw.chance(350).then(|| Draft::new(AccountType::CreditCard, home, Anchor::Start(0)));
    insurances(tl, draw, &mut checking, card.as_mut(), &mut fixed);

    let mut savings = draw.chance(450).then(|| savings(tl, draw, persona, &mut checking, &mut fixed));
    let joint = draw.chance(40).then(|| joint(tl, draw, &mut checking, &mut fixed));
    let loan = draw.chance(120).then(|| loan(tl, draw, &mut checking, &mut fixed));
    let depot = draw.chance(150).then(|| depot(tl, draw, persona, home, Some((&mut checking, &mut fixed))));
    let pocket = draw.chance(100).then(|| pocket(tl, draw, &mut checking, &mut fixed));
    let membership = draw.chance(60).then(|| membership(tl, draw, home));
    let bausparen = draw.chance(80).then(|| bausparen(tl, draw, &mut checking, &mut fixed));
    let foreign = draw.chance(60).then(|| foreign(tl, draw, home));

    everyday(tl, draw, persona, &income, &fixed, &mut checking, card.as_mut());

    if persona == Persona::Overdraft {
        checking.fix_start(tl);
        shocks(tl, draw, &mut checking, savings.as_mut());
    }

    [Some(checking), joint, savings, card, loan, depot, pocket, membership, bausparen, foreign]
        .into_iter()
        .flatten()
        .collect()
}

/// Books salary (or pension, benefits, support) on the checking account; returns each month's
/// income.
fn income(tl: &Timeline, draw: &mut Draw, persona: Persona, checking: &mut Draft) -> Vec<i64> {
    let n = tl.len();
    let mut income = vec![0i64; n];
    let pattern = draw.int(0, 99);
    let (employed, freelance) = match pattern {
        0..=69 => (vec![true; n], false),
        _ if persona == Persona::Affluent => (vec![true; n], false),
        70..=87 => partly_employed(draw, n),
        _ => (vec![false; n], false),
    };
    let base = match persona {
        Persona::Affluent => draw.int(450_000, 1_200_000),
        Persona::Low => draw.int(130_000, 260_000),
        _ => draw.int(170_000, 520_000),
    };
    let payday = *draw.pick(&[1u32, 15, 25, 27, 28, 30, 31, 31, 31]);
    let employer = *draw.pick(EMPLOYERS);
    let labels = *draw.pick(SALARY_LABELS);
    let jitter = draw.chance(150);
    let (raise_from, raise_pct) = (draw.below(n), draw.int(2, 6));
    let bonus = draw.chance(300);
    // Months without a salary: pension (for those never employed), unemployment benefit, support
    // from the family, or nothing.
    let other = if pattern >= 88 { draw.int(0, 99) } else { draw.int(35, 99) };
    let other_amount = match other {
        0..=34 => draw.int(90_000, 240_000),
        35..=59 => draw.int(60_000, 150_000),
        _ => draw.int(20_000, 90_000),
    };
    for k in 0..n {
        let month = tl.months[k];
        if employed[k] {
            let mut cents = base + if k >= raise_from { Draw::percent_of(base, raise_pct) } else { 0 };
            if freelance {
                cents = Draw::percent_of(cents, draw.int(50, 150));
            }
            let mut date = tl.day(k, payday);
            if jitter {
                date = add_days(date, draw.int(-2, 2));
            }
            let date = previous_banking_day(date);
            let purpose = format!("LOHN/GEHALT {:02}/{}", month.month(), month.year());
            if checking.book(tl, date, cents, employer, purpose, labels) {
                income[k] += cents;
            }
            if bonus && month.month() == 11 {
                let cents = Draw::percent_of(base, draw.int(40, 100));
                if checking.book(tl, date, cents, employer, "WEIHNACHTSGELD", &["SALARY", "BONUS"]) {
                    income[k] += cents;
                }
            }
        } else {
            let booked = match other {
                0..=34 => checking.book(
                    tl,
                    previous_banking_day(month.last_day()),
                    other_amount,
                    "Deutsche Rentenversicherung",
                    "Rente",
                    &["PENSION"],
                ),
                35..=59 => checking.book(
                    tl,
                    next_banking_day(tl.day(k, 1)),
                    other_amount,
                    "Bundesagentur fuer Arbeit",
                    "Arbeitslosengeld",
                    &["BENEFITS"],
                ),
                60..=79 => checking.book(
                    tl,
                    tl.day(k, draw.int(1, 5) as u32),
                    other_amount,
                    "Eltern",
                    "Taschengeld",
                    &["TRANSFER"],
                ),
                _ => false,
            };
            if booked {
                income[k] += other_amount;
            }
        }
    }
    income
}

/// Employment in only some months: a job started or ended during the history, a gap between two
/// jobs, or freelance pay in some months and not others.
fn partly_employed(draw: &mut Draw, n: usize) -> (Vec<bool>, bool) {
    let mut employed = vec![true; n];
    match draw.int(0, 3) {
        0 => {
            let from = draw.index(1, n.saturating_sub(2)).min(n);
            employed[..from].fill(false);
        }
        1 => {
            let until = draw.index(1, n.saturating_sub(2)).min(n);
            employed[until..].fill(false);
        }
        2 => {
            let from = draw.index(1, n.saturating_sub(3)).min(n);
            let until = (from + draw.index(1, 4)).min(n);
            employed[from..until].fill(false);
        }
        _ => {
            for e in &mut employed {
                *e = draw.chance(600);
            }
            return (employed, true);
        }
    }
    (employed, false)
}

fn housing(tl: &Timeline, draw: &mut Draw, persona: Persona, checking: &mut Draft, fixed: &mut [i64]) {
    if !draw.chance(720) {
        return;
    }
    let rent = match persona {
        Persona::Affluent => draw.int(90_000, 300_000),
        Persona::Low => draw.int(30_000, 80_000),
        _ => draw.int(40_000, 160_000),
    };
    let landlord = *draw.pick(LANDLORDS);
    let labels = *draw.pick(RENT_LABELS);
    // Some pay on the last day of the month before.
    let early = draw.chance(120);
    let day = draw.int(1, 3) as u32;
    let step = draw.chance(300).then(|| (draw.below(tl.len()), draw.int(2, 5)));
    for (k, fixed) in fixed.iter_mut().enumerate() {
        let cents = rent + step.filter(|&(from, _)| k >= from).map_or(0, |(_, pct)| Draw::percent_of(rent, pct));
        let date = if early { add_days(tl.months[k].first_day(), -1) } else { next_banking_day(tl.day(k, day)) };
        if checking.book(tl, date, -cents, landlord, "Miete", labels) {
            *fixed += cents;
        }
    }
}

/// Utilities, telecoms, subscriptions, the account fee on the last day of each month and the
/// quarterly broadcasting fee.
fn contracts(tl: &Timeline, draw: &mut Draw, checking: &mut Draft, fixed: &mut [i64]) {
    let mut taken = 0u32;
    for _ in 0..draw.int(1, 3) {
        let i = draw.weighted(CONTRACTS.iter().map(|c| c.weight));
        if taken & (1 << i) != 0 {
            continue;
        }
        taken |= 1 << i;
        let c = &CONTRACTS[i];
        let cents = draw.int(c.min, c.max);
        let day = draw.int(1, 28) as u32;
        let from = if draw.chance(150) { draw.below(tl.len()) } else { 0 };
        for (k, due) in fixed.iter_mut().enumerate().skip(from) {
            if checking.buy(tl, next_banking_day(tl.day(k, day)), cents, c) {
                *due += cents;
            }
        }
    }
    if draw.chance(350) {
        let fee = *draw.pick(&[490i64, 690, 990]);
        for (k, fixed) in fixed.iter_mut().enumerate() {
            if checking.book(tl, tl.months[k].last_day(), -fee, "Eigene Bank", "Kontofuehrungsentgelt", &["FEES"]) {
                *fixed += fee;
            }
        }
    }
    if draw.chance(600) {
        for (k, due) in fixed.iter_mut().enumerate() {
            if tl.months[k].month() % 3 == 2
                && checking.book(
                    tl,
                    next_banking_day(tl.day(k, 15)),
                    -5_508,
                    "ARD ZDF Deutschlandradio Beitragsservice",
                    "Rundfunkbeitrag",
                    &["FEES", "TAX"],
                )
            {
                *due += 5_508;
            }
        }
    }
}

/// An insurance policy's payments: who is paid, under which spelling, with which labels.
struct Policy {
    provider: &'static str,
    /// Whether payments spell the provider with varying case and whitespace.
    varies: bool,
    kind: &'static InsuranceKind,
    labels: &'static [&'static str],
}

impl Policy {
    fn spelled(&self, draw: &mut Draw) -> Cow<'static, str> {
        let name = self.provider;
        if !self.varies || !draw.chance(450) {
            return Cow::Borrowed(name);
        }
        Cow::Owned(match draw.int(0, 5) {
            0 => name.replace(' ', "  "),
            1 => format!(" {} ", name.to_lowercase()),
            2 => name.to_uppercase(),
            3 => format!("{name}  "),
            4 => format!("\t{}", name.replace(' ', " \t")),
            _ => name.to_lowercase(),
        })
    }

    fn pay(&self, tl: &Timeline, draw: &mut Draw, payer: &mut Draft, fixed: &mut [i64], date: NaiveDate, cents: i64) {
        let name = self.spelled(draw);
        if payer.book(tl, date, -cents, name, self.kind.purpose, self.labels)
            && let Some(k) = tl.month_of(date)
        {
            fixed[k] += cents;
        }
    }
}

/// Up to six insurance policies, mostly paid from the checking account, a few by credit card.
fn insurances(tl: &Timeline, draw: &mut Draw, checking: &mut Draft, mut card: Option<&mut Draft>, fixed: &mut [i64]) {
    let count = draw.weighted([20u32, 25, 25, 15, 10, 5].into_iter());
    let mut first: Option<&'static str> = None;
    for _ in 0..count {
        // Several policies with one insurer are common.
        let provider = match first {
            Some(p) if draw.chance(250) => p,
            _ => *draw.pick(INSURERS),
        };
        first.get_or_insert(provider);
        let on_card = draw.chance(80);
        // Card payments count as fixed costs too: the card is settled from the checking account.
        match card.as_deref_mut() {
            Some(card) if on_card => policy(tl, draw, provider, card, &mut *fixed),
            _ => policy(tl, draw, provider, checking, &mut *fixed),
        }
    }
}

fn policy(tl: &Timeline, draw: &mut Draw, provider: &'static str, payer: &mut Draft, fixed: &mut [i64]) {
    let n = tl.len();
    let kind = &INSURANCE_KINDS[draw.weighted(INSURANCE_KINDS.iter().map(|k| k.weight))];
    let labels = *draw.pick(kind.label_sets);
    let policy = Policy { provider, varies: draw.chance(200), kind, labels };
    let monthly = draw.int(kind.monthly_min, kind.monthly_max);
    let frequency = draw.weighted(FREQUENCY_WEIGHTS.iter().copied());
    let (first, last) = match draw.int(0, 7) {
        0 => (draw.below(n), n - 1),
        1 => (0, draw.below(n)),
        _ => (0, n - 1),
    };
    // Days past the 28th fall on the last day of shorter months (29 February included).
    let day = if draw.chance(100) { draw.int(29, 31) } else { draw.int(1, 28) } as u32;
    let increase = draw.chance(300).then(|| draw.int(1, 6));
    match frequency {
        0..=3 => {
            let period = [1usize, 3, 6, 12][frequency];
            let mut premium = monthly * period as i64;
            let offset = draw.below(period);
            for k in first..=last {
                if k > first && tl.months[k].month() == 1 {
                    premium += increase.map_or(0, |pct| Draw::percent_of(premium, pct));
                }
                if (k - first) % period == offset {
                    policy.pay(tl, draw, payer, fixed, next_banking_day(tl.day(k, day)), premium);
                }
            }
        }
        4 => {
            // Gaps that fit no frequency band: a few days, about two months, about four months.
            let mut date = tl.day(first, day);
            let until = tl.last_day(last);
            while date <= until {
                let cents = Draw::percent_of(monthly * 2, draw.int(70, 130));
                policy.pay(tl, draw, payer, fixed, date, cents);
                let gap = match draw.weighted([1u32, 3, 1].into_iter()) {
                    0 => draw.int(8, 20),
                    1 => draw.int(40, 75),
                    _ => draw.int(110, 150),
                };
                date = add_days(date, gap);
            }
        }
        _ => {
            // A one-off payment, mostly in the last year.
            let k = if draw.chance(700) {
                draw.index(n.saturating_sub(12).max(first), last)
            } else {
                draw.index(first, last)
            };
            policy.pay(tl, draw, payer, fixed, next_banking_day(tl.day(k, day)), monthly * 12);
        }
    }
    // Incoming refunds and zero-amount notices carry the insurance labels but are not spending.
    if draw.chance(30) {
        let k = draw.index(first, last);
        let cents = Draw::percent_of(monthly * 12, draw.int(10, 50));
        payer.book(tl, tl.any_day(k, draw), cents, provider, "Beitragsrueckerstattung", policy.labels);
    }
    if draw.chance(10) {
        let k = draw.index(first, last);
        payer.book(tl, tl.any_day(k, draw), 0, provider, "Beitragsinformation", policy.labels);
    }
}

fn savings(tl: &Timeline, draw: &mut Draw, persona: Persona, checking: &mut Draft, fixed: &mut [i64]) -> Draft {
    let floor = match persona {
        Persona::Steady => draw.int(20_000, 1_500_000),
        Persona::Affluent => draw.int(1_000_000, 8_000_000),
        Persona::Low => draw.int(0, 50_000),
        Persona::Overdraft => draw.int(10_000, 300_000),
    };
    let mut savings = Draft::new(AccountType::Savings, checking.currency, Anchor::Lowest(floor));
    let plan = match persona {
        Persona::Affluent => draw.chance(800).then(|| draw.int(30_000, 200_000)),
        Persona::Low => draw.chance(200).then(|| draw.int(1_000, 5_000)),
        _ => draw.chance(600).then(|| draw.int(2_500, 40_000)),
    };
    let day = draw.int(1, 5) as u32;
    let rate_bp = draw.int(10, 250);
    let mut deposited = 0;
    for (k, due) in fixed.iter_mut().enumerate() {
        if let Some(cents) = plan {
            let date = next_banking_day(tl.day(k, day));
            if transfer(
                tl,
                checking,
                &mut savings,
                date,
                cents,
                OWN_CHECKING,
                "Sparkonto",
                "Sparrate",
                &["SAVINGS", "TRANSFER"],
            ) {
                *due += cents;
                deposited += cents;
            }
        }
        if draw.chance(30) {
            let cents = draw.int(20_000, 150_000);
            let date = tl.any_day(k, draw);
            if transfer(tl, &mut savings, checking, date, cents, "Sparkonto", OWN_CHECKING, "Umbuchung", &["TRANSFER"])
            {
                deposited -= cents;
            }
        }
        if tl.months[k].month() == 12 {
            let interest = (floor + deposited).max(0) * rate_bp / 10_000;
            savings.book(tl, tl.months[k].last_day(), interest, "Zinsgutschrift", "Zinsen", &["INTEREST"]);
        }
    }
    savings
}

/// A second checking account shared with a partner, fed monthly from the main one.
fn joint(tl: &Timeline, draw: &mut Draw, checking: &mut Draft, fixed: &mut [i64]) -> Draft {
    let mut joint = Draft::new(AccountType::Checking, checking.currency, Anchor::Lowest(draw.int(0, 200_000)));
    let cents = draw.int(20_000, 150_000);
    let day = draw.int(1, 5) as u32;
    for (k, due) in fixed.iter_mut().enumerate() {
        let date = next_banking_day(tl.day(k, day));
        if transfer(
            tl,
            checking,
            &mut joint,
            date,
            cents,
            OWN_CHECKING,
            "Gemeinschaftskonto",
            "Haushaltsgeld",
            &["TRANSFER"],
        ) {
            *due += cents;
        }
        let items = draw.index(2, 5);
        let budget = Draw::percent_of(cents, draw.int(85, 105));
        spend(tl, draw, &mut joint, k, budget, items);
    }
    joint
}

fn loan(tl: &Timeline, draw: &mut Draw, checking: &mut Draft, fixed: &mut [i64]) -> Draft {
    let rate = draw.int(15_000, 150_000);
    // Large enough that the loan is never repaid within the history.
    let principal = draw.int(500_000, 25_000_000).max(rate * 40);
    let mut loan = Draft::new(AccountType::Loan, checking.currency, Anchor::Start(-principal));
    let day = *draw.pick(&[1u32, 15, 30]);
    let interest_bp = draw.int(200, 700);
    let mut outstanding = principal;
    for (k, due) in fixed.iter_mut().enumerate() {
        let date = next_banking_day(tl.day(k, day));
        if transfer(tl, checking, &mut loan, date, rate, OWN_CHECKING, "Darlehenskonto", "Tilgung Darlehen", &["LOAN"])
        {
            *due += rate;
            outstanding -= rate;
        }
        let interest = outstanding * interest_bp / 120_000;
        if loan.book(tl, tl.months[k].last_day(), -interest, "Sollzinsen", "Zinsen Darlehen", &["INTEREST", "LOAN"]) {
            outstanding += interest;
        }
    }
    loan
}

/// A securities account: a monthly savings plan from checking, dividends, occasional trades.
fn depot(
    tl: &Timeline,
    draw: &mut Draw,
    persona: Persona,
    currency: Currency,
    mut link: Option<(&mut Draft, &mut [i64])>,
) -> Draft {
    let floor = match persona {
        Persona::Affluent => draw.int(1_000_000, 20_000_000),
        _ => draw.int(100_000, 5_000_000),
    };
    let mut depot = Draft::new(AccountType::Security, currency, Anchor::Lowest(floor));
    let plan = draw.chance(500).then(|| draw.int(2_500, 50_000));
    let dividends = draw.chance(700);
    for k in 0..tl.len() {
        if let (Some(cents), Some((checking, fixed))) = (plan, link.as_mut()) {
            let date = next_banking_day(tl.day(k, 15));
            if transfer(
                tl,
                checking,
                &mut depot,
                date,
                cents,
                OWN_CHECKING,
                "Depot",
                "Sparplan ETF",
                &["SECURITIES", "SAVINGS"],
            ) {
                fixed[k] += cents;
            }
        }
        if dividends && tl.months[k].month().is_multiple_of(3) {
            let cents = draw.int(500, 50_000);
            depot.book(tl, next_banking_day(tl.day(k, 20)), cents, "Clearstream Banking", "Dividende", &["DIVIDEND"]);
        }
        if draw.chance(80) {
            let cents = draw.int(50_000, 500_000);
            let signed = if draw.chance(500) { cents } else { -cents };
            depot.book(tl, tl.any_day(k, draw), signed, "Tradegate Exchange", "Wertpapierorder", &["SECURITIES"]);
        }
    }
    depot
}

/// A sub-account for putting money aside, topped up and drawn from now and then.
fn pocket(tl: &Timeline, draw: &mut Draw, checking: &mut Draft, fixed: &mut [i64]) -> Draft {
    let mut pocket = Draft::new(AccountType::Pocket, checking.currency, Anchor::Lowest(draw.int(0, 30_000)));
    for (k, due) in fixed.iter_mut().enumerate() {
        for _ in 0..draw.int(0, 1) {
            let cents = draw.int(1_000, 20_000);
            let date = tl.any_day(k, draw);
            if transfer(
                tl,
                checking,
                &mut pocket,
                date,
                cents,
                OWN_CHECKING,
                "Unterkonto",
                "Zuruecklegen",
                &["TRANSFER", "POCKET"],
            ) {
                *due += cents;
            }
        }
        if draw.chance(200) {
            let cents = draw.int(1_000, 30_000);
            let date = tl.any_day(k, draw);
            transfer(
                tl,
                &mut pocket,
                checking,
                date,
                cents,
                "Unterkonto",
                OWN_CHECKING,
                "Auszahlung",
                &["TRANSFER", "POCKET"],
            );
        }
    }
    pocket
}

/// Cooperative shares: a fixed balance, sometimes a yearly dividend, often no transaction at all.
fn membership(tl: &Timeline, draw: &mut Draw, currency: Currency) -> Draft {
    let mut membership = Draft::new(AccountType::Membership, currency, Anchor::Start(draw.int(5_000, 150_000)));
    if draw.chance(300) {
        let cents = draw.int(200, 6_000);
        for k in 0..tl.len() {
            if tl.months[k].month() == 6 {
                membership.book(
                    tl,
                    tl.months[k].last_day(),
                    cents,
                    "Genossenschaftsbank eG",
                    "Dividende",
                    &["DIVIDEND"],
                );
            }
        }
    }
    membership
}

/// A building-savings contract: monthly deposits, a yearly fee, yearly interest.
fn bausparen(tl: &Timeline, draw: &mut Draw, checking: &mut Draft, fixed: &mut [i64]) -> Draft {
    let floor = draw.int(50_000, 2_500_000);
    let mut bausparen = Draft::new(AccountType::Bausparen, checking.currency, Anchor::Lowest(floor));
    let cents = draw.int(2_500, 30_000);
    let day = draw.int(1, 10) as u32;
    let fee = draw.int(1_200, 3_000);
    let rate_bp = draw.int(10, 100);
    let mut deposited = 0;
    for (k, due) in fixed.iter_mut().enumerate() {
        let date = next_banking_day(tl.day(k, day));
        if transfer(
            tl,
            checking,
            &mut bausparen,
            date,
            cents,
            OWN_CHECKING,
            "Bausparkasse Schwaebisch Hall",
            "Sparrate",
            &["BAUSPAREN", "SAVINGS"],
        ) {
            *due += cents;
            deposited += cents;
        }
        match tl.months[k].month() {
            1 => {
                bausparen.book(tl, tl.day(k, 15), -fee, "Bausparkasse Schwaebisch Hall", "Kontogebuehr", &["FEES"]);
            }
            12 => {
                let interest = (floor + deposited) * rate_bp / 10_000;
                bausparen.book(tl, tl.months[k].last_day(), interest, "Zinsgutschrift", "Zinsen", &["INTEREST"]);
            }
            _ => {}
        }
    }
    bausparen
}

/// An account in another currency than the user's home currency, often with a high balance.
fn foreign(tl: &Timeline, draw: &mut Draw, home: Currency) -> Draft {
    let currency = foreign_to(home, draw);
    let floor = draw.int(50_000, 12_000_000);
    let kind = *draw.pick(&[AccountType::Savings, AccountType::Savings, AccountType::Checking, AccountType::Security]);
    let mut account = Draft::new(kind, currency, Anchor::Lowest(floor));
    let inflow = draw.int(30_000, 300_000);
    for k in 0..tl.len() {
        match kind {
            AccountType::Checking => {
                account.book(tl, tl.day(k, 1), inflow, "Wise Payments Ltd", "Transfer", &["TRANSFER"]);
                let items = draw.index(1, 4);
                let budget = Draw::percent_of(inflow, draw.int(80, 105));
                spend(tl, draw, &mut account, k, budget, items);
            }
            _ if tl.months[k].month().is_multiple_of(3) => {
                let cents = draw.int(100, 5_000);
                account.book(tl, tl.months[k].last_day(), cents, "Interest", "Interest payment", &["INTEREST"]);
            }
            _ => {}
        }
    }
    account
}

/// How a persona spends: purchases per month, the share of income kept, the least it spends.
struct Habit {
    items: (usize, usize),
    keep_pct: (i64, i64),
    least: i64,
}

/// Day-to-day spending of each month, on the checking account and the credit card, plus the
/// card's monthly settlement from the checking account.
fn everyday(
    tl: &Timeline,
    draw: &mut Draw,
    persona: Persona,
    income: &[i64],
    fixed: &[i64],
    checking: &mut Draft,
    mut card: Option<&mut Draft>,
) {
    let habit = match persona {
        Persona::Steady => Habit { items: (1, 4), keep_pct: (-3, 5), least: draw.int(20_000, 45_000) },
        Persona::Affluent => Habit { items: (2, 5), keep_pct: (10, 30), least: draw.int(60_000, 120_000) },
        Persona::Low => Habit { items: (1, 3), keep_pct: (-1, 1), least: draw.int(15_000, 30_000) },
        Persona::Overdraft => Habit { items: (1, 4), keep_pct: (0, 3), least: draw.int(20_000, 40_000) },
    };
    let card_pct = draw.int(20, 60);
    let settle_day = draw.int(3, 8) as u32;
    for k in 0..tl.len() {
        // The settlement pays for last month's card spending, which that month's budget held.
        if let Some(card) = card.as_deref_mut()
            && k > 0
        {
            settle(tl, k, settle_day, checking, card);
        }
        let kept = Draw::percent_of(income[k], draw.int(habit.keep_pct.0, habit.keep_pct.1));
        let mut budget = (income[k] - fixed[k] - kept).max(habit.least);
        let mut items = draw.index(habit.items.0, habit.items.1);
        // The month of the end date is spent only up to that day.
        let (days, length) = (i64::from(tl.days(k)), i64::from(tl.months[k].last_day().day()));
        if days < length {
            budget = budget * days / length;
            items = (items * days as usize).div_ceil(length as usize);
        }
        match card.as_deref_mut() {
            Some(card) => {
                let on_card = Draw::percent_of(budget, card_pct);
                let card_items = Draw::percent_of(items as i64, card_pct) as usize;
                spend(tl, draw, card, k, on_card, card_items.max(1));
                spend(tl, draw, checking, k, budget - on_card, items.saturating_sub(card_items).max(1));
                if draw.chance(80) {
                    refund(tl, draw, card, k);
                }
            }
            None => spend(tl, draw, checking, k, budget, items),
        }
        if draw.chance(40) {
            refund(tl, draw, checking, k);
        }
    }
}

/// Pays the card's balance at the end of month `k - 1` from the checking account early in month
/// `k`.
fn settle(tl: &Timeline, k: usize, day: u32, checking: &mut Draft, card: &mut Draft) {
    let cutoff = tl.months[k - 1].last_day();
    let owed: i64 = -card.txs.iter().filter(|t| t.date <= cutoff).map(|t| t.cents).sum::<i64>();
    let date = next_banking_day(tl.day(k, day));
    transfer(tl, checking, card, date, owed, OWN_CHECKING, "Kreditkarte", "Kreditkartenabrechnung", &["CREDITCARD"]);
}

fn merchant(draw: &mut Draw) -> &'static Merchant {
    &MERCHANTS[draw.weighted(MERCHANTS.iter().map(|m| m.weight))]
}

/// Purchases of month `k` adding up to `budget`: `items` everyday purchases, scaled down to the
/// budget when they exceed it, and larger payments for what is left.
fn spend(tl: &Timeline, draw: &mut Draw, account: &mut Draft, k: usize, budget: i64, items: usize) {
    if budget <= 0 {
        return;
    }
    let mut picks = [(&MERCHANTS[0], 0i64); 12];
    let picks = &mut picks[..items.min(12)];
    for pick in picks.iter_mut() {
        let m = merchant(draw);
        *pick = (m, draw.int(m.min, m.max));
    }
    let wanted: i64 = picks.iter().map(|p| p.1).sum();
    let mut spent = 0;
    for &(m, cents) in picks.iter() {
        let cents = if wanted > budget { cents * budget / wanted } else { cents };
        if cents < 50 {
            continue;
        }
        let date = tl.any_day(k, draw);
        if account.buy(tl, date, cents, m) {
            spent += cents;
        }
        // A card check that moves no money, on the same day.
        if draw.chance(2) {
            account.book(tl, date, 0, m.name, "Kartenpruefung", &[]);
        }
    }
    // The rest in one payment, or two when it is large.
    let mut rest = budget - spent;
    let parts = if rest > 250_000 { 2 } else { 1 };
    for part in 0..parts {
        if rest < 100 {
            break;
        }
        let sink = &SINKS[draw.weighted(SINKS.iter().map(|s| s.weight))];
        let mut cents = if part + 1 < parts { draw.int(rest / 3, rest * 2 / 3) } else { rest };
        if sink.labels == ["CASH"] && cents >= 1_000 {
            cents -= cents % 1_000;
        }
        account.buy(tl, tl.any_day(k, draw), cents, sink);
        rest -= cents;
    }
}

fn refund(tl: &Timeline, draw: &mut Draw, account: &mut Draft, k: usize) {
    let r = &REFUNDS[draw.weighted(REFUNDS.iter().map(|r| r.weight))];
    let cents = draw.int(r.min, r.max);
    account.book(tl, tl.any_day(k, draw), cents, r.name, r.purpose, r.labels);
}

/// One to three large expenses shortly before payday that overdraw the account, each made good
/// within three weeks by a transfer from savings, family or a credit line.
fn shocks(tl: &Timeline, draw: &mut Draw, checking: &mut Draft, mut savings: Option<&mut Draft>) {
    let complete = tl.complete();
    if complete < 2 {
        return;
    }
    for _ in 0..draw.int(1, 3) {
        let k = draw.index(0, complete - 2);
        let date = tl.day(k, draw.int(18, 26) as u32);
        let back = add_days(date, draw.int(2, 20));
        let shock = &SHOCKS[draw.weighted(SHOCKS.iter().map(|s| s.weight))];
        let cents = draw.int(shock.min, shock.max);
        if !tl.contains(back) {
            continue;
        }
        checking.buy(tl, date, cents, shock);
        match savings.as_deref_mut() {
            Some(savings) if draw.chance(600) => {
                transfer(tl, savings, checking, back, cents, "Sparkonto", OWN_CHECKING, "Umbuchung", &["TRANSFER"]);
            }
            _ if draw.chance(500) => {
                checking.book(tl, back, cents, "Eltern", "Zuschuss", &["TRANSFER"]);
            }
            _ => {
                checking.book(tl, back, cents, "Eigene Bank", "Rahmenkredit Auszahlung", &["LOAN", "TRANSFER"]);
            }
        }
    }
}
