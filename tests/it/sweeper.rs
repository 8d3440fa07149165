//! No job hangs (docs/jobs.md, "No job hangs"), on both backends with a simulated clock: the
//! sweeper finds live jobs without progress through the stores' index of live jobs, sends their
//! unfinished shards again at most once per deadline, fails a job that never progresses with the
//! reason, a permanent fault in a worker's run fails the job instead of dropping its message, and
//! a callback whose delivery gave up is delivered from the outbox once its receiver is back.

use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use segments_core::config::ServiceConfig;
use segments_core::domain::records::AccountItem;
use segments_core::domain::{Account, AccountId, AccountType, Currency, MandatorId, Money, SegmentType, UserId};
use segments_core::jobs::{Job, JobMessage, JobStatus, ProgressWatch, ResultSummary};
use segments_core::ports::AccountSource;
use segments_core::rules::SegmentRequest;
use segments_core::usecases::callbacks::{CallbackPolicy, Callbacks};
use segments_core::usecases::run_shard::{Disposition, process_message};
use segments_core::usecases::sweep::{SweepConfig, SweepReport, sweep};
use segments_core::usecases::{Caller, Services};

use crate::support::backend::Backend;
use crate::support::contract::unique_mandator;
use crate::support::faults::{CrashPoint, FaultPlan, with_faults};
use crate::support::users::put_items;

on_both_backends!(a_job_whose_shard_message_was_never_sent_completes_through_the_sweeper_as_undisturbed, |b| {
    lost_message(b)
});
on_both_backends!(a_job_that_never_progresses_is_sent_again_once_per_deadline_then_failed_with_the_reason, |b| {
    never_progresses(b)
});
on_both_backends!(the_progress_index_holds_live_jobs_only_and_a_watch_changes_once, |b| progress_index(b));
on_both_backends!(a_permanent_fault_in_a_run_fails_the_job_instead_of_dropping_the_message, |b| { permanent_fault(b) });
on_both_backends!(a_callback_receiver_down_for_ten_minutes_gets_the_delivery_once_it_is_back, |b| { receiver_down(b) });

const SHARDS: u32 = 4;
const USERS: usize = 40;
const BODY: &str = r#"{"accountType":"checking","threshold":100}"#;

/// Every port of the backend as the local runner and the Lambdas wire them.
fn services(b: &Backend) -> Services {
    let accounts: Arc<dyn AccountSource> = b.users.clone();
    Services {
        accounts,
        jobs: b.jobs.clone(),
        results: b.results.clone(),
        queue: b.queue.clone(),
        config: ServiceConfig::default(),
        callbacks: Callbacks::http(b.secrets.clone(), CallbackPolicy::strict()),
    }
}

/// A mandator whose users (`user-00` … `user-39`, checking balances of `i × 7.31` EUR, so half of
/// them above 100) are spread over four shards.
async fn mandator_with_data(b: &Backend, label: &str) -> MandatorId {
    let mandator = unique_mandator(label);
    let items: Vec<AccountItem> = (0..USERS)
        .map(|i| {
            AccountItem::Account(Account {
                user_id: UserId::parse(&format!("user-{i:02}")).unwrap(),
                account_id: AccountId::parse(&format!("acc-{i:02}")).unwrap(),
                account_type: AccountType::Checking,
                currency: Currency::parse("EUR").unwrap(),
                balance: Money::from_cents(i as i64 * 731),
                balance_date: chrono::NaiveDate::from_ymd_opt(2024, 1, 31).unwrap(),
            })
        })
        .collect();
    put_items(b.users.as_ref(), &mandator, SHARDS, &items).await;
    mandator
}

/// Creates a highBalance job through the use case, as `POST` does, at `now`.
async fn create(s: &Services, mandator: &MandatorId, now: DateTime<Utc>) -> Job {
    let caller = Caller { mandator: mandator.clone(), scopes: Default::default() };
    segments_core::usecases::create_job::create_job(
        &s.intake(),
        &caller,
        SegmentType::HighBalance,
        BODY.as_bytes(),
        now,
    )
    .await
    .expect("the job is created")
}

/// Takes `n` messages from the queue, ordered by shard.
async fn take(b: &Backend, n: usize) -> Vec<JobMessage> {
    let mut messages = b.queue_reader.lock().await.take(n).await;
    messages.sort_by_key(|m| (m.job_id, m.shard));
    messages
}

/// Whether the queue holds nothing right now.
async fn queue_is_empty(b: &Backend) -> bool {
    b.queue_reader.lock().await.drain().await.is_empty()
}

async fn deliver(s: &Services, message: &JobMessage) -> Disposition {
    let body = serde_json::to_string(message).unwrap();
    process_message(&s.runner(), message.segment_type, &body, 1, Utc::now()).await
}

