//! The segments management API end to end through its Lambda handler, against the DynamoDB
//! adapters on a local moto server (real SDK clients over HTTP) and against the embedded store:
//! the same scenarios on both. Each scenario uses its own organizations, so one moto server
//! serves them all; the data is a handful of accounts (moto is slow).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use lambda_http::Body;
use segments_core::adapters::aws::{DynamoAccounts, SqsQueue, provision};
use segments_core::adapters::{
    aws_segments_services, aws_services, embedded::EmbeddedStore, embedded_segments_services, embedded_services,
};
use segments_core::config::ServiceConfig;
use segments_core::domain::{Account, AccountId, AccountType, MandatorId, SegmentType, UserId};
use segments_core::jobs::JobMessage;
use segments_core::ports::AccountSink;
use segments_core::records::AccountItem;
use segments_core::segments_api::app::SegmentsServices;
use segments_core::testing::ApiRequest;
use segments_core::worker::{Disposition, process_message};
use serde_json::{Value, json};
use support::moto::MotoServer;
use tokio::sync::Mutex;

const READ: &str = "segments/definitions.read";
const WRITE: &str = "segments/definitions.write";
const HIGH_BALANCE: &str = "segments/highBalance";

/// Runs the workers of whatever jobs are queued.
enum Workers {
    Embedded(Mutex<tokio::sync::mpsc::UnboundedReceiver<JobMessage>>),
    Sqs(Arc<SqsQueue>),
}

struct Env {
    s: SegmentsServices,
    workers: Workers,
    accounts: Arc<dyn AccountSink>,
}

impl Env {
    async fn drain(&self) {
        match &self.workers {
            Workers::Embedded(rx) => {
                let mut rx = rx.lock().await;
                while let Ok(m) = rx.try_recv() {
                    let body = serde_json::to_string(&m).unwrap();
                    assert_eq!(
                        process_message(&self.s.core, m.segment_type, &body, 1, Utc::now()).await,
                        Disposition::Ack
                    );
                }
            }
            Workers::Sqs(queue) => loop {
                let messages = queue.receive(SegmentType::HighBalance, 10, 0).await.unwrap();
                if messages.is_empty() {
                    break;
                }
                for m in messages {
                    let d =
                        process_message(&self.s.core, SegmentType::HighBalance, &m.body, m.receive_count, Utc::now())
                            .await;
                    assert_eq!(d, Disposition::Ack);
                    queue.delete(SegmentType::HighBalance, &m.receipt_handle).await.unwrap();
                }
            },
        }
    }

    /// Accounts of a mandator: `(userId, accountId, type, balance)`, balances dated today.
    async fn accounts(&self, mandator: &str, accounts: &[(&str, &str, AccountType, &str)]) {
        let mandator = MandatorId::parse(mandator).unwrap();
        let items: Vec<AccountItem> = accounts
            .iter()
            .map(|(u, a, t, b)| {
                AccountItem::Account(Account {
                    user_id: UserId::parse(u).unwrap(),
                    account_id: AccountId::parse(a).unwrap(),
                    account_type: *t,
                    currency: segments_core::domain::Currency::parse("EUR").unwrap(),
                    balance: segments_core::domain::Money::parse(b).unwrap(),
                    balance_date: Utc::now().date_naive(),
                })
            })
            .collect();
        self.accounts.ensure_shard_count(&mandator, 4).await.unwrap();
        self.accounts.put_items(&mandator, 4, &items).await.unwrap();
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
        ["segments", id, ..] => out.push(("segmentId", (*id).to_owned())),
        ["accounts", id, ..] => out.push(("accountId", (*id).to_owned())),
        _ => {}
    }
    out
}

fn rw(org: &str) -> (&str, &'static [&'static str]) {
    (org, &[READ, WRITE, HIGH_BALANCE])
}

