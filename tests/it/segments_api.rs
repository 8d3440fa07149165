//! The segments management API end to end through its Lambda handler, against the DynamoDB
//! adapters on a local moto server (real SDK clients over HTTP) and against the embedded store:
//! the same scenarios on both. Each scenario uses its own organizations, so one moto server
//! serves them all; the data is a handful of accounts (moto is slow).

use crate::support::backend::Backend;
use crate::support::flows::{apply_queued_refreshes, run_queued_jobs};
use crate::support::users::{import_dir, put_items};
use chrono::{Datelike, Duration, NaiveDate, Utc};
use lambda_http::Body;
use segments_core::domain::records::AccountItem;
use segments_core::domain::{
    Account, AccountId, AccountType, Currency, MandatorId, Money, SegmentType, Transaction, TransactionId, UserId,
};
use segments_core::http::testing::ApiRequest;
use segments_core::imports::ImportMode;
use segments_core::usecases::Services;
use segments_core::usecases::import::{ImportError, Importer};
use segments_core::usecases::segments::SegmentsServices;
use segments_core::usecases::segments::refresh::{self, ApplyOutcome, RefreshSettings};
use serde_json::{Value, json};

const READ: &str = "segments/definitions.read";
const WRITE: &str = "segments/definitions.write";
const SHARDS: u32 = 4;

struct Env {
    /// The store, its queues and its event publisher.
    b: Backend,
    s: SegmentsServices,
    /// Every job port of the same store: the workers run the refresh jobs with it.
    core: Services,
    importer: Importer,
}

/// An account as a test writes it: `(userId, accountId, type, balance)`, balance dated today.
type AccountRow<'a> = (&'a str, &'a str, AccountType, &'a str);

