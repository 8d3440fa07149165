//! The local runner end to end, as a developer uses it: `segments serve --demo` on a fresh data
//! directory, a token from its output or from `segments token`, and the API over real HTTP.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::flows::{as_reference, reference_high_balance};
use crate::support::runner::{BIN, Runner, cli_token};
use reqwest::StatusCode;
use serde_json::Value;

async fn post(http: &reqwest::Client, r: &Runner, token: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = http
        .post(format!("{}{path}", r.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the runner answers");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(http: &reqwest::Client, r: &Runner, token: &str, path: &str) -> (StatusCode, Value, String) {
    let resp = http.get(format!("{}{path}", r.url)).bearer_auth(token).send().await.expect("the runner answers");
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, resp.json().await.unwrap_or(Value::Null), ct)
}

/// Polls until the job is ready: 404 with status and progress until then.
async fn wait_ready(http: &reqwest::Client, r: &Runner, job_id: &str) {
    wait_ready_of(http, r, "highBalance", job_id).await
}

async fn wait_ready_of(http: &reqwest::Client, r: &Runner, segment_type: &str, job_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body, _) = get(http, r, &r.token, &format!("/segments/{segment_type}/{job_id}")).await;
        match status {
            StatusCode::OK => return,
            StatusCode::NOT_FOUND => {
                assert!(matches!(body["status"].as_str(), Some("QUEUED" | "RUNNING")), "{body}");
                assert_eq!(body["progress"]["shardsTotal"], 16);
            }
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(Instant::now() < deadline, "the job did not complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_demo_answers_high_balance_exactly_and_refuses_bad_requests_with_problems() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start(dir.path(), true);
    segments_core::usecases::callbacks::install_tls_provider();
    let http = reqwest::Client::new();

    let (status, accepted) =
        post(&http, &runner, &runner.token, "/segments/highBalance", r#"{"accountType":"checking","threshold":5000}"#)
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["status"], "QUEUED");
    let job_id = accepted["jobId"].as_str().unwrap().to_owned();
    wait_ready(&http, &runner, &job_id).await;

    // Every page, against the definition computed from the demo files.
    let mut users = Vec::new();
    for page in 1.. {
        let (status, body, _) =
            get(&http, &runner, &runner.token, &format!("/segments/highBalance/{job_id}?page={page}&perPage=25")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["perPage"], 25);
        assert_eq!(body["page"], page);
        let batch = body["users"].as_array().unwrap().clone();
        if batch.is_empty() {
            assert_eq!(body["totalElements"].as_u64(), Some(users.len() as u64));
            assert_eq!(body["totalPages"].as_u64(), Some((users.len() as u64).div_ceil(25)));
            break;
        }
        users.extend(batch);
    }
    let today = chrono::Utc::now().date_naive();
    let expected = reference_high_balance(&dir.path().join("demo"), "demo-bank", "checking", "5000", today);
    assert!(!expected.is_empty());
    assert_eq!(as_reference(&users), expected);

    // Wrong token, missing scope, another mandator, unknown type, bad bodies and paging.
    let hb = format!("/segments/highBalance/{job_id}");
    let low_only = cli_token(dir.path(), "demo-bank", &["segments/lowBalance"]);
    let other_bank = cli_token(dir.path(), "other-bank", &[]);
    let cases: Vec<(StatusCode, Value, String, &str)> = vec![
        {
            let (s, b, ct) = get(&http, &runner, "not-a-token", &hb).await;
            (s, b, ct, "unauthenticated")
        },
        {
            let (s, b, ct) = get(&http, &runner, &low_only, &hb).await;
            (s, b, ct, "insufficient_scope")
        },
        {
            let (s, b, ct) = get(&http, &runner, &other_bank, &hb).await;
            (s, b, ct, "unknown_job")
        },
        {
            let (s, b, ct) = get(&http, &runner, &runner.token, &format!("{hb}?perPage=0")).await;
            (s, b, ct, "invalid_parameter")
        },
        {
            let (s, b, ct) = get(&http, &runner, &runner.token, &format!("{hb}?perPage=501")).await;
            (s, b, ct, "invalid_parameter")
        },
        {
            let (s, b, ct) = get(&http, &runner, &runner.token, "/nowhere").await;
            (s, b, ct, "no_route")
        },
    ];
    for (status, problem, content_type, code) in cases {
        assert!(status.is_client_error(), "{code}: {status}");
        assert_eq!(content_type, "application/problem+json", "{code}");
        assert_eq!(problem["code"], code, "{problem}");
        assert_eq!(problem["status"], status.as_u16());
    }
    for (path, body, code, field) in [
        ("/segments/mediumBalance", "{}", "unknown_segment_type", Some("segmentType")),
        ("/segments/highBalance", "{not json", "malformed_body", None),
        (
            "/segments/highBalance",
            r#"{"accountType":"checking","threshold":"abc"}"#,
            "invalid_field",
            Some("threshold"),
        ),
        ("/segments/highBalance", r#"{"accountType":"checking"}"#, "invalid_field", Some("threshold")),
    ] {
        let (status, problem) = post(&http, &runner, &runner.token, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["code"], code);
        assert_eq!(problem["field"].as_str(), field);
    }

    // The store persists: a restarted runner on the same directory serves the same result.
    drop(runner);
    let again = Runner::start(dir.path(), false);
    let (status, body, _) = get(&http, &again, &again.token, &format!("{hb}?perPage=500")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["totalElements"].as_u64(), Some(users.len() as u64));
}

/// All five types through the runner's HTTP API give exactly what the computations give over the
/// demo files: storage round trip, sharding, sorting and paging change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn serve_demo_computes_all_five_types() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start(dir.path(), true);
    segments_core::usecases::callbacks::install_tls_provider();
    let http = reqwest::Client::new();
    let today = chrono::Utc::now().date_naive();
    let from = today - chrono::Days::new(200);
    let jobs = [
        ("highBalance", r#"{"accountType":"savings","threshold":2500.5}"#.to_owned()),
        ("lowBalance", r#"{"threshold":0,"durationInMonth":2}"#.to_owned()),
        ("incomeSpendingSummary", format!(r#"{{"dateFrom":"{from}","dateTo":"{today}","accountType":"checking"}}"#)),
        ("insuranceSpending", "{}".to_owned()),
        (
            "financialBreakdown",
            r#"{"durationInMonth":12,"labelGroups":["SALARY",{"alias":"housing","includeLabels":["RENT","INSURANCE"]}]}"#
                .to_owned(),
        ),
    ];
    let users = crate::support::flows::users_from_files(&dir.path().join("demo"));
    for (t, body) in jobs {
        let (status, accepted) = post(&http, &runner, &runner.token, &format!("/segments/{t}"), &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{t}: {accepted}");
        let job_id = accepted["jobId"].as_str().unwrap().to_owned();
        wait_ready_of(&http, &runner, t, &job_id).await;
        let (status, page, _) =
            get(&http, &runner, &runner.token, &format!("/segments/{t}/{job_id}?perPage=500")).await;
        assert_eq!(status, StatusCode::OK);
        let got = page["users"].as_array().unwrap().clone();
        let expected = crate::support::flows::expected_entries(&users, t, &body, today);
        assert!(!expected.is_empty(), "{t}: the demo data must put users in the segment");
        assert_eq!(page["totalElements"].as_u64(), Some(expected.len() as u64), "{t}");
        assert_eq!(got, expected[..expected.len().min(500)], "{t}");
    }
}

/// `segments generate` and `segments import` as an operator runs them: a bad file is reported
/// line by line and imports nothing; a good one imports and says what.
#[test]
fn import_reports_every_bad_line_and_imports_nothing_then_imports_generated_data() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("accounts.ndjson"),
        "{\"mandatorId\":\"m1\",\"userId\":\"u1\",\"accountId\":\"a1\",\"accountType\":\"checking\",\"currency\":\"EUR\",\"balance\":1.005,\"balanceDate\":\"2024-05-31\"}\n",
    )
    .unwrap();
    std::fs::write(
        bad.join("transactions.ndjson"),
        "{\"mandatorId\":\"m1\",\"userId\":\"u1\",\"accountId\":\"a2\",\"transactionId\":\"t1\",\"bookingDate\":\"2024-05-01\",\"amount\":-1,\"currency\":\"EUR\"}\n",
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let import = |from: &Path| {
        Command::new(BIN)
            .args(["import", "--json", "--accounts"])
            .arg(from.join("accounts.ndjson"))
            .arg("--transactions")
            .arg(from.join("transactions.ndjson"))
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .expect("segments import runs")
    };
    let out = import(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("accounts.ndjson\",\"line\":1,\"reason\":\"balance: has more than 2 decimals"), "{stderr}");
    assert!(stderr.contains("transactions.ndjson\",\"line\":1"), "{stderr}");
    assert!(stderr.lines().last().unwrap().starts_with("error: 2 invalid line(s), nothing was imported"), "{stderr}");

    let good = dir.path().join("good");
    let out = Command::new(BIN)
        .args(["generate", "--json", "--users", "25", "--seed", "7", "--mandator", "bank-9", "--out"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(generated["users"], 25);
    let out = import(&good);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let imported: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(imported["mandator"], "bank-9");
    assert_eq!(imported["users"], 25);
    assert_eq!(imported["transactions"], generated["transactions"]);
    assert_eq!(imported["shardCount"], 16);
}