async fn job(s: &Services, of: &Job) -> Job {
    s.jobs.get(&of.mandator_id, of.job_id).await.unwrap().expect("the job exists")
}

async fn export(s: &Services, job: &Job) -> String {
    let bytes = s.results.get(&job.layout().export_key()).await.unwrap().expect("the export is written");
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn sweep_at(s: &Services, now: DateTime<Utc>) -> SweepReport {
    sweep(&s.sweeper(SweepConfig::default()), now).await.expect("the sweep reads the stalled jobs")
}

/// Two jobs of the same request: one run undisturbed, one whose shard-2 message is lost. A sweep
/// within the deadline does nothing; the first sweep past it sees the three recorded shards as
/// progress; the next, a deadline later, sends shard 2 alone again, and the job completes with
/// the same result (export, summary) as the undisturbed one.
async fn lost_message(b: Backend) {
    let s = services(&b);
    let mandator = mandator_with_data(&b, "sweep-lost").await;
    let t0 = Utc::now();

    let undisturbed = create(&s, &mandator, t0).await;
    for message in take(&b, SHARDS as usize).await {
        assert_eq!(deliver(&s, &message).await, Disposition::Ack);
    }
    let undisturbed = job(&s, &undisturbed).await;
    assert_eq!(undisturbed.status, JobStatus::Completed, "{undisturbed:?}");

    let disturbed = create(&s, &mandator, t0).await;
    let mut messages = take(&b, SHARDS as usize).await;
    let lost = messages.remove(2);
    for message in &messages {
        assert_eq!(deliver(&s, message).await, Disposition::Ack);
    }
    assert_eq!(job(&s, &disturbed).await.status, JobStatus::Running);

    let deadline = SweepConfig::default().progress_deadline;
    let report = sweep_at(&s, t0 + deadline - Duration::seconds(1)).await;
    assert_eq!(report, SweepReport::default(), "nothing is stalled before its deadline");
    let report = sweep_at(&s, t0 + deadline).await;
    assert_eq!((report.stalled, report.progressing, report.resent), (1, 1, 0), "{report:?}");
    assert!(queue_is_empty(&b).await, "a job that progressed gets nothing again");

    let report = sweep_at(&s, t0 + deadline * 2).await;
    assert_eq!((report.stalled, report.resent), (1, 1), "{report:?}");
    let resent = take(&b, 1).await;
    assert_eq!(resent, std::slice::from_ref(&lost), "only the unrecorded shard is sent again");
    assert!(queue_is_empty(&b).await);
    assert_eq!(deliver(&s, &resent[0]).await, Disposition::Ack);

    let completed = job(&s, &disturbed).await;
    assert_eq!(completed.status, JobStatus::Completed, "{completed:?}");
    assert_eq!(completed.result, undisturbed.result);
    let above_100 = (0..USERS as i64).filter(|i| i * 731 > 10_000).count() as u64;
    assert_eq!(completed.result.map(|r| r.total_elements), Some(above_100), "balances above 100");
    assert_eq!(export(&s, &completed).await, export(&s, &undisturbed).await);
    // A completed job leaves the index: later sweeps find nothing.
    assert_eq!(sweep_at(&s, t0 + deadline * 10).await, SweepReport::default());
}

/// A job whose messages never arrive: each deadline without progress sends its two shards again
/// (a sweep in between, or a second sweep at the same moment, sends nothing more); after the
/// configured re-sends the next sweep fails it with the reason.
async fn never_progresses(b: Backend) {
    let s = services(&b);
    let mandator = mandator_with_data(&b, "sweep-never").await;
    let t0 = Utc::now();
    let stuck = create(&s, &mandator, t0).await;
    assert_eq!(take(&b, SHARDS as usize).await.len(), SHARDS as usize, "the messages are lost");

    let config = SweepConfig::default();
    let mut at = t0;
    for resend in 1..=config.max_resends {
        at += config.progress_deadline;
        let (first, second) = futures::join!(sweep_at(&s, at), sweep_at(&s, at));
        assert_eq!(first.resent + second.resent, 1, "resend {resend}: one of two concurrent sweeps acts");
        let messages = take(&b, SHARDS as usize).await;
        assert_eq!(messages, stuck.messages(), "resend {resend}: every unfinished shard, once");
        assert!(queue_is_empty(&b).await, "resend {resend}: nothing more");
        let between = sweep_at(&s, at + config.progress_deadline / 2).await;
        assert_eq!(between.resent, 0, "at most once per deadline");
        assert_eq!(job(&s, &stuck).await.status, JobStatus::Queued);
    }
    let report = sweep_at(&s, at + config.progress_deadline).await;
    assert_eq!(report.failed, 1, "{report:?}");
    let failed = job(&s, &stuck).await;
    assert_eq!(failed.status, JobStatus::Failed);
    let reason = failed.error.unwrap_or_default();
    assert!(reason.starts_with("no progress for 80 minutes: 0 of 4 shards done"), "{reason}");
    assert!(queue_is_empty(&b).await);
    assert_eq!(s.jobs.live_jobs(&mandator, 10).await.unwrap(), 0, "the failed job is no longer live");
    assert_eq!(sweep_at(&s, at + config.progress_deadline * 5).await, SweepReport::default());
}

/// The stores' side: `stalled_jobs` reads live jobs whose watch is older than the bound, none
/// other; `replace_watch` changes a watch only from the one stored, and never a final job's.
async fn progress_index(b: Backend) {
    let mandator = unique_mandator("sweep-index");
    let request = SegmentRequest::parse(SegmentType::HighBalance, BODY.as_bytes(), Utc::now().date_naive()).unwrap();
    // Whole seconds, as the stores keep a watch's time.
    let t0 = (Utc::now() - Duration::hours(1)).trunc_subsecs(0);
    let new_job = |at: DateTime<Utc>| Job::new(mandator.clone(), request.as_of, request.params.clone(), None, 2, at);
    let (live, completed, failed) = (new_job(t0), new_job(t0), new_job(t0));
    let later = new_job(t0 + Duration::minutes(30));
    for job in [&live, &completed, &failed, &later] {
        b.jobs.create(job).await.unwrap();
    }
    let summary = ResultSummary { total_elements: 0, chunk_size: 1000, chunk_count: 0 };
    assert!(b.jobs.complete(&completed, summary).await.unwrap());
    assert!(b.jobs.fail(&mandator, failed.job_id, "given up").await.unwrap());

    let ids = |watches: Vec<ProgressWatch>| -> Vec<_> { watches.into_iter().map(|w| w.job_id).collect() };
    let stalled = b.jobs.stalled_jobs(t0 + Duration::minutes(10), 100).await.unwrap();
    assert_eq!(stalled, [ProgressWatch::of_new_job(&live)], "live jobs older than the bound only");
    let mut both = ids(b.jobs.stalled_jobs(t0 + Duration::minutes(30), 100).await.unwrap());
    both.sort();
    let mut expected = vec![live.job_id, later.job_id];
    expected.sort();
    assert_eq!(both, expected, "the bound is inclusive");
    assert_eq!(b.jobs.stalled_jobs(t0 + Duration::minutes(30), 1).await.unwrap().len(), 1, "the limit holds");

    let watch = ProgressWatch::of_new_job(&live);
    let next = ProgressWatch { progress_at: t0 + Duration::minutes(20), shards_seen: 1, ..watch.clone() };
    assert!(b.jobs.replace_watch(&watch, &next).await.unwrap());
    assert!(!b.jobs.replace_watch(&watch, &next).await.unwrap(), "a watch changes once from what was read");
    assert_eq!(b.jobs.stalled_jobs(t0 + Duration::minutes(10), 100).await.unwrap(), [], "it moved on");
    assert_eq!(b.jobs.stalled_jobs(t0 + Duration::minutes(20), 100).await.unwrap()[0], next);
    let final_watch = ProgressWatch::of_new_job(&completed);
    let moved = ProgressWatch { idle_sweeps: 1, ..final_watch.clone() };
    assert!(!b.jobs.replace_watch(&final_watch, &moved).await.unwrap(), "a final job has no watch");
    assert!(b.jobs.fail(&mandator, live.job_id, "given up").await.unwrap());
    assert!(!b.jobs.replace_watch(&next, &watch).await.unwrap());
    assert_eq!(ids(b.jobs.stalled_jobs(t0 + Duration::hours(2), 100).await.unwrap()), [later.job_id]);
}

/// A run whose job store answers data that cannot be decoded (no retry mends it): the job is
/// FAILED with the reason, then the message is acknowledged; it is never acknowledged while its
/// job stays live.
async fn permanent_fault(b: Backend) {
    let faults = FaultPlan::default();
    let s = with_faults(services(&b), &faults);
    let mandator = mandator_with_data(&b, "sweep-corrupt").await;
    let job_created = create(&s, &mandator, Utc::now()).await;
    let messages = take(&b, SHARDS as usize).await;
    faults.crash_once(CrashPoint::CorruptShardRecord);
    assert_eq!(deliver(&s, &messages[0]).await, Disposition::Ack);
    assert!(faults.all_fired());
    let failed = job(&s, &job_created).await;
    assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
    let reason = failed.error.unwrap_or_default();
    assert!(reason.contains("cannot be decoded"), "{reason}");
    assert_eq!(s.jobs.live_jobs(&mandator, 10).await.unwrap(), 0);
    // The other shards' messages find the job final and do nothing.
    assert_eq!(deliver(&s, &messages[1]).await, Disposition::Ack);
    assert_eq!(job(&s, &job_created).await.status, JobStatus::Failed);
}

/// A receiver on 127.0.0.1 that answers 503 while `down`, and otherwise takes the delivery.
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<std::sync::atomic::AtomicBool>,
    received: Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        async fn hook(
            axum::extract::State(r): axum::extract::State<Receiver>,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            if r.down.load(std::sync::atomic::Ordering::SeqCst) {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE;
            }
            r.received.lock().unwrap().push((headers, body));
            axum::http::StatusCode::NO_CONTENT
        }
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn received(&self) -> Vec<(axum::http::HeaderMap, axum::body::Bytes)> {
        self.received.lock().unwrap().clone()
    }
}