fn names(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect()
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
    let bad = env.call("PATCH", &item, &[], Some(json!({"status": {"code": "GONE"}})), rw(org)).await;
    assert_eq!((bad.status, bad.body["field"].as_str()), (400, Some("status.code")));
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

async fn filters_and_pagination(env: &Env) {
    let org = "bank-list";
    let base = format!("/v1/organizations/{org}/segments");
    for i in 0..5 {
        let tier = if i % 2 == 0 { "gold" } else { "silver" };
        let r = env
            .call(
                "POST",
                &base,
                &[],
                Some(json!({"name": format!("s{i}"), "metadata": {"tier": tier, "n": i}})),
                rw(org),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let page = env.call("GET", &base, &[("limit", "2"), ("page", "2")], None, rw(org)).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        (page.body["page"].as_u64(), page.body["limit"].as_u64(), page.body["totalCount"].as_u64()),
        (Some(2), Some(2), Some(5))
    );
    assert_eq!(names(&page.body), ["s2", "s3"]);
    let default = env.call("GET", &base, &[], None, rw(org)).await;
    assert_eq!(default.body["limit"], 10);
    assert_eq!(names(&default.body), ["s0", "s1", "s2", "s3", "s4"]);
    let desc = env.call("GET", &base, &[("sort_order", "desc"), ("limit", "3")], None, rw(org)).await;
    assert_eq!(names(&desc.body), ["s4", "s3", "s2"]);
    let gold = env.call("GET", &base, &[("metadata.tier", "gold")], None, rw(org)).await;
    assert_eq!(names(&gold.body), ["s0", "s2", "s4"]);
    let n = env.call("GET", &base, &[("metadata.n", "3")], None, rw(org)).await;
    assert_eq!(names(&n.body), ["s3"]);
    let today = Utc::now().date_naive().to_string();
    let dated = env.call("GET", &base, &[("start_date", &today), ("end_date", &today)], None, rw(org)).await;
    assert_eq!(dated.body["totalCount"], 5);
    let past = env.call("GET", &base, &[("start_date", "2020-01-01"), ("end_date", "2020-01-31")], None, rw(org)).await;
    assert_eq!(past.body["totalCount"], 0);
    for bad in [
        vec![("limit", "0")],
        vec![("limit", "101")],
        vec![("page", "0")],
        vec![("sort_order", "up")],
        vec![("start_date", "2020-01-01")],
        vec![("color", "red")],
    ] {
        let r = env.call("GET", &base, &bad, None, rw(org)).await;
        assert_eq!((r.status, r.body["code"].as_str()), (400, Some("invalid_parameter")), "{bad:?}");
    }
    let count = env.call("HEAD", &format!("{base}/metrics/count"), &[("metadata.tier", "silver")], None, rw(org)).await;
    assert_eq!((count.status, count.total.as_deref()), (204, Some("2")));
    let all = env.call("HEAD", &format!("{base}/metrics/count"), &[], None, rw(org)).await;
    assert_eq!(all.total.as_deref(), Some("5"));
    let ledger_count = env
        .call("HEAD", &format!("/v1/organizations/{org}/ledgers/l9/segments/metrics/count"), &[], None, rw(org))
        .await;
    assert_eq!(ledger_count.total.as_deref(), Some("0"));
}

async fn membership_and_tenancy(env: &Env) {
    let org = "bank-members";
    let other = "bank-other";
    env.accounts(
        org,
        &[
            ("u1", "a1", AccountType::Checking, "10"),
            ("u1", "a2", AccountType::Savings, "20"),
            ("u2", "a1", AccountType::Checking, "30"),
        ],
    )
    .await;
    env.accounts(other, &[("u9", "a9", AccountType::Checking, "10")]).await;
    let base = format!("/v1/organizations/{org}/segments");
    let created = env.call("POST", &base, &[], Some(json!({"name": "Tagged"})), rw(org)).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let accounts = format!("{base}/{id}/accounts");
    let acc = |u: &str, a: &str| json!({"userId": u, "accountId": a});

    // Another organization's account (and an unknown one) are refused, naming them; nothing changes.
    let foreign = env
        .call("PUT", &accounts, &[], Some(json!({"add": [acc("u1", "a1"), acc("u9", "a9"), acc("u1", "zz")]})), rw(org))
        .await;
    assert_eq!((foreign.status, foreign.body["code"].as_str()), (422, Some("unknown_accounts")), "{:?}", foreign.body);
    let detail = foreign.body["detail"].as_str().unwrap();
    assert!(detail.contains("u9/a9") && detail.contains("u1/zz") && !detail.contains("u1/a1"), "{detail}");
    assert_eq!(env.call("GET", &accounts, &[], None, rw(org)).await.body["totalCount"], 0);

    let added = env
        .call("PUT", &accounts, &[], Some(json!({"add": [acc("u1", "a1"), acc("u1", "a2"), acc("u2", "a1")]})), rw(org))
        .await;
    assert_eq!((added.status, added.body["memberCount"].as_u64()), (200, Some(3)), "{:?}", added.body);
    let page = env.call("GET", &accounts, &[("limit", "2"), ("page", "1")], None, rw(org)).await;
    assert_eq!(page.body["items"], json!([acc("u1", "a1"), acc("u1", "a2")]));
    assert_eq!(page.body["totalCount"], 3);
    let page2 = env.call("GET", &accounts, &[("limit", "2"), ("page", "2")], None, rw(org)).await;
    assert_eq!(page2.body["items"], json!([acc("u2", "a1")]));

    // An account's segments, by account id (both users' a1).
    let second = env.call("POST", &base, &[], Some(json!({"name": "Second"})), rw(org)).await;
    let second_id = second.body["id"].as_str().unwrap().to_owned();
    env.call("PUT", &format!("{base}/{second_id}/accounts"), &[], Some(json!({"add": [acc("u1", "a1")]})), rw(org))
        .await;
    let of = env.call("GET", &format!("/v1/organizations/{org}/accounts/a1/segments"), &[], None, rw(org)).await;
    assert_eq!(of.status, 200);
    assert_eq!(of.body["totalCount"], 3);
    let seen: BTreeSet<(String, String)> = of.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["segment"]["name"].as_str().unwrap().to_owned(), i["userId"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        seen,
        BTreeSet::from([
            ("Tagged".into(), "u1".into()),
            ("Tagged".into(), "u2".into()),
            ("Second".into(), "u1".into())
        ])
    );

    // Remove (a non-member too: idempotent).
    let removed =
        env.call("PUT", &accounts, &[], Some(json!({"remove": [acc("u1", "a2"), acc("u2", "zz")]})), rw(org)).await;
    assert_eq!(removed.body["memberCount"], 2);
    // A deleted segment leaves the account's segments.
    assert_eq!(env.call("DELETE", &format!("{base}/{second_id}"), &[], None, rw(org)).await.status, 204);
    let of = env.call("GET", &format!("/v1/organizations/{org}/accounts/a1/segments"), &[], None, rw(org)).await;
    assert_eq!(of.body["totalCount"], 2);

    // INACTIVE and SUSPENDED segments cannot be tagged.
    for code in ["INACTIVE", "SUSPENDED"] {
        env.call("PATCH", &format!("{base}/{id}"), &[], Some(json!({"status": {"code": code}})), rw(org)).await;
        let r = env.call("PUT", &accounts, &[], Some(json!({"add": [acc("u1", "a2")]})), rw(org)).await;
        assert_eq!((r.status, r.body["code"].as_str()), (422, Some("segment_not_taggable")));
    }

    // Tenant isolation: another organization's token sees nothing, and cannot name this one.
    let item = format!("{base}/{id}");
    for (method, path, body) in [
        ("GET", item.clone(), None),
        ("PATCH", item.clone(), Some(json!({"name": "x"}))),
        ("DELETE", item.clone(), None),
        ("GET", accounts.clone(), None),
        ("PUT", accounts.clone(), Some(json!({"add": []}))),
        ("GET", base.clone(), None),
        ("POST", base.clone(), Some(json!({"name": "intruder"}))),
        ("HEAD", format!("{base}/metrics/count"), None),
        ("GET", format!("/v1/organizations/{org}/accounts/a1/segments"), None),
    ] {
        let r = env.call(method, &path, &[], body, rw(other)).await;
        assert_eq!(r.status, 404, "{method} {path}");
    }
    let own_path = env.call("GET", &format!("/v1/organizations/{other}/segments/{id}"), &[], None, rw(other)).await;
    assert_eq!((own_path.status, own_path.body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(env.call("GET", &item, &[], None, rw(org)).await.status, 200);
}

async fn dynamic_segment_refresh(env: &Env) {
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
    assert_eq!(created.body["rule"], rule);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let item = format!("{base}/{id}");
    // A member the rule will not keep.
    let tagged = env
        .call(
            "PUT",
            &format!("{item}/accounts"),
            &[],
            Some(json!({"add": [{"userId": "u2", "accountId": "a2"}]})),
            rw(org),
        )
        .await;
    assert_eq!(tagged.status, 200);

    let no_type_scope = env.call("POST", &format!("{item}/refresh"), &[], None, (org, &[READ, WRITE])).await;
    assert_eq!(no_type_scope.status, 403);
    let started = env.call("POST", &format!("{item}/refresh"), &[], None, rw(org)).await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    assert_eq!(started.body["lastRefresh"]["status"], "PENDING");
    let job_id = started.body["lastRefresh"]["jobId"].as_str().unwrap().to_owned();
    // Still pending: asking again starts nothing new.
    let again = env.call("POST", &format!("{item}/refresh"), &[], None, rw(org)).await;
    assert_eq!((again.status, again.body["lastRefresh"]["jobId"].as_str()), (202, Some(job_id.as_str())));

    env.drain().await;

    let got = env.call("GET", &item, &[], None, rw(org)).await;
    assert_eq!(got.status, 200);
    let refresh = &got.body["lastRefresh"];
    assert_eq!(refresh["status"], "APPLIED", "{refresh}");
    assert_eq!(refresh["jobId"], job_id.as_str());
    assert!(refresh["refreshedAt"].as_str().unwrap().ends_with('Z'));

    // The job's accounts, as its result lists them.
    let result = segments_core::app::get_result(
        &env.s.core,
        &segments_core::http::Caller { mandator: MandatorId::parse(org).unwrap(), scopes: Default::default() },
        SegmentType::HighBalance,
        &job_id,
        1,
        500,
        Utc::now(),
    )
    .await
    .unwrap();
    let mut from_job = Vec::new();
    for user in &result.users {
        let v: Value = serde_json::from_str(user.get()).unwrap();
        for a in v["accounts"].as_array().unwrap() {
            from_job.push(json!({"userId": v["userId"], "accountId": a["accountId"]}));
        }
    }
    let expected = json!([
        {"userId": "u1", "accountId": "a1"},
        {"userId": "u3", "accountId": "a3"},
        {"userId": "u3", "accountId": "a4"}
    ]);
    assert_eq!(Value::Array(from_job.clone()), expected);
    let members = env.call("GET", &format!("{item}/accounts"), &[("limit", "100")], None, rw(org)).await;
    assert_eq!(members.body["items"], Value::Array(from_job.clone()));
    assert_eq!(got.body["memberCount"], 3);
    assert_eq!(refresh["added"], Value::Array(from_job));
    assert_eq!(refresh["removed"], json!([{"userId": "u2", "accountId": "a2"}]));

    // Reading again applies nothing twice.
    let again = env.call("GET", &item, &[], None, rw(org)).await;
    assert_eq!(again.body["lastRefresh"], got.body["lastRefresh"]);
    // A second refresh of an unchanged population: nobody enters or leaves.
    let second = env.call("POST", &format!("{item}/refresh"), &[], None, rw(org)).await;
    assert_eq!(second.status, 202);
    env.drain().await;
    let settled = env.call("POST", &format!("{item}/refresh"), &[], None, rw(org)).await;
    assert_eq!(settled.status, 200, "{:?}", settled.body);
    assert_eq!(settled.body["lastRefresh"]["jobId"], second.body["lastRefresh"]["jobId"]);
    assert_eq!(settled.body["lastRefresh"]["status"], "APPLIED");
    assert_eq!(
        (settled.body["lastRefresh"]["added"].clone(), settled.body["lastRefresh"]["removed"].clone()),
        (json!([]), json!([]))
    );
    assert_eq!(settled.body["memberCount"], 3);

    // A segment without a rule has nothing to refresh.
    let plain = env.call("POST", &base, &[], Some(json!({"name": "Plain"})), rw(org)).await;
    let r =
        env.call("POST", &format!("{base}/{}/refresh", plain.body["id"].as_str().unwrap()), &[], None, rw(org)).await;
    assert_eq!((r.status, r.body["code"].as_str()), (422, Some("segment_has_no_rule")));
}

async fn all_scenarios(env: &Env) {
    crud_soft_delete_and_name_reuse(env).await;
    concurrent_creates_one_wins(env).await;
    filters_and_pagination(env).await;
    membership_and_tenancy(env).await;
    dynamic_segment_refresh(env).await;
}

// -------------------------------------------------------------------------------------------
// Backends

fn embedded() -> (tempfile::TempDir, Env) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (core, rx) = embedded_services(store.clone(), ServiceConfig::default());
    let s = embedded_segments_services(store.clone(), core);
    (dir, Env { s, workers: Workers::Embedded(Mutex::new(rx)), accounts: Arc::new(store) })
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_crud_soft_delete_and_name_reuse() {
    let (_dir, env) = embedded();
    crud_soft_delete_and_name_reuse(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_concurrent_creates_one_wins() {
    let (_dir, env) = embedded();
    concurrent_creates_one_wins(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_filters_and_pagination() {
    let (_dir, env) = embedded();
    filters_and_pagination(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_membership_and_tenancy() {
    let (_dir, env) = embedded();
    membership_and_tenancy(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_dynamic_segment_refresh() {
    let (_dir, env) = embedded();
    dynamic_segment_refresh(&env).await;
}

/// Every scenario through DynamoDB (moto): one server, one organization per scenario.
#[tokio::test(flavor = "multi_thread")]
async fn every_scenario_through_moto() {
    let moto = MotoServer::start();
    let clients = moto.clients().await;
    let resources = provision::provision_all(&clients, "segapi", 5).await.unwrap();
    let table = provision::segments_table_name("segapi");
    provision::create_segments_table(&clients.dynamodb, &table).await.unwrap();
    let core = aws_services(&clients, &resources, ServiceConfig::default());
    let s = aws_segments_services(&clients, &resources, &table, core);
    let queue = Arc::new(SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone()));
    let accounts = Arc::new(DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone()));
    let env = Env { s, workers: Workers::Sqs(queue), accounts };
    all_scenarios(&env).await;
}

#[test]
fn path_parameters_follow_the_routes() {
    let p = path_params("/v1/organizations/o/ledgers/l/segments/metrics/count");
    assert_eq!(p, vec![("organizationId", "o".to_owned()), ("ledgerId", "l".to_owned())]);
}