/// A transaction: `(userId, accountId, transactionId, bookingDate, amount, labels)`.
type TransactionRow<'a> = (&'a str, &'a str, &'a str, NaiveDate, &'a str, &'a [&'a str]);

impl Env {
    fn new(b: Backend) -> Env {
        let s = b.segments_services(RefreshSettings::default());
        let core = b.services();
        let importer = b.importer();
        Env { b, s, core, importer }
    }

    /// Runs the workers of whatever jobs are queued.
    async fn drain(&self) {
        run_queued_jobs(&self.b, &self.core, Utc::now()).await;
    }

    /// What the scheduler and the applier do once the jobs ran: the next look at the unfinished
    /// refreshes hands them to the applier, which applies them.
    async fn apply_refreshes(&self) {
        let look = Utc::now() + self.s.refresh_settings.poll_interval;
        refresh::tick(&self.s, look).await.expect("the tick runs");
        for (m, outcome) in apply_queued_refreshes(&self.b, &self.s, look).await {
            assert_eq!(outcome, ApplyOutcome::Done, "{m:?}");
        }
    }

    /// Writes (or overwrites: writes are upserts) accounts of a mandator.
    async fn accounts(&self, mandator: &str, accounts: &[AccountRow<'_>]) {
        self.data(mandator, accounts, &[]).await;
    }

    /// Writes accounts and their transactions into their users.
    async fn data(&self, mandator: &str, accounts: &[AccountRow<'_>], transactions: &[TransactionRow<'_>]) {
        let mandator = MandatorId::parse(mandator).unwrap();
        let eur = Currency::parse("EUR").unwrap();
        let mut items: Vec<AccountItem> = accounts
            .iter()
            .map(|(u, a, t, b)| {
                AccountItem::Account(Account {
                    user_id: UserId::parse(u).unwrap(),
                    account_id: AccountId::parse(a).unwrap(),
                    account_type: *t,
                    currency: eur,
                    balance: Money::parse(b).unwrap(),
                    balance_date: Utc::now().date_naive(),
                })
            })
            .collect();
        items.extend(transactions.iter().map(|(u, a, id, date, amount, labels)| AccountItem::Transaction {
            user_id: UserId::parse(u).unwrap(),
            account_id: AccountId::parse(a).unwrap(),
            transaction: Transaction {
                transaction_id: TransactionId::parse(id).unwrap(),
                booking_date: *date,
                amount: Money::parse(amount).unwrap(),
                currency: eur,
                counterpart_name: "ACME Versicherung AG".into(),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            },
        }));
        put_items(self.b.users.as_ref(), &mandator, SHARDS, &items).await;
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
        who: (&str, &[&str]),
    ) -> Reply {
        let params = path_params(path);
        let request = ApiRequest {
            method,
            path: path.to_owned(),
            route_key: "ANY /v1/{proxy+}",
            path_params: params.iter().map(|(k, v)| (*k, v.clone())).collect(),
            query: query.to_vec(),
            body: body.map(|b| b.to_string()),
            mandator: Some(who.0),
            scopes: who.1.iter().map(|s| (*s).to_owned()).collect(),
        }
        .build();
        let response = segments_api::handle(&self.s, request).await.unwrap();
        let status = response.status().as_u16();
        let total = response.headers().get("x-total-count").map(|v| v.to_str().unwrap().to_owned());
        let body = match response.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap(),
            _ => Value::Null,
        };
        Reply { status, body, total }
    }

    /// A request that must be refused with 400 and `code`, naming `field`.
    async fn refused(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
        org: &str,
        (code, field): (&str, &str),
    ) {
        let what = format!("{method} {path} {query:?} {body:?}");
        let r = self.call(method, path, query, body, rw(org)).await;
        assert_eq!(r.status, 400, "{what}: {:?}", r.body);
        assert_eq!(r.body["code"].as_str(), Some(code), "{what}: {:?}", r.body);
        assert_eq!(r.body["field"].as_str(), Some(field), "{what}: {:?}", r.body);
        assert_eq!(r.body["status"], 400, "{what}");
    }

    /// The accounts a completed job's result lists, `{accountId, userId}` in accountId order, read
    /// through the public result API.
    async fn job_accounts(&self, org: &str, segment_type: SegmentType, job_id: &str) -> Vec<Value> {
        let result = segments_core::usecases::read_result::get_result(
            &self.s.reader,
            &segments_core::usecases::Caller { mandator: MandatorId::parse(org).unwrap(), scopes: Default::default() },
            segment_type,
            job_id,
            1,
            500,
            Utc::now(),
        )
        .await
        .unwrap();
        let mut found = Vec::new();
        for user in &result.users {
            let v: Value = serde_json::from_str(user.get()).unwrap();
            for a in v["accounts"].as_array().unwrap() {
                found.push((a["accountId"].as_str().unwrap().to_owned(), v["userId"].as_str().unwrap().to_owned()));
            }
        }
        found.sort();
        found.into_iter().map(|(a, u)| json!({"accountId": a, "userId": u})).collect()
    }

    /// Starts a refresh of a dynamic segment, runs its job, lets the scheduler hand it to the
    /// applier and the applier apply it; returns the segment as read after.
    async fn refresh(&self, org: &str, item: &str) -> Value {
        let started = self.call("POST", &format!("{item}/refresh"), &[], None, rw(org)).await;
        assert_eq!(started.status, 202, "{:?}", started.body);
        assert_eq!(started.body["lastRefresh"]["status"], "PENDING");
        self.drain().await;
        // Reads never apply: the job's result waits for the applier.
        let waiting = self.call("GET", item, &[], None, rw(org)).await;
        assert_eq!(waiting.body["lastRefresh"]["status"], "PENDING", "{:?}", waiting.body);
        self.apply_refreshes().await;
        let got = self.call("GET", item, &[], None, rw(org)).await;
        assert_eq!(got.status, 200, "{:?}", got.body);
        assert_eq!(got.body["lastRefresh"]["status"], "APPLIED", "{:?}", got.body);
        assert_eq!(got.body["lastRefresh"]["jobId"], started.body["lastRefresh"]["jobId"]);
        got.body
    }

    /// Who entered and who left in the segment's last refresh, `{accountId, userId}` in accountId
    /// order, read from its change feed.
    async fn changes(&self, org: &str, item: &str, segment: &Value) -> (Value, Value) {
        let refresh_id = segment["lastRefresh"]["id"].as_str().expect("a last refresh");
        let mut out = Vec::new();
        for kind in ["entered", "left"] {
            let path = format!("{item}/refreshes/{refresh_id}/changes");
            let r = self.call("GET", &path, &[("kind", kind), ("limit", "1000")], None, rw(org)).await;
            assert_eq!(r.status, 200, "{kind}: {:?}", r.body);
            assert_eq!(r.body.get("nextCursor"), None, "one page holds them: {:?}", r.body);
            out.push(r.body["items"].clone());
        }
        let left = out.pop().unwrap();
        (out.pop().unwrap(), left)
    }

    /// Every member of a segment, `{accountId, userId}` in accountId order.
    async fn members(&self, org: &str, item: &str) -> Value {
        let r = self.call("GET", &format!("{item}/accounts"), &[("limit", "100")], None, rw(org)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["items"].clone()
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    total: Option<String>,
}

/// The path parameters API Gateway would set for a path of the segments API.
fn path_params(path: &str) -> Vec<(&'static str, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut out = vec![("organizationId", parts[2].to_owned())];
    let mut rest = &parts[3..];
    if rest.first() == Some(&"ledgers") {
        out.push(("ledgerId", rest[1].to_owned()));
        rest = &rest[2..];
    }
    match rest {
        ["segments", "metrics", "count"] => {}
        ["segments", id, rest @ ..] => {
            out.push(("segmentId", (*id).to_owned()));
            if let ["refreshes", refresh, ..] = rest {
                out.push(("refreshId", (*refresh).to_owned()));
            }
        }
        ["accounts", id, ..] => out.push(("accountId", (*id).to_owned())),
        _ => {}
    }
    out
}

/// Read and write scopes plus every segment type's scope (a refresh creates a job of its rule's type).
fn rw(org: &str) -> (&str, &'static [&'static str]) {
    const ALL: &[&str] = &[
        READ,
        WRITE,
        "segments/highBalance",
        "segments/lowBalance",
        "segments/incomeSpendingSummary",
        "segments/insuranceSpending",
        "segments/financialBreakdown",
    ];
    (org, ALL)
}

fn names(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect()
}

fn member(account: &str, user: &str) -> Value {
    json!({"accountId": account, "userId": user})
}

// -------------------------------------------------------------------------------------------
// Scenarios

async fn crud_soft_delete_and_name_reuse(env: &Env) {
    let org = "bank-crud";
    let base = format!("/v1/organizations/{org}/segments");
    let ledger = format!("/v1/organizations/{org}/ledgers/ledger-1/segments");
    let created = env
        .call("POST", &base, &[], Some(json!({"name": "VIP", "metadata": {"tier": "gold", "rank": 1}})), rw(org))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let b = &created.body;
    assert_eq!(b["status"], json!({"code": "ACTIVE", "description": null}));
    assert_eq!(
        (b["organizationId"].as_str(), b["ledgerId"].clone(), b["memberCount"].as_u64()),
        (Some(org), Value::Null, Some(0))
    );
    assert_eq!(b["rule"], Value::Null);
    assert_eq!(b["deletedAt"], Value::Null);
    let id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    // Unique per scope, compared exactly.
    let again = env.call("POST", &base, &[], Some(json!({"name": "VIP"})), rw(org)).await;
    assert_eq!((again.status, again.body["code"].as_str()), (409, Some("segment_name_taken")));
    assert_eq!(env.call("POST", &base, &[], Some(json!({"name": "vip"})), rw(org)).await.status, 201);
    assert_eq!(env.call("POST", &base, &[], Some(json!({"name": "V%"})), rw(org)).await.status, 201);
    let in_ledger = env.call("POST", &ledger, &[], Some(json!({"name": "VIP"})), rw(org)).await;
    assert_eq!((in_ledger.status, in_ledger.body["ledgerId"].as_str()), (201, Some("ledger-1")));
    let ledger_id = in_ledger.body["id"].as_str().unwrap().to_owned();
    // Scopes do not mix: the ledger's segment is not found at organization level.
    assert_eq!(env.call("GET", &format!("{base}/{ledger_id}"), &[], None, rw(org)).await.status, 404);
    assert_eq!(env.call("GET", &format!("{ledger}/{ledger_id}"), &[], None, rw(org)).await.status, 200);

    // Metadata merge: omitted leaves it, null removes a key, others are set.
    let item = format!("{base}/{id}");
    let p = env
        .call("PATCH", &item, &[], Some(json!({"status": {"code": "PENDING", "description": "review"}})), rw(org))
        .await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["metadata"], json!({"tier": "gold", "rank": 1}));
    assert_eq!(p.body["status"], json!({"code": "PENDING", "description": "review"}));
    let p = env
        .call("PATCH", &item, &[], Some(json!({"metadata": {"tier": null, "region": "EU", "ok": true}})), rw(org))
        .await;
    assert_eq!(p.body["metadata"], json!({"rank": 1, "region": "EU", "ok": true}));
    assert_ne!(p.body["updatedAt"], p.body["createdAt"]);
    let renamed = env.call("PATCH", &item, &[], Some(json!({"name": "vip"})), rw(org)).await;
    assert_eq!((renamed.status, renamed.body["code"].as_str()), (409, Some("segment_name_taken")));
    let bad = env.call("PATCH", &item, &[], Some(json!({"status": {"code": ""}})), rw(org)).await;
    assert_eq!((bad.status, bad.body["field"].as_str()), (400, Some("status.code")));
    // Any other code of up to 100 characters is taken and kept as written (as Midaz does).
    let custom = env.call("PATCH", &item, &[], Some(json!({"status": {"code": "UNDER_REVIEW"}})), rw(org)).await;
    assert_eq!((custom.status, custom.body["status"]["code"].as_str()), (200, Some("UNDER_REVIEW")));
    let listed = env.call("GET", &base, &[("status", "UNDER_REVIEW")], None, rw(org)).await;
    assert_eq!(listed.body["totalCount"], 1, "{:?}", listed.body);
    let back = env.call("PATCH", &item, &[], Some(json!({"status": {"code": "ACTIVE"}})), rw(org)).await;
    assert_eq!(back.status, 200);
    let got = env.call("GET", &item, &[], None, rw(org)).await;
    assert_eq!((got.status, got.body["name"].as_str()), (200, Some("VIP")));

    // Soft delete: hidden from reads, the name is free again.
    assert_eq!(env.call("DELETE", &item, &[], None, rw(org)).await.status, 204);
    assert_eq!(env.call("GET", &item, &[], None, rw(org)).await.status, 404);
    assert_eq!(env.call("PATCH", &item, &[], Some(json!({"name": "x"})), rw(org)).await.status, 404);
    assert_eq!(env.call("DELETE", &item, &[], None, rw(org)).await.status, 404);
    let list = env.call("GET", &base, &[], None, rw(org)).await;
    assert!(!names(&list.body).contains(&"VIP".to_owned()));
    let reused = env.call("POST", &base, &[], Some(json!({"name": "VIP"})), rw(org)).await;
    assert_eq!(reused.status, 201);
    assert_ne!(reused.body["id"].as_str(), Some(id.as_str()));
    // Renaming frees the old name too.
    let rid = reused.body["id"].as_str().unwrap();
    assert_eq!(
        env.call("PATCH", &format!("{base}/{rid}"), &[], Some(json!({"name": "VIP2"})), rw(org)).await.status,
        200
    );
    assert_eq!(env.call("POST", &base, &[], Some(json!({"name": "VIP"})), rw(org)).await.status, 201);

    // Scopes of the token.
    let read_only = env.call("POST", &base, &[], Some(json!({"name": "R"})), (org, &[READ])).await;
    assert_eq!((read_only.status, read_only.body["code"].as_str()), (403, Some("insufficient_scope")));
    assert_eq!(env.call("GET", &base, &[], None, (org, &[WRITE])).await.status, 403);
    assert_eq!(env.call("GET", &base, &[], None, (org, &[READ])).await.status, 200);
}

async fn concurrent_creates_one_wins(env: &Env) {
    let org = "bank-race";
    let base = format!("/v1/organizations/{org}/segments");
    let calls = (0..8).map(|_| env.call("POST", &base, &[], Some(json!({"name": "Only one"})), rw(org)));
    let statuses: Vec<u16> = futures::future::join_all(calls).await.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 7, "{statuses:?}");
    let list = env.call("GET", &base, &[], None, rw(org)).await;
    assert_eq!(list.body["totalCount"], 1);
}

