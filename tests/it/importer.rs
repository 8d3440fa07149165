//! The importer end to end on both backends (the embedded store, and DynamoDB on moto): files in
//! any order become exactly the users they describe, a bad line applies nothing, the two modes,
//! a changed booking date, and the import lock.

use std::collections::BTreeMap;

use chrono::{NaiveDate, SubsecRound, Utc};
use financial_segments::generate::{self, GenerateConfig};
use futures::TryStreamExt;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use segments_core::domain::records::{AccountRecord, TransactionRecord};
use segments_core::domain::{AccountHistory, AccountId, MandatorId, UserData, UserId};
use segments_core::imports::{ImportCounts, ImportId, ImportMode, ImportRecord, ImportStatus, LOCK_LEASE};
use segments_core::usecases::import::{ImportError, Importer};

use crate::support::backend::Backend;
use crate::support::contract::unique_mandator;
use crate::support::users::import_dir;

fn importer(b: &Backend) -> Importer {
    Importer { users: b.users.clone(), imports: b.imports.clone(), segments: b.segments.clone() }
}

/// Writes `accounts` and `transactions` (lines) into a new directory.
fn files(accounts: &[String], transactions: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts.ndjson"), accounts.iter().map(|l| format!("{l}\n")).collect::<String>())
        .unwrap();
    let transactions: String = transactions.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("transactions.ndjson"), transactions).unwrap();
    dir
}

/// Generated lines of `users` users of `mandator`, each file shuffled.
fn generated(mandator: &MandatorId, users: u64) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let config = GenerateConfig {
        mandator: mandator.clone(),
        months: 3,
        ..GenerateConfig::new(users, NaiveDate::from_ymd_opt(2025, 3, 31).unwrap())
    };
    let accounts = std::fs::File::create(dir.path().join("accounts.ndjson")).unwrap();
    let transactions = std::fs::File::create(dir.path().join("transactions.ndjson")).unwrap();
    generate::write_ndjson(&config, accounts, transactions, |_| {}).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut read = |name: &str| {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.shuffle(&mut rng);
        lines
    };
    (read("accounts.ndjson"), read("transactions.ndjson"))
}

/// The users the lines describe, as the store gives them back: accounts by accountId, their
/// transactions by (bookingDate, transactionId).
fn expected_users(accounts: &[String], transactions: &[String]) -> BTreeMap<UserId, UserData> {
    let mut users: BTreeMap<UserId, BTreeMap<AccountId, AccountHistory>> = BTreeMap::new();
    for line in accounts {
        let (_, account) = serde_json::from_str::<AccountRecord>(line).unwrap().into_account();
        let history = AccountHistory { account, transactions: Vec::new() };
        users.entry(history.account.user_id.clone()).or_default().insert(history.account.account_id.clone(), history);
    }
    for line in transactions {
        let (_, user, account, transaction) = serde_json::from_str::<TransactionRecord>(line).unwrap().into_parts();
        users.get_mut(&user).unwrap().get_mut(&account).unwrap().transactions.push(transaction);
    }
    users
        .into_iter()
        .map(|(user_id, accounts)| {
            let mut accounts: Vec<AccountHistory> = accounts.into_values().collect();
            for h in &mut accounts {
                h.transactions
                    .sort_by(|x, y| (x.booking_date, &x.transaction_id).cmp(&(y.booking_date, &y.transaction_id)));
            }
            (user_id.clone(), UserData { user_id, accounts })
        })
        .collect()
}

/// Every user stored for the mandator, read shard by shard.
async fn stored_users(b: &Backend, mandator: &MandatorId) -> BTreeMap<UserId, UserData> {
    let Some(shards) = b.users.shard_count(mandator).await.unwrap() else { return BTreeMap::new() };
    let mut users = BTreeMap::new();
    for shard in 0..shards {
        let ids: Vec<UserId> = b.users.user_ids(mandator, shard).try_collect().await.unwrap();
        for id in ids {
            let stored = b.users.get_user(mandator, shards, &id).await.unwrap().expect("a listed user reads");
            users.insert(id, stored.data);
        }
    }
    users
}

/// The holders the account directory gives the accounts.
async fn holders(b: &Backend, mandator: &MandatorId, accounts: &[&str]) -> BTreeMap<String, String> {
    let ids: Vec<AccountId> = accounts.iter().map(|a| AccountId::parse(a).unwrap()).collect();
    let found = b.users.account_users(mandator, &ids).await.unwrap();
    found.into_iter().map(|(a, u)| (a.to_string(), u.to_string())).collect()
}

