//! The contexts the use cases take, put together from the embedded store: for the local runner
//! and the tests.

use std::sync::Arc;

use segments_core::config::ServiceConfig;
use segments_core::imports::ImportMessage;
use segments_core::jobs::JobMessage;
use segments_core::ports::{EventPublisher, RefreshQueue};
use segments_core::usecases::Services;
use segments_core::usecases::account_data::AccountData;
use segments_core::usecases::callbacks::{CallbackPolicy, Callbacks};
use segments_core::usecases::imports_api::ImportsApi;
use segments_core::usecases::jobs_api::JobsApiServices;
use segments_core::usecases::segments::SegmentsServices;
use segments_core::usecases::segments::refresh::RefreshSettings;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{EmbeddedImportQueue, EmbeddedQueue, EmbeddedStore, LocalLinks};

/// Every port over the embedded store and an in-process queue, whose receiving end is returned
/// for the runner's worker pool. Callbacks go out under the strict policy.
pub fn services(store: EmbeddedStore, config: ServiceConfig) -> (Services, UnboundedReceiver<JobMessage>) {
    let (queue, receiver) = EmbeddedQueue::new();
    let store = Arc::new(store);
    let services = Services {
        accounts: store.clone(),
        jobs: store.clone(),
        results: store.clone(),
        queue: Arc::new(queue),
        config,
        callbacks: Callbacks::http(store.clone(), CallbackPolicy::strict()).with_outbox(store),
    };
    (services, receiver)
}

/// The segments API, the refresh scheduler and the refresh applier over the embedded store (the
/// same store as `core`'s: segments, refreshes and account data), publishing to `events` (the
/// local runner's [`EventFile`](crate::EventFile)) and sending refresh steps to `refresh_queue`
/// (the local runner's [`refresh_channel`](crate::refresh_channel)).
pub fn segments_api(
    store: EmbeddedStore,
    core: &Services,
    events: Arc<dyn EventPublisher>,
    refresh_queue: Arc<dyn RefreshQueue>,
    refresh_settings: RefreshSettings,
) -> SegmentsServices {
    let store = Arc::new(store);
    SegmentsServices {
        intake: core.intake(),
        reader: core.reader(),
        segments: store.clone(),
        refreshes: store.clone(),
        users: store,
        events,
        refresh_queue,
        refresh_settings,
    }
}

/// The data API over the embedded store: its users, account directory and segments.
pub fn account_data(store: EmbeddedStore) -> AccountData {
    let store = Arc::new(store);
    AccountData { users: store.clone(), segments: store }
}

/// The job endpoints over the embedded store (the same store as `core`'s), with links the local
/// runner serves itself.
pub fn jobs_api(store: EmbeddedStore, core: &Services, links: Arc<LocalLinks>) -> JobsApiServices {
    JobsApiServices { jobs: core.jobs.clone(), catalog: Arc::new(store), links, config: core.config.clone() }
}

/// Callbacks with the secrets and the outbox in the embedded store. `policy` is strict unless the
/// caller (a test, or the local runner on an explicit option) decides otherwise.
pub fn callbacks(store: EmbeddedStore, policy: CallbackPolicy) -> Callbacks {
    let outbox = Arc::new(store.clone());
    Callbacks::http(Arc::new(store), policy).with_outbox(outbox)
}

/// The bulk imports over the embedded store, with upload links the local runner serves itself
/// and an in-process import queue, whose receiving end is returned for the runner's import task.
pub fn imports_api(store: EmbeddedStore, links: Arc<LocalLinks>) -> (ImportsApi, UnboundedReceiver<ImportMessage>) {
    let (queue, receiver) = EmbeddedImportQueue::new();
    let store = Arc::new(store);
    let imports = ImportsApi { imports: store.clone(), uploads: links, files: store, queue: Arc::new(queue) };
    (imports, receiver)
}