/// Every list filter, both sort orders and paging, at organization level and at ledger level
/// (scopes do not mix).
async fn filters_and_pagination(env: &Env) {
    let org = "bank-list";
    for base in
        [format!("/v1/organizations/{org}/segments"), format!("/v1/organizations/{org}/ledgers/ledger-7/segments")]
    {
        list_one_scope(env, org, &base).await;
    }
    let ledger_count = env
        .call("HEAD", &format!("/v1/organizations/{org}/ledgers/l9/segments/metrics/count"), &[], None, rw(org))
        .await;
    assert_eq!(ledger_count.total.as_deref(), Some("0"));
}

async fn list_one_scope(env: &Env, org: &str, base: &str) {
    for i in 0..5 {
        let tier = if i % 2 == 0 { "gold" } else { "silver" };
        let r = env
            .call(
                "POST",
                base,
                &[],
                Some(json!({"name": format!("s{i}"), "metadata": {"tier": tier, "n": i, "vip": i == 4}})),
                rw(org),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    // A deleted segment is listed by no filter.
    let gone = env.call("POST", base, &[], Some(json!({"name": "gone", "metadata": {"tier": "gold"}})), rw(org)).await;
    let gone_id = gone.body["id"].as_str().unwrap();
    assert_eq!(env.call("DELETE", &format!("{base}/{gone_id}"), &[], None, rw(org)).await.status, 204);

    let page = env.call("GET", base, &[("limit", "2"), ("page", "2")], None, rw(org)).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        (page.body["page"].as_u64(), page.body["limit"].as_u64(), page.body["totalCount"].as_u64()),
        (Some(2), Some(2), Some(5))
    );
    assert_eq!(names(&page.body), ["s2", "s3"]);
    let past_end = env.call("GET", base, &[("limit", "2"), ("page", "4")], None, rw(org)).await;
    assert_eq!(
        (past_end.status, past_end.body["items"].clone(), past_end.body["totalCount"].as_u64()),
        (200, json!([]), Some(5))
    );
    let default = env.call("GET", base, &[], None, rw(org)).await;
    assert_eq!(default.body["limit"], 10);
    assert_eq!(names(&default.body), ["s0", "s1", "s2", "s3", "s4"]);
    let asc = env.call("GET", base, &[("sort_order", "asc"), ("limit", "3")], None, rw(org)).await;
    assert_eq!(names(&asc.body), ["s0", "s1", "s2"]);
    let desc = env.call("GET", base, &[("sort_order", "desc"), ("limit", "3")], None, rw(org)).await;
    assert_eq!(names(&desc.body), ["s4", "s3", "s2"]);
    let desc2 = env.call("GET", base, &[("sort_order", "DESC"), ("limit", "3"), ("page", "2")], None, rw(org)).await;
    assert_eq!(names(&desc2.body), ["s1", "s0"]);
    let gold = env.call("GET", base, &[("metadata.tier", "gold")], None, rw(org)).await;
    assert_eq!(
        (names(&gold.body), gold.body["totalCount"].as_u64()),
        (vec!["s0".to_owned(), "s2".into(), "s4".into()], Some(3))
    );
    let gold_desc = env.call("GET", base, &[("metadata.tier", "gold"), ("sort_order", "desc")], None, rw(org)).await;
    assert_eq!(names(&gold_desc.body), ["s4", "s2", "s0"]);
    let n = env.call("GET", base, &[("metadata.n", "3")], None, rw(org)).await;
    assert_eq!(names(&n.body), ["s3"]);
    let both = env.call("GET", base, &[("metadata.tier", "gold"), ("metadata.vip", "true")], None, rw(org)).await;
    assert_eq!(names(&both.body), ["s4"]);
    let none = env.call("GET", base, &[("metadata.tier", "bronze")], None, rw(org)).await;
    assert_eq!((none.body["items"].clone(), none.body["totalCount"].as_u64()), (json!([]), Some(0)));
    let today = Utc::now().date_naive();
    let (t, yesterday) = (today.to_string(), (today - Duration::days(1)).to_string());
    let dated = env.call("GET", base, &[("start_date", &yesterday), ("end_date", &t)], None, rw(org)).await;
    assert_eq!(dated.body["totalCount"], 5);
    let dated_desc = env
        .call(
            "GET",
            base,
            &[("start_date", &t), ("end_date", &t), ("sort_order", "desc"), ("metadata.tier", "silver")],
            None,
            rw(org),
        )
        .await;
    assert_eq!(names(&dated_desc.body), ["s3", "s1"]);
    let past = env.call("GET", base, &[("start_date", "2020-01-01"), ("end_date", "2020-01-31")], None, rw(org)).await;
    assert_eq!((past.body["totalCount"].as_u64(), past.body["items"].clone()), (Some(0), json!([])));
    let count = env.call("HEAD", &format!("{base}/metrics/count"), &[("metadata.tier", "silver")], None, rw(org)).await;
    assert_eq!((count.status, count.total.as_deref()), (204, Some("2")));
    let all = env.call("HEAD", &format!("{base}/metrics/count"), &[], None, rw(org)).await;
    assert_eq!(all.total.as_deref(), Some("5"));
}

/// Every validation limit, each refused with 400 naming its field; the limit itself passes.
async fn validation_limits(env: &Env) {
    let org = "bank-limits";
    let base = format!("/v1/organizations/{org}/segments");
    let (body, param) = ("invalid_field", "invalid_parameter");
    let at_limits = json!({
        "name": "n".repeat(256),
        "status": {"code": "PENDING", "description": "d".repeat(256)},
        "metadata": {"k".repeat(100): "v".repeat(2000)}
    });
    let ok = env.call("POST", &base, &[], Some(at_limits), rw(org)).await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    let item = format!("{base}/{}", ok.body["id"].as_str().unwrap());

    // Bodies of POST and PATCH.
    for (method, path) in [("POST", base.as_str()), ("PATCH", item.as_str())] {
        let named = |extra: Value| {
            let mut b = json!({"name": format!("limits {method}")});
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            Some(b)
        };
        env.refused(method, path, &[], Some(json!({"name": "x".repeat(257)})), org, (body, "name")).await;
        env.refused(method, path, &[], Some(json!({"name": "   "})), org, (body, "name")).await;
        let key = "k".repeat(101);
        env.refused(
            method,
            path,
            &[],
            named(json!({"metadata": {key.clone(): 1}})),
            org,
            (body, &format!("metadata.{key}")),
        )
        .await;
        env.refused(method, path, &[], named(json!({"metadata": {"k": "v".repeat(2001)}})), org, (body, "metadata.k"))
            .await;
        env.refused(method, path, &[], named(json!({"metadata": {"k": {"nested": 1}}})), org, (body, "metadata.k"))
            .await;
        env.refused(method, path, &[], named(json!({"metadata": {"k": [1, 2]}})), org, (body, "metadata.k")).await;
        env.refused(method, path, &[], named(json!({"status": {"code": "X".repeat(101)}})), org, (body, "status.code"))
            .await;
        env.refused(method, path, &[], named(json!({"status": {"code": "   "}})), org, (body, "status.code")).await;
        env.refused(
            method,
            path,
            &[],
            named(json!({"status": {"code": "ACTIVE", "description": "d".repeat(257)}})),
            org,
            (body, "status.description"),
        )
        .await;
        env.refused(method, path, &[], named(json!({"colour": "red"})), org, (body, "colour")).await;
    }
    // Nothing of the refused changes was stored.
    let got = env.call("GET", &item, &[], None, rw(org)).await;
    assert_eq!(
        (got.body["name"].as_str().map(str::len), got.body["status"]["code"].as_str()),
        (Some(256), Some("PENDING"))
    );
    assert_eq!(env.call("GET", &base, &[], None, rw(org)).await.body["totalCount"], 1);

    // Query parameters of the list (and of the count).
    for (query, field) in [
        (vec![("start_date", "2025-01-01")], "end_date"),
        (vec![("end_date", "2025-01-31")], "start_date"),
        (vec![("start_date", "2025-02-01"), ("end_date", "2025-01-01")], "end_date"),
        (vec![("start_date", "01.02.2025"), ("end_date", "2025-03-01")], "start_date"),
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "101")], "limit"),
        (vec![("limit", "ten")], "limit"),
        (vec![("page", "0")], "page"),
        (vec![("sort_order", "up")], "sort_order"),
        (vec![("color", "red")], "color"),
    ] {
        env.refused("GET", &base, &query, None, org, (param, field)).await;
    }
    env.refused(
        "HEAD",
        &format!("{base}/metrics/count"),
        &[("start_date", "2025-01-01")],
        None,
        org,
        (param, "end_date"),
    )
    .await;
    let limit = env.call("GET", &base, &[("limit", "100"), ("page", "1")], None, rw(org)).await;
    assert_eq!((limit.status, limit.body["limit"].as_u64()), (200, Some(100)));

    // Membership changes and their paging.
    let accounts = format!("{item}/accounts");
    let many: Vec<String> = (0..1001).map(|i| format!("a{i}")).collect();
    env.refused("PUT", &accounts, &[], Some(json!({"add": many})), org, (body, "add")).await;
    env.refused("PUT", &accounts, &[], Some(json!({"add": many[..600], "remove": many[600..]})), org, (body, "add"))
        .await;
    env.refused("PUT", &accounts, &[], Some(json!({"add": ["a#1"]})), org, (body, "add[0]")).await;
    env.refused(
        "PUT",
        &accounts,
        &[],
        Some(json!({"add": ["a1", {"userId": "u1", "accountId": "a1"}]})),
        org,
        (body, "add[1]"),
    )
    .await;
    env.refused("PUT", &accounts, &[], Some(json!({"remove": "a1"})), org, (body, "remove")).await;
    env.refused("PUT", &accounts, &[], Some(json!({"add": ["a1"], "remove": ["a1"]})), org, (body, "remove")).await;
    env.refused("GET", &accounts, &[("limit", "101")], None, org, (param, "limit")).await;
    env.refused("GET", &accounts, &[("page", "0")], None, org, (param, "page")).await;
    env.refused("GET", &accounts, &[("sort_order", "asc")], None, org, (param, "sort_order")).await;
}