fn account(m: &MandatorId, u: &str, a: &str) -> String {
    format!(
        r#"{{"mandatorId":"{m}","userId":"{u}","accountId":"{a}","accountType":"checking","currency":"EUR","balance":10.5,"balanceDate":"2025-01-31"}}"#
    )
}

fn transaction(m: &MandatorId, u: &str, a: &str, t: &str, date: &str) -> String {
    format!(
        r#"{{"mandatorId":"{m}","userId":"{u}","accountId":"{a}","transactionId":"{t}","bookingDate":"{date}","amount":-1.25,"currency":"EUR","labels":["RENT"]}}"#
    )
}

/// Generated files in shuffled order import to exactly the users they describe; the same files
/// again change nothing.
async fn shuffled_files_import_to_exactly_their_users(b: &Backend) {
    let importer = importer(b);
    let mandator = unique_mandator("import-shuffled");
    let (accounts, transactions) = generated(&mandator, 30);
    let dir = files(&accounts, &transactions);
    let expected = expected_users(&accounts, &transactions);
    let record = import_dir(&importer, &mandator, ImportMode::UpsertUsers, dir.path(), Some(3)).await.unwrap();
    let counts = ImportCounts {
        users: expected.len() as u64,
        accounts: accounts.len() as u64,
        transactions: transactions.len() as u64,
        erased_users: 0,
    };
    assert_eq!((record.status, record.counts), (ImportStatus::Completed, counts));
    assert_eq!(b.imports.get_import(&mandator, record.import_id).await.unwrap(), Some(record));
    assert_eq!(b.users.shard_count(&mandator).await.unwrap(), Some(3));
    let stored = stored_users(b, &mandator).await;
    assert_eq!(stored.len(), expected.len());
    for (user, data) in &expected {
        assert_eq!(stored.get(user), Some(data), "user {user}");
    }
    let ids: Vec<AccountId> =
        expected.values().flat_map(|u| u.accounts.iter().map(|h| h.account.account_id.clone())).collect();
    let directory = b.users.account_users(&mandator, &ids).await.unwrap();
    for user in expected.values() {
        for h in &user.accounts {
            assert_eq!(directory.get(&h.account.account_id), Some(&user.user_id));
        }
    }
    assert_eq!(b.imports.lock_holder(&mandator, Utc::now()).await.unwrap(), None, "the lock is released");

    let again = import_dir(&importer, &mandator, ImportMode::UpsertUsers, dir.path(), None).await.unwrap();
    assert_eq!(again.counts, counts);
    assert_eq!(stored_users(b, &mandator).await, expected);
}

/// A bad line anywhere applies nothing of either file, and the record lists it.
async fn a_bad_line_applies_nothing(b: &Backend) {
    let importer = importer(b);
    let mandator = unique_mandator("import-bad");
    let (accounts, mut transactions) = generated(&mandator, 5);
    let at = transactions.len() / 2;
    transactions[at] = transactions[at].replace("\"amount\":", "\"amount\":\"1\",\"was\":");
    let dir = files(&accounts, &transactions);
    let err = import_dir(&importer, &mandator, ImportMode::UpsertUsers, dir.path(), None).await.unwrap_err();
    let ImportError::Invalid { errors, more: 0 } = &err else { panic!("{err:?}") };
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains(&format!("transactions.ndjson:{}: ", at + 1)), "{}", listed[0]);
    assert_eq!(b.users.shard_count(&mandator).await.unwrap(), None, "not even the shard count is recorded");
    assert!(stored_users(b, &mandator).await.is_empty());
    let user = expected_users(&accounts, &[]).into_keys().next().unwrap();
    assert_eq!(b.users.get_user(&mandator, 16, &user).await.unwrap(), None);
}