/// A job with a `callbackURL` completes while its receiver is down: the delivery's attempts fail
/// and the callback goes to the outbox. The receiver stays down for 10 minutes: the sweep 5
/// minutes after the failure retries in vain; the one 10 minutes after finds nothing due (the
/// next retry waits 10 minutes); the one at 15 minutes delivers it, signed with the mandator's
/// secret, exactly once, and the outbox is empty afterwards.
async fn receiver_down(b: Backend) {
    use segments_core::usecases::callbacks::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
    use segments_core::usecases::callbacks::{DeliverySettings, HttpNotifier};

    let receiver = Receiver::default();
    let url = receiver.start().await;
    receiver.set_down(true);
    let policy = CallbackPolicy::allow_insecure_loopback_for_tests();
    let settings =
        DeliverySettings { attempts: 2, first_backoff: std::time::Duration::from_millis(10), ..Default::default() };
    let callbacks = Callbacks {
        notifier: Arc::new(HttpNotifier::new(policy, settings)),
        ..Callbacks::http(b.secrets.clone(), policy).with_outbox(b.outbox.clone())
    };
    let s = Services { callbacks, ..services(&b) };
    let mandator = mandator_with_data(&b, "sweep-callback").await;
    let caller = Caller { mandator: mandator.clone(), scopes: Default::default() };
    let body = format!(r#"{{"accountType":"checking","threshold":100,"callbackURL":"{url}"}}"#);
    let created = segments_core::usecases::create_job::create_job(
        &s.intake(),
        &caller,
        SegmentType::HighBalance,
        body.as_bytes(),
        Utc::now(),
    )
    .await
    .expect("the job is created");
    for message in take(&b, SHARDS as usize).await {
        assert_eq!(deliver(&s, &message).await, Disposition::Ack);
    }
    let failed_at = Utc::now();
    assert_eq!(job(&s, &created).await.status, JobStatus::Completed);
    assert!(receiver.received().is_empty());
    let kept = b.outbox.due_callbacks(failed_at + Duration::minutes(6), 10).await.unwrap();
    assert_eq!(kept.len(), 1, "the callback is kept");
    assert_eq!((kept[0].job_id, kept[0].retries, &kept[0].url), (created.job_id, 0, &url));

    let at = |minutes: i64| failed_at + Duration::minutes(minutes) + Duration::seconds(2);
    let report = sweep_at(&s, at(5)).await;
    assert_eq!((report.callbacks.retrying, report.callbacks.delivered), (1, 0), "{report:?}");
    receiver.set_down(false);
    assert_eq!(sweep_at(&s, at(10)).await.callbacks, Default::default(), "the next retry waits 10 minutes");
    let report = sweep_at(&s, at(15)).await;
    assert_eq!(report.callbacks.delivered, 1, "{report:?}");

    let received = receiver.received();
    assert_eq!(received.len(), 1, "delivered once");
    let (headers, delivered) = &received[0];
    let secret = s.callbacks.secrets.secret(&mandator).await.unwrap();
    verify(
        &secret,
        headers[TIMESTAMP_HEADER].to_str().unwrap(),
        headers[SIGNATURE_HEADER].to_str().unwrap(),
        delivered,
        Utc::now().timestamp(),
        300,
    )
    .expect("signed with the mandator's secret");
    let reported: serde_json::Value = serde_json::from_slice(delivered).unwrap();
    assert_eq!(reported["jobId"], created.job_id.to_string());
    assert_eq!(reported["status"], "COMPLETED");
    assert_eq!(reported["totalElements"], 26);
    assert_eq!(sweep_at(&s, at(24 * 60)).await.callbacks, Default::default(), "nothing is left to deliver");
    assert_eq!(receiver.received().len(), 1);
}
