//! Every port's contract (`support/contract.rs`) on both backends (`support/backend.rs`): the
//! embedded store and DynamoDB, S3 and SQS on a local moto server. Each port has a module with
//! one test per backend, so a failure names the port and the store.

use crate::support::backend::Backend;
use crate::support::contract;

on_both_backends!(job_store, |b| contract::job_store_contract(b.jobs.as_ref()));
on_both_backends!(idempotency_keys, |b| contract::idempotency_contract(b.jobs.as_ref()));
on_both_backends!(result_store, |b| contract::result_store_contract(b.results.as_ref()));
on_both_backends!(user_store, |b| contract::user_store_contract(b.users.as_ref()));
on_both_backends!(account_directory, |b| contract::account_directory_contract(b.users.as_ref()));
on_both_backends!(import_store, |b| contract::import_store_contract(b.imports.as_ref()));
on_both_backends!(job_queue, |b| async {
    let mut reader = b.queue_reader.lock().await;
    contract::job_queue_contract(b.queue.as_ref(), reader.as_mut(), b.closed_queue.as_ref()).await;
});
on_both_backends!(segment_store, |b| contract::segment_store_contract(b.segments.as_ref()));
on_both_backends!(job_catalog, |b| contract::job_catalog_contract(b.jobs.as_ref(), b.catalog.as_ref()));
on_both_backends!(result_links, |b| contract::result_links_contract(
    b.results.as_ref(),
    b.links.as_ref(),
    b.opener.as_ref()
));
on_both_backends!(callback_secrets, |b| contract::callback_secrets_contract(
    b.secrets.as_ref(),
    b.secrets_again.as_ref()
));
