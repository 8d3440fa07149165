//! Handler tests over the embedded store, from recorded API Gateway v2 events.

use super::*;
use segments_core::config::ServiceConfig;
use segments_core::http::testing::{ApiRequest, status_and_json};
use segments_core::usecases::segments::refresh::RefreshSettings;
use segments_embedded::wiring::services as embedded_services;
use segments_embedded::{EmbeddedStore, EventFile, LocalRefreshReceiver, refresh_channel};

/// `(method, body, mandator, scopes, status, code)`.
type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [&'a str], u16, &'a str);

const RW: &[&str] = &["segments/definitions.read", "segments/definitions.write"];

/// The receiving ends of the in-process job and refresh queues: held so the queues stay open
/// (nothing here runs their messages).
struct OpenQueues {
    _jobs: tokio::sync::mpsc::UnboundedReceiver<segments_core::jobs::JobMessage>,
    _refreshes: LocalRefreshReceiver,
}

/// The segments services over `store`, publishing to an event file in `dir`.
fn embedded_segments_services(store: EmbeddedStore, dir: &std::path::Path) -> (SegmentsServices, OpenQueues) {
    let (core, jobs) = embedded_services(store.clone(), ServiceConfig::default());
    let events = std::sync::Arc::new(EventFile::in_data_dir(dir).unwrap());
    let (queue, refreshes) = refresh_channel();
    let s = segments_embedded::wiring::segments_api(
        store,
        &core,
        events,
        std::sync::Arc::new(queue),
        RefreshSettings::default(),
    );
    (s, OpenQueues { _jobs: jobs, _refreshes: refreshes })
}

fn services() -> (tempfile::TempDir, SegmentsServices) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (s, _queues) = embedded_segments_services(store, dir.path());
    (dir, s)
}