async fn membership_and_tenancy(env: &Env) {
    let org = "bank-members";
    let other = "bank-other";
    env.accounts(
        org,
        &[
            ("u1", "a1", AccountType::Checking, "10"),
            ("u1", "a2", AccountType::Savings, "20"),
            ("u2", "b1", AccountType::Checking, "30"),
        ],
    )
    .await;
    env.accounts(other, &[("u9", "a9", AccountType::Checking, "10")]).await;
    let base = format!("/v1/organizations/{org}/segments");
    let created = env.call("POST", &base, &[], Some(json!({"name": "Tagged"})), rw(org)).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let accounts = format!("{base}/{id}/accounts");

    // Another organization's account and an unknown one are refused, naming them; nothing changes.
    let foreign = env.call("PUT", &accounts, &[], Some(json!({"add": ["a1", "a9", "zz"]})), rw(org)).await;
    assert_eq!((foreign.status, foreign.body["code"].as_str()), (422, Some("unknown_accounts")), "{:?}", foreign.body);
    assert_eq!(foreign.body["field"], "add");
    let detail = foreign.body["detail"].as_str().unwrap();
    assert!(detail.ends_with(": a9, zz"), "{detail}");
    assert_eq!(env.call("GET", &accounts, &[], None, rw(org)).await.body["totalCount"], 0);

    let added = env.call("PUT", &accounts, &[], Some(json!({"add": ["b1", "a2", "a1", "a1"]})), rw(org)).await;
    assert_eq!((added.status, added.body["memberCount"].as_u64()), (200, Some(3)), "{:?}", added.body);
    let page = env.call("GET", &accounts, &[("limit", "2"), ("page", "1")], None, rw(org)).await;
    assert_eq!(page.body["items"], json!([member("a1", "u1"), member("a2", "u1")]));
    assert_eq!(
        (page.body["totalCount"].as_u64(), page.body["limit"].as_u64(), page.body["page"].as_u64()),
        (Some(3), Some(2), Some(1))
    );
    let page2 = env.call("GET", &accounts, &[("limit", "2"), ("page", "2")], None, rw(org)).await;
    assert_eq!(page2.body["items"], json!([member("b1", "u2")]));
    // Adding members again changes nothing.
    let again = env.call("PUT", &accounts, &[], Some(json!({"add": ["a1"]})), rw(org)).await;
    assert_eq!(again.body["memberCount"], 3);

    // An account's segments.
    let second = env.call("POST", &base, &[], Some(json!({"name": "Second"})), rw(org)).await;
    let second_id = second.body["id"].as_str().unwrap().to_owned();
    let ledger = format!("/v1/organizations/{org}/ledgers/ledger-1/segments");
    let in_ledger = env.call("POST", &ledger, &[], Some(json!({"name": "In a ledger"})), rw(org)).await;
    let ledger_id = in_ledger.body["id"].as_str().unwrap().to_owned();
    for path in [format!("{base}/{second_id}/accounts"), format!("{ledger}/{ledger_id}/accounts")] {
        let r = env.call("PUT", &path, &[], Some(json!({"add": ["a1"]})), rw(org)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let of_a1 = format!("/v1/organizations/{org}/accounts/a1/segments");
    let of = env.call("GET", &of_a1, &[], None, rw(org)).await;
    assert_eq!(of.status, 200);
    assert_eq!(of.body["totalCount"], 3);
    let seen: Vec<(String, String, String)> = of.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["segment"]["name"].as_str().unwrap().to_owned(),
                i["accountId"].as_str().unwrap().to_owned(),
                i["userId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // In creation order of the segments.
    assert_eq!(
        seen,
        [("Tagged", "a1", "u1"), ("Second", "a1", "u1"), ("In a ledger", "a1", "u1")].map(|(s, a, u)| (
            s.to_owned(),
            a.to_owned(),
            u.to_owned()
        ))
    );
    let paged = env.call("GET", &of_a1, &[("limit", "1"), ("page", "3")], None, rw(org)).await;
    assert_eq!(paged.body["items"][0]["segment"]["name"], "In a ledger");
    let of_b1 = env.call("GET", &format!("/v1/organizations/{org}/accounts/b1/segments"), &[], None, rw(org)).await;
    assert_eq!(of_b1.body["items"][0]["segment"]["id"], id.as_str());
    let of_unknown =
        env.call("GET", &format!("/v1/organizations/{org}/accounts/nope/segments"), &[], None, rw(org)).await;
    assert_eq!((of_unknown.status, of_unknown.body["totalCount"].as_u64()), (200, Some(0)));

    // Remove (a non-member and an unknown id too: idempotent).
    let removed = env.call("PUT", &accounts, &[], Some(json!({"remove": ["a2", "zz"], "add": []})), rw(org)).await;
    assert_eq!((removed.status, removed.body["memberCount"].as_u64()), (200, Some(2)));
    assert_eq!(env.members(org, &format!("{base}/{id}")).await, json!([member("a1", "u1"), member("b1", "u2")]));
    let swap = env.call("PUT", &accounts, &[], Some(json!({"remove": ["a1"], "add": ["a2"]})), rw(org)).await;
    assert_eq!(swap.status, 200);
    assert_eq!(env.members(org, &format!("{base}/{id}")).await, json!([member("a2", "u1"), member("b1", "u2")]));
    // A deleted segment leaves the account's segments.
    assert_eq!(env.call("DELETE", &format!("{base}/{second_id}"), &[], None, rw(org)).await.status, 204);
    let of = env.call("GET", &of_a1, &[], None, rw(org)).await;
    assert_eq!(of.body["totalCount"], 1);
    assert_eq!(of.body["items"][0]["segment"]["name"], "In a ledger");
    assert_eq!(env.call("GET", &format!("{base}/{second_id}/accounts"), &[], None, rw(org)).await.status, 404);

    // INACTIVE and SUSPENDED segments cannot be tagged; PENDING and ACTIVE can.
    for code in ["INACTIVE", "SUSPENDED"] {
        env.call("PATCH", &format!("{base}/{id}"), &[], Some(json!({"status": {"code": code}})), rw(org)).await;
        let r = env.call("PUT", &accounts, &[], Some(json!({"add": ["a1"]})), rw(org)).await;
        assert_eq!((r.status, r.body["code"].as_str()), (422, Some("segment_not_taggable")), "{code}");
        assert_eq!(r.body["field"], "status.code");
    }
    env.call("PATCH", &format!("{base}/{id}"), &[], Some(json!({"status": {"code": "PENDING"}})), rw(org)).await;
    assert_eq!(env.call("PUT", &accounts, &[], Some(json!({"add": ["a1"]})), rw(org)).await.status, 200);

    // Tenant isolation: another organization's token sees nothing, and cannot name this one.
    let item = format!("{base}/{id}");
    for (method, path, body) in [
        ("GET", item.clone(), None),
        ("PATCH", item.clone(), Some(json!({"name": "x"}))),
        ("DELETE", item.clone(), None),
        ("GET", accounts.clone(), None),
        ("PUT", accounts.clone(), Some(json!({"add": []}))),
        ("POST", format!("{item}/refresh"), None),
        ("GET", base.clone(), None),
        ("POST", base.clone(), Some(json!({"name": "intruder"}))),
        ("HEAD", format!("{base}/metrics/count"), None),
        ("GET", of_a1.clone(), None),
    ] {
        let r = env.call(method, &path, &[], body, rw(other)).await;
        assert_eq!(r.status, 404, "{method} {path}");
    }
    // Its own path with this organization's segment id: 404 as for any unknown id.
    let own_path = env.call("GET", &format!("/v1/organizations/{other}/segments/{id}"), &[], None, rw(other)).await;
    assert_eq!((own_path.status, own_path.body["code"].as_str()), (404, Some("not_found")));
    let own_accounts = env
        .call(
            "PUT",
            &format!("/v1/organizations/{other}/segments/{id}/accounts"),
            &[],
            Some(json!({"add": ["a9"]})),
            rw(other),
        )
        .await;
    assert_eq!(own_accounts.status, 404);
    let of_there =
        env.call("GET", &format!("/v1/organizations/{other}/accounts/a1/segments"), &[], None, rw(other)).await;
    assert_eq!((of_there.status, of_there.body["totalCount"].as_u64()), (200, Some(0)));
    assert_eq!(env.call("GET", &item, &[], None, rw(org)).await.status, 200);
    assert_eq!(env.members(org, &item).await, json!([member("a1", "u1"), member("a2", "u1"), member("b1", "u2")]));
}

/// A highBalance segment refreshed twice, the balances and accounts changing in between: each
/// refresh reports exactly who entered and who left, and the membership follows.
async fn dynamic_segment_refreshed_twice_over_changed_data(env: &Env) {
    let org = "bank-dynamic";
    env.accounts(
        org,
        &[
            ("u1", "a1", AccountType::Checking, "9000"),
            ("u2", "a2", AccountType::Checking, "100"),
            ("u3", "a3", AccountType::Checking, "7000"),
            ("u3", "a4", AccountType::Checking, "12000.50"),
            ("u4", "a5", AccountType::Savings, "50000"),
        ],
    )
    .await;
    let base = format!("/v1/organizations/{org}/segments");
    let rule = json!({"segmentType": "highBalance", "parameters": {"accountType": "checking", "threshold": 5000}});
    let bad_rule = json!({"segmentType": "highBalance", "parameters": {"accountType": "checking"}});
    let bad = env.call("POST", &base, &[], Some(json!({"name": "Rich", "rule": bad_rule})), rw(org)).await;
    assert_eq!((bad.status, bad.body["field"].as_str()), (400, Some("rule.parameters.threshold")));
    let created = env.call("POST", &base, &[], Some(json!({"name": "Rich", "rule": rule})), rw(org)).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!((created.body["rule"].clone(), created.body["lastRefresh"].clone()), (rule, Value::Null));
    let id = created.body["id"].as_str().unwrap().to_owned();
    let item = format!("{base}/{id}");
    // A member the rule will not keep.
    let tagged = env.call("PUT", &format!("{item}/accounts"), &[], Some(json!({"add": ["a2"]})), rw(org)).await;
    assert_eq!(tagged.status, 200);

    let no_type_scope = env.call("POST", &format!("{item}/refresh"), &[], None, (org, &[READ, WRITE])).await;
    assert_eq!((no_type_scope.status, no_type_scope.body["code"].as_str()), (403, Some("insufficient_scope")));
    let started = env.call("POST", &format!("{item}/refresh"), &[], None, rw(org)).await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    let job_id = started.body["lastRefresh"]["jobId"].as_str().unwrap().to_owned();
    // Still pending: asking again starts nothing new (200 with the unfinished refresh), reading
    // shows it pending.
    let again = env.call("POST", &format!("{item}/refresh"), &[], None, rw(org)).await;
    assert_eq!((again.status, again.body["lastRefresh"]["jobId"].as_str()), (200, Some(job_id.as_str())));
    let pending = env.call("GET", &item, &[], None, rw(org)).await;
    assert_eq!(
        (pending.body["lastRefresh"]["status"].as_str(), pending.body["memberCount"].as_u64()),
        (Some("PENDING"), Some(1))
    );

    // The job completes; reading applies nothing, the applier does.
    env.drain().await;
    let unapplied = env.call("GET", &item, &[], None, rw(org)).await.body;
    assert_eq!(
        (unapplied["lastRefresh"]["status"].as_str(), unapplied["memberCount"].as_u64()),
        (Some("PENDING"), Some(1))
    );
    env.apply_refreshes().await;
    let first = env.call("GET", &item, &[], None, rw(org)).await.body;
    let refresh = &first["lastRefresh"];
    assert_eq!(
        (refresh["status"].as_str(), refresh["jobId"].as_str()),
        (Some("APPLIED"), Some(job_id.as_str())),
        "{refresh}"
    );
    assert!(refresh["finishedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!((refresh["entered"].as_u64(), refresh["left"].as_u64()), (Some(3), Some(1)));
    let expected = json!([member("a1", "u1"), member("a3", "u3"), member("a4", "u3")]);
    assert_eq!(Value::Array(env.job_accounts(org, SegmentType::HighBalance, &job_id).await), expected);
    assert_eq!(env.changes(org, &item, &first).await, (expected.clone(), json!([member("a2", "u2")])));
    assert_eq!(env.members(org, &item).await, expected);
    assert_eq!(first["memberCount"], 3);
    // Applying again applies nothing twice.
    env.apply_refreshes().await;
    let reread = env.call("GET", &item, &[], None, rw(org)).await;
    assert_eq!(reread.body["lastRefresh"], first["lastRefresh"]);
    assert_eq!(env.members(org, &item).await, expected);

    // The data changes: a1 falls below the threshold, a4 to exactly it (not above), a2 rises
    // above it, a new account a6 of a new user is above it; a5 (savings) is tagged by hand.
    env.accounts(
        org,
        &[
            ("u1", "a1", AccountType::Checking, "4999.99"),
            ("u2", "a2", AccountType::Checking, "5000.01"),
            ("u3", "a4", AccountType::Checking, "5000"),
            ("u5", "a6", AccountType::Checking, "6000"),
        ],
    )
    .await;
    let by_hand = env.call("PUT", &format!("{item}/accounts"), &[], Some(json!({"add": ["a5"]})), rw(org)).await;
    assert_eq!(by_hand.body["memberCount"], 4);

    let second = env.refresh(org, &item).await;
    let refresh = &second["lastRefresh"];
    assert_ne!(refresh["jobId"], first["lastRefresh"]["jobId"]);
    assert_eq!(
        env.changes(org, &item, &second).await,
        (
            json!([member("a2", "u2"), member("a6", "u5")]),
            json!([member("a1", "u1"), member("a4", "u3"), member("a5", "u4")])
        )
    );
    assert_eq!((refresh["entered"].as_u64(), refresh["left"].as_u64()), (Some(2), Some(3)));
    let expected = json!([member("a2", "u2"), member("a3", "u3"), member("a6", "u5")]);
    let job = refresh["jobId"].as_str().unwrap();
    assert_eq!(Value::Array(env.job_accounts(org, SegmentType::HighBalance, job).await), expected);
    assert_eq!(env.members(org, &item).await, expected);
    assert_eq!(second["memberCount"], 3);
    // The account's segments follow the membership.
    let of = |a: &str| format!("/v1/organizations/{org}/accounts/{a}/segments");
    assert_eq!(env.call("GET", &of("a1"), &[], None, rw(org)).await.body["totalCount"], 0);
    assert_eq!(env.call("GET", &of("a6"), &[], None, rw(org)).await.body["items"][0]["userId"], "u5");

    // A third refresh over unchanged data: nobody enters or leaves.
    let third = env.refresh(org, &item).await;
    assert_ne!(third["lastRefresh"]["jobId"], second["lastRefresh"]["jobId"]);
    assert_eq!((third["lastRefresh"]["entered"].as_u64(), third["lastRefresh"]["left"].as_u64()), (Some(0), Some(0)));
    assert_eq!(env.changes(org, &item, &third).await, (json!([]), json!([])));
    assert_eq!(env.members(org, &item).await, expected);

    // A segment without a rule has nothing to refresh; an INACTIVE one is not refreshed.
    let plain = env.call("POST", &base, &[], Some(json!({"name": "Plain"})), rw(org)).await;
    let r =
        env.call("POST", &format!("{base}/{}/refresh", plain.body["id"].as_str().unwrap()), &[], None, rw(org)).await;
    assert_eq!((r.status, r.body["code"].as_str()), (422, Some("segment_has_no_rule")));
    env.call("PATCH", &item, &[], Some(json!({"status": {"code": "INACTIVE"}})), rw(org)).await;
    let r = env.call("POST", &format!("{item}/refresh"), &[], None, rw(org)).await;
    assert_eq!((r.status, r.body["code"].as_str()), (422, Some("segment_not_taggable")));
}

/// A rule of every segment type whose result lists accounts; financialBreakdown needs a condition.
async fn rules_of_every_type(env: &Env) {
    let org = "bank-rules";
    let today = Utc::now().date_naive();
    let this_month = today.with_day(1).unwrap();
    let last_month = (this_month - Duration::days(1)).with_day(1).unwrap();
    let last_month_end = this_month - Duration::days(1);
    let mid_last_month = last_month + Duration::days(9);
    env.data(
        org,
        &[
            ("u1", "c1", AccountType::Checking, "50"),
            ("u1", "c2", AccountType::Checking, "500"),
            ("u2", "d1", AccountType::Checking, "1000"),
            ("u3", "e1", AccountType::Savings, "300"),
        ],
        &[
            ("u2", "d1", "t1", mid_last_month, "200", &["SALARY"]),
            ("u3", "e1", "t1", mid_last_month, "-45.67", &["INSURANCE", "CARINSURANCE"]),
        ],
    )
    .await;
    let base = format!("/v1/organizations/{org}/segments");
    let (from, to) = (last_month.to_string(), last_month_end.to_string());
    let cases = [
        (SegmentType::HighBalance, json!({"accountType": "checking", "threshold": 900}), json!([member("d1", "u2")])),
        (SegmentType::LowBalance, json!({"threshold": 100, "durationInMonth": 1}), json!([member("c1", "u1")])),
        (
            SegmentType::IncomeSpendingSummary,
            json!({"dateFrom": from, "dateTo": to}),
            json!([member("d1", "u2"), member("e1", "u3")]),
        ),
        (SegmentType::InsuranceSpending, json!({"durationInMonth": 12}), json!([member("e1", "u3")])),
    ];
    for (segment_type, parameters, expected) in cases {
        let rule = json!({"segmentType": segment_type.as_str(), "parameters": parameters});
        let created =
            env.call("POST", &base, &[], Some(json!({"name": segment_type.as_str(), "rule": rule})), rw(org)).await;
        assert_eq!(created.status, 201, "{segment_type}: {:?}", created.body);
        assert_eq!(created.body["rule"], rule);
        let item = format!("{base}/{}", created.body["id"].as_str().unwrap());
        let got = env.refresh(org, &item).await;
        let job = got["lastRefresh"]["jobId"].as_str().unwrap();
        // Membership = every account the job's result lists, exactly.
        assert_eq!(Value::Array(env.job_accounts(org, segment_type, job).await), expected, "{segment_type}");
        assert_eq!(env.changes(org, &item, &got).await, (expected.clone(), json!([])), "{segment_type}");
        assert_eq!(env.members(org, &item).await, expected, "{segment_type}");
    }

    // financialBreakdown lists label groups, not accounts: its rule needs a condition that says
    // whose accounts are selected; without one it is refused, on create and patch.
    let breakdown =
        json!({"segmentType": "financialBreakdown", "parameters": {"labelGroups": ["RENT"], "durationInMonth": 3}});
    let refused = env.call("POST", &base, &[], Some(json!({"name": "Breakdown", "rule": breakdown})), rw(org)).await;
    assert_eq!((refused.status, refused.body["field"].as_str()), (400, Some("rule.condition")), "{:?}", refused.body);
    let plain = env.call("POST", &base, &[], Some(json!({"name": "Later"})), rw(org)).await;
    let later = format!("{base}/{}", plain.body["id"].as_str().unwrap());
    let patched = env.call("PATCH", &later, &[], Some(json!({"rule": breakdown})), rw(org)).await;
    assert_eq!((patched.status, patched.body["field"].as_str()), (400, Some("rule.condition")), "{:?}", patched.body);
    // A rule can be set by PATCH and removed again.
    let rule = json!({"segmentType": "insuranceSpending", "parameters": {}});
    let set = env.call("PATCH", &later, &[], Some(json!({"rule": rule})), rw(org)).await;
    assert_eq!((set.status, set.body["rule"].clone()), (200, rule));
    let unset = env.call("PATCH", &later, &[], Some(json!({"rule": null})), rw(org)).await;
    assert_eq!((unset.status, unset.body["rule"].clone()), (200, Value::Null));
}

/// The account directory the sink writes resolves bare accountIds in batches (more than one
/// BatchGetItem of 100), a membership change of hundreds of accounts goes through, and the
/// importer refuses a file that gives a stored accountId to another user, writing nothing.
async fn account_directory_and_importer(env: &Env) {
    let org = "bank-directory";
    let users: Vec<(String, String)> = (0..250).map(|i| (format!("u{:03}", i / 2), format!("acc-{i:03}"))).collect();
    let rows: Vec<AccountRow> =
        users.iter().map(|(u, a)| (u.as_str(), a.as_str(), AccountType::Checking, "1.00")).collect();
    env.accounts(org, &rows).await;
    let mandator = MandatorId::parse(org).unwrap();
    let mut asked: Vec<AccountId> = users.iter().map(|(_, a)| AccountId::parse(a).unwrap()).collect();
    asked.extend(["acc-999", "acc-000", "nope"].map(|a| AccountId::parse(a).unwrap()));
    let found = env.s.users.account_users(&mandator, &asked).await.unwrap();
    let expected: std::collections::BTreeMap<AccountId, UserId> =
        users.iter().map(|(u, a)| (AccountId::parse(a).unwrap(), UserId::parse(u).unwrap())).collect();
    assert_eq!(found, expected);
    // Another mandator's directory does not know them.
    let other = MandatorId::parse("bank-directory-2").unwrap();
    assert!(env.s.users.account_users(&other, &asked).await.unwrap().is_empty());

    let base = format!("/v1/organizations/{org}/segments");
    let created = env.call("POST", &base, &[], Some(json!({"name": "Everyone"})), rw(org)).await;
    let item = format!("{base}/{}", created.body["id"].as_str().unwrap());
    let ids: Vec<&str> = users.iter().map(|(_, a)| a.as_str()).collect();
    let all = env.call("PUT", &format!("{item}/accounts"), &[], Some(json!({"add": ids})), rw(org)).await;
    assert_eq!((all.status, all.body["memberCount"].as_u64()), (200, Some(250)), "{:?}", all.body);
    let page = env.call("GET", &format!("{item}/accounts"), &[("limit", "2"), ("page", "125")], None, rw(org)).await;
    assert_eq!(page.body["items"], json!([member("acc-248", "u124"), member("acc-249", "u124")]));

    // The importer: a file giving acc-007 (stored for u003) to u900 is refused by line.
    let dir = tempfile::tempdir().unwrap();
    let line = |u: &str, a: &str| {
        format!(
            r#"{{"mandatorId":"{org}","userId":"{u}","accountId":"{a}","accountType":"checking","currency":"EUR","balance":5,"balanceDate":"2025-01-31"}}"#
        )
    };
    let accounts = dir.path().join("accounts.ndjson");
    let transactions = dir.path().join("transactions.ndjson");
    std::fs::write(&accounts, format!("{}\n{}\n", line("u900", "acc-new"), line("u900", "acc-007"))).unwrap();
    std::fs::write(&transactions, "").unwrap();
    let err =
        import_dir(&env.importer, &mandator, ImportMode::UpsertUsers, dir.path(), Some(SHARDS)).await.unwrap_err();
    let ImportError::Invalid { errors, more: 0 } = err else { panic!("{err:?}") };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, 2);
    assert!(errors[0].reason.starts_with("accountId acc-007 belongs to userId u003"), "{}", errors[0].reason);
    let new = [AccountId::parse("acc-new").unwrap()];
    assert!(env.s.users.account_users(&mandator, &new).await.unwrap().is_empty(), "nothing was written");
    // The same account for its own user imports (upsert), and so does a new one.
    std::fs::write(&accounts, format!("{}\n{}\n", line("u900", "acc-new"), line("u003", "acc-007"))).unwrap();
    let record = import_dir(&env.importer, &mandator, ImportMode::UpsertUsers, dir.path(), Some(SHARDS)).await.unwrap();
    assert_eq!(record.counts.accounts, 2);
    let found = env.s.users.account_users(&mandator, &new).await.unwrap();
    assert_eq!(found.get(&new[0]).map(UserId::as_str), Some("u900"));
}

async fn all_scenarios(env: &Env) {
    crud_soft_delete_and_name_reuse(env).await;
    concurrent_creates_one_wins(env).await;
    filters_and_pagination(env).await;
    validation_limits(env).await;
    membership_and_tenancy(env).await;
    dynamic_segment_refreshed_twice_over_changed_data(env).await;
    rules_of_every_type(env).await;
    account_directory_and_importer(env).await;
}

// -------------------------------------------------------------------------------------------
// Backends

fn embedded() -> Env {
    Env::new(Backend::embedded())
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_crud_soft_delete_and_name_reuse() {
    crud_soft_delete_and_name_reuse(&embedded()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_concurrent_creates_one_wins() {
    concurrent_creates_one_wins(&embedded()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_filters_and_pagination() {
    filters_and_pagination(&embedded()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_validation_limits() {
    validation_limits(&embedded()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_membership_and_tenancy() {
    membership_and_tenancy(&embedded()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_dynamic_segment_refreshed_twice_over_changed_data() {
    dynamic_segment_refreshed_twice_over_changed_data(&embedded()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_account_directory_and_importer() {
    account_directory_and_importer(&embedded()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_rules_of_every_type() {
    rules_of_every_type(&embedded()).await;
}

/// Every scenario through DynamoDB (moto): one server, one organization per scenario.
#[tokio::test(flavor = "multi_thread")]
async fn every_scenario_through_moto() {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    all_scenarios(&Env::new(Backend::moto().await)).await;
}

#[test]
fn path_parameters_follow_the_routes() {
    let p = path_params("/v1/organizations/o/ledgers/l/segments/metrics/count");
    assert_eq!(p, vec![("organizationId", "o".to_owned()), ("ledgerId", "l".to_owned())]);
    let p = path_params("/v1/organizations/o/segments/s/refreshes/r/changes");
    let expected = [("organizationId", "o"), ("segmentId", "s"), ("refreshId", "r")];
    assert_eq!(p, expected.map(|(k, v)| (k, v.to_owned())));
}
