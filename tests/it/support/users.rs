//! Account data put in place for a test: items written as whole users, or files imported through
//! the importer as the command line and the import worker run it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use segments_core::domain::records::AccountItem;
use segments_core::domain::{AccountHistory, AccountId, MandatorId, UserData, UserId};
use segments_core::imports::{ImportMode, ImportRecord};
use segments_core::ports::UserStore;
use segments_core::usecases::import::{ImportError, ImportOptions, Importer};
use segments_embedded::EmbeddedStore;

/// Writes `items` into the users they belong to, as writes of single accounts and transactions
/// used to: an account replaces the stored account of its id (its stored transactions stay), a
/// transaction the stored one of its (bookingDate, transactionId), everything else of the user
/// stays. Records the shard count first.
pub async fn put_items(store: &dyn UserStore, mandator: &MandatorId, shard_count: u32, items: &[AccountItem]) {
    store.ensure_shard_count(mandator, shard_count).await.expect("the shard count is recorded");
    let mut users: BTreeMap<UserId, Vec<&AccountItem>> = BTreeMap::new();
    for item in items {
        users.entry(item.user_id().clone()).or_default().push(item);
    }
    for (user_id, items) in users {
        let stored = store.get_user(mandator, shard_count, &user_id).await.expect("the user reads");
        let mut accounts: BTreeMap<AccountId, AccountHistory> = stored
            .iter()
            .flat_map(|s| s.data.accounts.iter())
            .map(|h| (h.account.account_id.clone(), h.clone()))
            .collect();
        for item in items {
            match item {
                AccountItem::Account(account) => {
                    let history = accounts
                        .entry(account.account_id.clone())
                        .or_insert_with(|| AccountHistory { account: account.clone(), transactions: Vec::new() });
                    history.account = account.clone();
                }
                AccountItem::Transaction { account_id, transaction, .. } => {
                    let history = accounts.get_mut(account_id).expect("the account comes before its transactions");
                    let key = (transaction.booking_date, &transaction.transaction_id);
                    history.transactions.retain(|t| (t.booking_date, &t.transaction_id) != key);
                    history.transactions.push(transaction.clone());
                }
            }
        }
        for history in accounts.values_mut() {
            history
                .transactions
                .sort_by(|x, y| (x.booking_date, &x.transaction_id).cmp(&(y.booking_date, &y.transaction_id)));
        }
        let data = UserData { user_id, accounts: accounts.into_values().collect() };
        let expected = stored.map(|s| s.version);
        store.put_user(mandator, shard_count, &data, expected).await.expect("the user is written");
    }
}

/// The importer over the embedded store.
pub fn embedded_importer(store: &EmbeddedStore) -> Importer {
    let store = Arc::new(store.clone());
    Importer { users: store.clone(), imports: store.clone(), segments: store }
}

/// Creates an import of `accounts.ndjson` and `transactions.ndjson` in `dir` and runs it.
pub async fn import_dir(
    importer: &Importer,
    mandator: &MandatorId,
    mode: ImportMode,
    dir: &Path,
    shard_count: Option<u32>,
) -> Result<ImportRecord, ImportError> {
    let record = ImportRecord::new(mandator.clone(), mode, chrono::Utc::now());
    importer.imports.create_import(&record).await.expect("the import is created");
    let options = ImportOptions { shard_count, ..ImportOptions::default() };
    let (accounts, transactions) = (dir.join("accounts.ndjson"), dir.join("transactions.ndjson"));
    importer.run(record, &accounts, &transactions, &options, |_| {}).await
}

/// The importer over provisioned AWS resources (named with `prefix`), creating the Segments table
/// it also writes.
pub async fn aws_importer(
    clients: &segments_aws::AwsClients,
    resources: &segments_aws::AwsResources,
    prefix: &str,
) -> Importer {
    let segments_table = segments_aws::provision::segments_table_name(prefix);
    segments_aws::provision::create_segments_table(&clients.dynamodb, &segments_table)
        .await
        .expect("the Segments table is created");
    segments_aws::importer(clients, resources, &segments_table)
}