async fn call(
    s: &SegmentsServices,
    method: &str,
    path: &str,
    params: &[(&'static str, &str)],
    body: Option<&str>,
    mandator: Option<&str>,
    scopes: &[&str],
) -> (u16, serde_json::Value) {
    let request = ApiRequest {
        method,
        path: path.to_owned(),
        route_key: "ANY /v1/{proxy+}",
        path_params: params.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        body: body.map(str::to_owned),
        mandator,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
    .build();
    status_and_json(handle(s, request).await.unwrap())
}

#[tokio::test]
async fn given_a_valid_body_when_posted_then_201_with_location_and_readable() {
    let (_dir, s) = services();
    let org = [("organizationId", "bank-1")];
    let (status, created) =
        call(&s, "POST", "/v1/organizations/bank-1/segments", &org, Some(r#"{"name":"Gold"}"#), Some("bank-1"), RW)
            .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/organizations/bank-1/segments/{id}");
    let (status, got) =
        call(&s, "GET", &path, &[("organizationId", "bank-1"), ("segmentId", id)], None, Some("bank-1"), RW).await;
    assert_eq!((status, got["name"].as_str()), (200, Some("Gold")));
}

#[tokio::test]
async fn refusals_are_problems_with_stable_codes() {
    let (_dir, s) = services();
    let org = [("organizationId", "bank-1")];
    let base = "/v1/organizations/bank-1/segments";
    let cases: &[Case] = &[
        ("POST", Some(r#"{"name":"a"}"#), None, RW, 401, "unauthenticated"),
        ("POST", Some(r#"{"name":"a"}"#), Some("bank-1"), &["segments/definitions.read"], 403, "insufficient_scope"),
        ("GET", None, Some("bank-1"), &["segments/definitions.write"], 403, "insufficient_scope"),
        ("POST", Some(r#"{"name":"a"}"#), Some("bank-2"), RW, 404, "not_found"),
        ("POST", Some(r#"{"name":""}"#), Some("bank-1"), RW, 400, "invalid_field"),
        ("POST", Some("{"), Some("bank-1"), RW, 400, "malformed_body"),
        ("DELETE", None, Some("bank-1"), RW, 405, "method_not_allowed"),
    ];
    for (method, body, mandator, scopes, status, code) in cases {
        let (got, problem) = call(&s, method, base, &org, *body, *mandator, scopes).await;
        assert_eq!((got, problem["code"].as_str()), (*status, Some(*code)), "{method} {body:?}: {problem}");
    }
    // A malformed segment id is a bad parameter; another organization's path answers 404 before
    // its segment id is looked at.
    for (organization, expected) in
        [("bank-1", (400, Some("invalid_parameter"), Some("segmentId"))), ("bank-2", (404, Some("not_found"), None))]
    {
        let path = format!("/v1/organizations/{organization}/segments/not-a-uuid");
        let params = [("organizationId", organization), ("segmentId", "not-a-uuid")];
        let (status, problem) = call(&s, "GET", &path, &params, None, Some("bank-1"), RW).await;
        assert_eq!((status, problem["code"].as_str(), problem["field"].as_str()), expected, "{path}");
    }
}

/// Stores a user of the demo mandator with one checking account.
async fn store_user(store: &EmbeddedStore, user: &str, account: &str) {
    use segments_core::domain::{Account, AccountHistory, AccountId, AccountType, Currency, Money, UserData, UserId};
    use segments_core::ports::UserStore;
    let mandator = segments_core::domain::MandatorId::parse("demo-bank").unwrap();
    let data = UserData {
        user_id: UserId::parse(user).unwrap(),
        accounts: vec![AccountHistory {
            account: Account {
                user_id: UserId::parse(user).unwrap(),
                account_id: AccountId::parse(account).unwrap(),
                account_type: AccountType::Checking,
                currency: Currency::parse("EUR").unwrap(),
                balance: Money::parse("10").unwrap(),
                balance_date: chrono::Utc::now().date_naive(),
            },
            transactions: vec![],
        }],
    };
    store.ensure_shard_count(&mandator, 4).await.unwrap();
    store.put_user(&mandator, 4, &data, None).await.unwrap();
}

#[tokio::test]
async fn the_recorded_events_create_a_dynamic_segment_and_tag_accounts_by_id() {
    use segments_core::domain::segment::{Segment, SegmentId, Status};
    use segments_core::ports::SegmentStore;

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (s, _queues) = embedded_segments_services(store.clone(), dir.path());

    let create = lambda_http::request::from_str(include_str!("../../../events/segments-create-dynamic.json")).unwrap();
    let (status, created) = status_and_json(handle(&s, create).await.unwrap());
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["rule"]["segmentType"], "insuranceSpending");
    assert_eq!(created["organizationId"], "demo-bank");

    // The segment the recorded PUT names, and the accounts of the demo mandator.
    let mandator = segments_core::domain::MandatorId::parse("demo-bank").unwrap();
    let now = chrono::Utc::now();
    let segment = Segment {
        id: SegmentId::parse("0193a7c2-5b1e-7c3d-9f00-5e6f7a8b9c0d").unwrap(),
        mandator: mandator.clone(),
        ledger_id: None,
        name: "Recorded".into(),
        status: Status::default(),
        metadata: Default::default(),
        rule: None,
        last_refresh: None,
        schedule: None,
        next_refresh_at: None,
        callback_url: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    };
    store.create_segment(&segment).await.unwrap();
    let put = include_str!("../../../events/segments-change-accounts.json");

    // acc-0000042-02 is not in the data yet: refused, naming it.
    store_user(&store, "user-0000007", "acc-0000007-01").await;
    let (status, problem) = status_and_json(handle(&s, lambda_http::request::from_str(put).unwrap()).await.unwrap());
    assert_eq!(
        (status, problem["code"].as_str(), problem["field"].as_str()),
        (422, Some("unknown_accounts"), Some("add"))
    );
    assert!(problem["detail"].as_str().unwrap().ends_with(": acc-0000042-02"), "{problem}");

    store_user(&store, "user-0000042", "acc-0000042-02").await;
    let (status, tagged) = status_and_json(handle(&s, lambda_http::request::from_str(put).unwrap()).await.unwrap());
    assert_eq!((status, tagged["memberCount"].as_u64()), (200, Some(2)), "{tagged}");
    let members = store.members(&mandator, segment.id).await.unwrap();
    let members: Vec<(&str, &str)> = members.iter().map(|m| (m.account_id.as_str(), m.user_id.as_str())).collect();
    assert_eq!(members, [("acc-0000007-01", "user-0000007"), ("acc-0000042-02", "user-0000042")]);
}

const READ: &[&str] = &["segments/definitions.read"];

/// A refused feed request: `(path, path parameters, query, the field the 400 names)`.
type Refused<'a> = (&'a str, &'a [(&'static str, &'a str)], &'a [(&'a str, &'a str)], &'a str);
/// What a refresh of an insuranceSpending rule needs: the segment scopes and the type's scope.
const REFRESHER: &[&str] = &["segments/definitions.read", "segments/definitions.write", "segments/insuranceSpending"];

/// `GET path?query` with the path parameters of the feed routes.
async fn get_feed(
    s: &SegmentsServices,
    path: &str,
    params: &[(&'static str, &str)],
    query: &[(&str, &str)],
    scopes: &[&str],
) -> (u16, serde_json::Value) {
    let request = ApiRequest {
        method: "GET",
        path: path.to_owned(),
        route_key: "ANY /v1/{proxy+}",
        path_params: params.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        query: query.to_vec(),
        mandator: Some("demo-bank"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
    .build();
    status_and_json(handle(s, request).await.unwrap())
}

/// A segment of the demo mandator with an insuranceSpending rule; its id.
async fn dynamic_segment(s: &SegmentsServices) -> String {
    let body = r#"{"name":"Insured","rule":{"segmentType":"insuranceSpending","parameters":{"durationInMonth":12}}}"#;
    let org = [("organizationId", "demo-bank")];
    let (status, created) =
        call(s, "POST", "/v1/organizations/demo-bank/segments", &org, Some(body), Some("demo-bank"), RW).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// Stores `n` finished refreshes of `segment`, oldest first, the last with changes of both kinds
/// recorded; their ids, oldest first.
async fn stored_refreshes(store: &EmbeddedStore, segment: &str, n: usize) -> Vec<String> {
    use segments_core::domain::refresh::{ChangeKind, RefreshRecord, RefreshState, RefreshTrigger};
    use segments_core::domain::segment::{AccountRef, Rule, SegmentId};
    use segments_core::domain::{AccountId, JobId, MandatorId, SegmentType, UserId};
    use segments_core::ports::RefreshStore;
    let mandator = MandatorId::parse("demo-bank").unwrap();
    let segment = SegmentId::parse(segment).unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let now = chrono::Utc::now();
        let rule = Rule {
            segment_type: SegmentType::InsuranceSpending,
            parameters: r#"{"durationInMonth":12}"#.to_owned(),
            condition: None,
            account_type: None,
        };
        let (job, trigger, first_look) = (JobId::new(), RefreshTrigger::Manual, chrono::Duration::zero());
        let mut r = RefreshRecord::start(mandator.clone(), segment, job, trigger, rule, now, first_look);
        r.state = RefreshState::Applied;
        r.finished_at = Some(now);
        r.check_at = None;
        store.create_refresh(&r).await.unwrap();
        ids.push(r.id);
        // UUIDv7 ids order by their millisecond: keep each refresh in one of its own.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let last = *ids.last().unwrap();
    let refs = |accounts: &[&str]| -> Vec<AccountRef> {
        accounts
            .iter()
            .map(|a| AccountRef { account_id: AccountId::parse(a).unwrap(), user_id: UserId::parse("user-1").unwrap() })
            .collect()
    };
    store
        .put_changes(&mandator, segment, last, ChangeKind::Entered, &refs(&["acc-3", "acc-1", "acc-2"]))
        .await
        .unwrap();
    store.put_changes(&mandator, segment, last, ChangeKind::Left, &refs(&["acc-9"])).await.unwrap();
    ids.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn the_feed_parameters_are_each_checked_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (s, _queues) = embedded_segments_services(store.clone(), dir.path());
    let id = dynamic_segment(&s).await;
    let refresh = stored_refreshes(&store, &id, 1).await.remove(0);
    let segment_path = format!("/v1/organizations/demo-bank/segments/{id}");
    let list = format!("{segment_path}/refreshes");
    let one = format!("{list}/{refresh}");
    let changes = format!("{one}/changes");
    let seg = [("organizationId", "demo-bank"), ("segmentId", id.as_str())];
    let of_refresh = [("organizationId", "demo-bank"), ("segmentId", id.as_str()), ("refreshId", refresh.as_str())];

    let refused: &[Refused] = &[
        (&list, &seg, &[("limit", "0")], "limit"),
        (&list, &seg, &[("limit", "101")], "limit"),
        (&list, &seg, &[("limit", "ten")], "limit"),
        (&list, &seg, &[("cursor", "")], "cursor"),
        (&list, &seg, &[("cursor", "not-a-refresh-id")], "cursor"),
        (&list, &seg, &[("kind", "entered")], "kind"),
        (&list, &seg, &[("page", "1")], "page"),
        (&one, &of_refresh, &[("limit", "1")], "limit"),
        (&changes, &of_refresh, &[], "kind"),
        (&changes, &of_refresh, &[("kind", "added")], "kind"),
        (&changes, &of_refresh, &[("kind", "Entered")], "kind"),
        (&changes, &of_refresh, &[("kind", "left"), ("limit", "0")], "limit"),
        (&changes, &of_refresh, &[("kind", "left"), ("limit", "1001")], "limit"),
        (&changes, &of_refresh, &[("kind", "left"), ("cursor", "")], "cursor"),
        (&changes, &of_refresh, &[("kind", "left"), ("cursor", "acc,1")], "cursor"),
        (&changes, &of_refresh, &[("kind", "left"), ("sort", "asc")], "sort"),
    ];
    for (path, params, query, field) in refused {
        let (status, problem) = get_feed(&s, path, params, query, READ).await;
        assert_eq!(
            (status, problem["code"].as_str(), problem["field"].as_str()),
            (400, Some("invalid_parameter"), Some(*field)),
            "{path}?{query:?}: {problem}"
        );
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{problem}");
    }

    // The largest pages are taken.
    let (status, page) = get_feed(&s, &list, &seg, &[("limit", "100")], READ).await;
    assert_eq!((status, page["limit"].as_u64()), (200, Some(100)), "{page}");
    let (status, page) = get_feed(&s, &changes, &of_refresh, &[("kind", "entered"), ("limit", "1000")], READ).await;
    assert_eq!((status, page["limit"].as_u64(), page["items"].as_array().map(Vec::len)), (200, Some(1000), Some(3)));

    // A malformed refresh id is a bad parameter, an unknown one is not found.
    let unknown = "0193a7c2-5b1e-7c3d-9f00-5e6f7a8b9c0d";
    for (refresh_id, expected) in [("nope", (400, Some("refreshId"))), (unknown, (404, None))] {
        let path = format!("{list}/{refresh_id}");
        let params = [("organizationId", "demo-bank"), ("segmentId", id.as_str()), ("refreshId", refresh_id)];
        let (status, problem) = get_feed(&s, &path, &params, &[], READ).await;
        assert_eq!((status, problem["field"].as_str()), expected, "{problem}");
    }

    // The feeds are reads: the read scope, and only GET.
    let (status, problem) = get_feed(&s, &list, &seg, &[], &["segments/definitions.write"]).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("insufficient_scope")), "{problem}");
    let (status, problem) = call(&s, "POST", &list, &seg, Some("{}"), Some("demo-bank"), RW).await;
    assert_eq!((status, problem["code"].as_str()), (405, Some("method_not_allowed")), "{problem}");
    let (status, problem) = call(&s, "DELETE", &changes, &of_refresh, None, Some("demo-bank"), RW).await;
    assert_eq!((status, problem["code"].as_str()), (405, Some("method_not_allowed")), "{problem}");
    // A path below a refresh other than its changes is no route.
    let (status, problem) = get_feed(&s, &format!("{one}/accounts"), &of_refresh, &[("kind", "entered")], READ).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("no_route")), "{problem}");
}

#[tokio::test]
async fn the_feeds_page_newest_refresh_first_and_changes_by_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (s, _queues) = embedded_segments_services(store.clone(), dir.path());
    let id = dynamic_segment(&s).await;
    let refreshes = stored_refreshes(&store, &id, 3).await;
    let list = format!("/v1/organizations/demo-bank/segments/{id}/refreshes");
    let seg = [("organizationId", "demo-bank"), ("segmentId", id.as_str())];

    // Two pages of two, newest first; the cursor of the first continues it.
    let (status, first) = get_feed(&s, &list, &seg, &[("limit", "2")], READ).await;
    assert_eq!(status, 200, "{first}");
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&first), [refreshes[2].clone(), refreshes[1].clone()]);
    let cursor = first["nextCursor"].as_str().expect("a next page").to_owned();
    let (status, second) = get_feed(&s, &list, &seg, &[("limit", "2"), ("cursor", &cursor)], READ).await;
    assert_eq!((status, ids(&second)), (200, vec![refreshes[0].clone()]), "{second}");
    assert!(second.get("nextCursor").is_none(), "{second}");
    let (_, default_page) = get_feed(&s, &list, &seg, &[], READ).await;
    assert_eq!((default_page["limit"].as_u64(), ids(&default_page).len()), (Some(10), 3));
    let shown = &first["items"][0];
    assert_eq!((shown["status"].as_str(), shown["trigger"].as_str()), (Some("APPLIED"), Some("MANUAL")), "{shown}");

    // One refresh, and its changes by accountId.
    let last = refreshes[2].as_str();
    let of_refresh = [("organizationId", "demo-bank"), ("segmentId", id.as_str()), ("refreshId", last)];
    let (status, one) = get_feed(&s, &format!("{list}/{last}"), &of_refresh, &[], READ).await;
    assert_eq!((status, one["id"].as_str()), (200, Some(last)), "{one}");
    let changes = format!("{list}/{last}/changes");
    let (status, page) = get_feed(&s, &changes, &of_refresh, &[("kind", "entered"), ("limit", "2")], READ).await;
    let accounts = |page: &serde_json::Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|c| c["accountId"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!((status, accounts(&page)), (200, vec!["acc-1".to_owned(), "acc-2".to_owned()]), "{page}");
    assert_eq!(page["items"][0]["userId"], "user-1");
    let cursor = page["nextCursor"].as_str().expect("a next page").to_owned();
    let (_, rest) =
        get_feed(&s, &changes, &of_refresh, &[("kind", "entered"), ("limit", "2"), ("cursor", &cursor)], READ).await;
    assert_eq!(accounts(&rest), ["acc-3"]);
    let (_, left) = get_feed(&s, &changes, &of_refresh, &[("kind", "left")], READ).await;
    assert_eq!((accounts(&left), left["limit"].as_u64()), (vec!["acc-9".to_owned()], Some(100)));
}

#[tokio::test]
async fn a_refresh_starts_once_and_its_changes_wait_for_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (s, _queues) = embedded_segments_services(store.clone(), dir.path());
    store_user(&store, "user-0000007", "acc-0000007-01").await;
    let id = dynamic_segment(&s).await;
    let path = format!("/v1/organizations/demo-bank/segments/{id}/refresh");
    let seg = [("organizationId", "demo-bank"), ("segmentId", id.as_str())];

    // Computing the rule is a job of its type: the type's scope is needed too.
    let (status, problem) = call(&s, "POST", &path, &seg, None, Some("demo-bank"), RW).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("insufficient_scope")), "{problem}");
    let (status, started) = call(&s, "POST", &path, &seg, None, Some("demo-bank"), REFRESHER).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(
        (started["id"].as_str(), started["lastRefresh"]["status"].as_str()),
        (Some(id.as_str()), Some("PENDING"))
    );
    for field in ["entered", "left", "finishedAt", "requestedAt", "jobId", "trigger"] {
        assert!(started["lastRefresh"].get(field).is_some(), "{field}: {started}");
    }
    // The unfinished one is shown again, not a second one started.
    let (status, again) = call(&s, "POST", &path, &seg, None, Some("demo-bank"), REFRESHER).await;
    assert_eq!((status, &again["lastRefresh"]["id"]), (200, &started["lastRefresh"]["id"]), "{again}");

    let refresh = started["lastRefresh"]["id"].as_str().unwrap();
    let changes = format!("/v1/organizations/demo-bank/segments/{id}/refreshes/{refresh}/changes");
    let of_refresh = [("organizationId", "demo-bank"), ("segmentId", id.as_str()), ("refreshId", refresh)];
    let (status, problem) = get_feed(&s, &changes, &of_refresh, &[("kind", "entered")], READ).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("refresh_not_recorded")), "{problem}");
    // The segment read shows the refresh too, and never writes.
    let (status, got) = get_feed(&s, &format!("/v1/organizations/demo-bank/segments/{id}"), &seg, &[], READ).await;
    assert_eq!((status, &got["lastRefresh"]), (200, &started["lastRefresh"]), "{got}");
}

#[test]
fn a_feed_parameter_given_twice_is_refused() {
    let q = vec![("limit".to_owned(), "5".to_owned()), ("limit".to_owned(), "6".to_owned())];
    let e = feed_query(&q, DEFAULT_REFRESH_LIMIT, MAX_REFRESH_LIMIT, false).unwrap_err();
    assert_eq!((e.field.as_str(), e.message.as_str()), ("limit", "must be given at most once"));
}

#[test]
fn the_route_is_read_from_the_front_of_the_path() {
    assert_eq!(segment_tail("/v1/organizations/o/segments/s"), Some(vec![]));
    assert_eq!(
        segment_tail("/v1/organizations/refreshes/ledgers/l/segments/refreshes/refreshes/changes"),
        Some(vec!["refreshes", "changes"])
    );
    assert_eq!(
        segment_tail("/stage/v1/organizations/o/segments/s/refreshes/r/changes"),
        Some(vec!["refreshes", "r", "changes"])
    );
    assert_eq!(segment_tail("/v1/organizations/o/accounts/a/segments"), None);
}