/// `upsertUsers` replaces the users of the files and leaves the others; `replaceMandator` erases
/// the others, with their account directory entries.
async fn the_modes(b: &Backend) {
    let importer = importer(b);
    let m = unique_mandator("import-modes");
    let first = files(
        &[account(&m, "u1", "a1"), account(&m, "u1", "a2"), account(&m, "u2", "b1"), account(&m, "u3", "c1")],
        &[transaction(&m, "u1", "a1", "t1", "2025-01-02")],
    );
    import_dir(&importer, &m, ImportMode::UpsertUsers, first.path(), Some(2)).await.unwrap();

    // u1 loses a2 and its transaction; u2 and u3 stay as they were.
    let upsert = files(&[account(&m, "u1", "a1"), account(&m, "u4", "d1")], &[]);
    let record = import_dir(&importer, &m, ImportMode::UpsertUsers, upsert.path(), None).await.unwrap();
    assert_eq!(record.counts, ImportCounts { users: 2, accounts: 2, transactions: 0, erased_users: 0 });
    let stored = stored_users(b, &m).await;
    let names: Vec<&str> = stored.keys().map(UserId::as_str).collect();
    assert_eq!(names, ["u1", "u2", "u3", "u4"]);
    let u1 = &stored[&UserId::parse("u1").unwrap()];
    assert_eq!((u1.accounts.len(), u1.accounts[0].transactions.len()), (1, 0));
    let all = ["a1", "a2", "b1", "c1", "d1", "e1"];
    let expected = [("a1", "u1"), ("b1", "u2"), ("c1", "u3"), ("d1", "u4")];
    assert_eq!(holders(b, &m, &all).await, expected.iter().map(|(a, u)| ((*a).into(), (*u).into())).collect());

    // c1 moves from u3, which the files do not contain, to the new u5.
    let replace = files(&[account(&m, "u2", "b1"), account(&m, "u5", "c1"), account(&m, "u5", "e1")], &[]);
    let record = import_dir(&importer, &m, ImportMode::ReplaceMandator, replace.path(), None).await.unwrap();
    assert_eq!(record.counts, ImportCounts { users: 2, accounts: 3, transactions: 0, erased_users: 3 });
    let names: Vec<String> = stored_users(b, &m).await.keys().map(ToString::to_string).collect();
    assert_eq!(names, ["u2", "u5"]);
    let expected = [("b1", "u2"), ("c1", "u5"), ("e1", "u5")];
    assert_eq!(holders(b, &m, &all).await, expected.iter().map(|(a, u)| ((*a).into(), (*u).into())).collect());
}

/// A transaction whose booking date changed between two imports is stored once, at its new date.
async fn a_changed_booking_date_is_stored_once(b: &Backend) {
    let importer = importer(b);
    let m = unique_mandator("import-dates");
    let before = files(&[account(&m, "u1", "a1")], &[transaction(&m, "u1", "a1", "t1", "2025-01-02")]);
    import_dir(&importer, &m, ImportMode::UpsertUsers, before.path(), Some(1)).await.unwrap();
    let after = files(&[account(&m, "u1", "a1")], &[transaction(&m, "u1", "a1", "t1", "2025-01-05")]);
    import_dir(&importer, &m, ImportMode::UpsertUsers, after.path(), None).await.unwrap();
    let stored = b.users.get_user(&m, 1, &UserId::parse("u1").unwrap()).await.unwrap().unwrap();
    let dates: Vec<String> = stored.data.accounts[0].transactions.iter().map(|t| t.booking_date.to_string()).collect();
    assert_eq!(dates, ["2025-01-05"]);
}

/// While another import holds the mandator's lock, an import is refused and left as it was.
async fn a_second_import_is_busy_while_the_lock_is_held(b: &Backend) {
    let importer = importer(b);
    let m = unique_mandator("import-busy");
    let running = ImportId::new();
    // Whole seconds: DynamoDB keeps the expiry (its TTL) in seconds.
    let now = Utc::now().trunc_subsecs(0);
    b.imports.lock_mandator(&m, running, now, now + LOCK_LEASE).await.unwrap();
    let dir = files(&[account(&m, "u1", "a1")], &[]);
    let record = ImportRecord::new(m.clone(), ImportMode::UpsertUsers, now);
    b.imports.create_import(&record).await.unwrap();
    let (accounts, transactions) = (dir.path().join("accounts.ndjson"), dir.path().join("transactions.ndjson"));
    let run = importer.run(record.clone(), &accounts, &transactions, &Default::default(), |_| {}).await;
    assert!(matches!(&run, Err(ImportError::Busy { holder: Some(h), .. }) if *h == running), "{run:?}");
    assert_eq!(b.imports.get_import(&m, record.import_id).await.unwrap(), Some(record.clone()));
    assert_eq!(b.users.shard_count(&m).await.unwrap(), None);

    // Once the other one is done, the same import runs.
    b.imports.unlock_mandator(&m, running).await.unwrap();
    let done = importer.run(record, &accounts, &transactions, &Default::default(), |_| {}).await.unwrap();
    assert_eq!(done.counts.users, 1);
}

async fn scenarios(b: Backend) {
    shuffled_files_import_to_exactly_their_users(&b).await;
    a_bad_line_applies_nothing(&b).await;
    the_modes(&b).await;
    a_changed_booking_date_is_stored_once(&b).await;
    a_second_import_is_busy_while_the_lock_is_held(&b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded() {
    scenarios(Backend::embedded()).await;
}

/// One moto server for every scenario: each has its own mandator.
#[tokio::test(flavor = "multi_thread")]
async fn moto() {
    scenarios(Backend::moto().await).await;
}
