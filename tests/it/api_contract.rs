//! The OpenAPI document is a contract clients can trust: `infra/openapi.json` is valid OpenAPI 3.1,
//! and schemathesis, generating requests from it (examples, coverage, fuzzing and the stateful
//! phase that follows its links), finds no answer of `segments serve --demo` that the document does
//! not describe. What the document cannot express is listed, with the reason, in ONE file:
//! `tests/schemathesis/schemathesis.toml`.
//!
//! The tools are installed by `tests/run.sh` into `.venv`; `$SCHEMATHESIS` and
//! `$OPENAPI_SPEC_VALIDATOR` name them. A missing tool fails the test, never skips it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Months, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::process::{drain, wait_bounded};
use crate::support::runner::Runner;

const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/openapi.json");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis/schemathesis.toml");
/// The mandator of the runner's token (`segments serve` prints it too).
const MANDATOR: &str = financial_segments::cli::DEMO_MANDATOR;
/// The whole schemathesis run; the config bounds each request and the examples per operation so
/// that it takes about three and a half minutes on two busy cores (6,400 requests over 53
/// operations). Beyond this it is stopped and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(480);

/// A tool named by `var`, which `tests/run.sh` exports.
fn tool(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) if Path::new(&path).is_file() => PathBuf::from(path),
        Some(path) => panic!(
            "{var} names {}, which does not exist: run tests/run.sh (it installs schemathesis and \
             openapi-spec-validator into .venv)",
            Path::new(&path).display()
        ),
        None => panic!(
            "{var} is not set: run tests/run.sh (it installs schemathesis and openapi-spec-validator into .venv \
             and exports SCHEMATHESIS and OPENAPI_SPEC_VALIDATOR), or set it, e.g. {var}=$PWD/.venv/bin/{}",
            if var == "SCHEMATHESIS" { "st" } else { "openapi-spec-validator" }
        ),
    }
}

#[test]
fn the_document_is_valid_openapi() {
    let validator = tool("OPENAPI_SPEC_VALIDATOR");
    let out = Command::new(&validator).arg(DOCUMENT).output().expect("openapi-spec-validator runs");
    assert!(
        out.status.success(),
        "infra/openapi.json is not valid OpenAPI:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The five segment types, the environment variable that carries a completed job of each to the
/// config, and a request whose result is not empty on the demo data.
fn seed_requests() -> Vec<(&'static str, &'static str, Value)> {
    let today = Utc::now().date_naive();
    let three_months_ago = today.checked_sub_months(Months::new(3)).expect("a date three months ago");
    vec![
        ("highBalance", "HIGH_BALANCE_JOB", json!({"accountType": "checking", "threshold": 100})),
        ("lowBalance", "LOW_BALANCE_JOB", json!({"threshold": 5000, "durationInMonth": 2})),
        (
            "incomeSpendingSummary",
            "INCOME_SPENDING_SUMMARY_JOB",
            json!({"dateFrom": three_months_ago.to_string(), "dateTo": today.to_string()}),
        ),
        ("insuranceSpending", "INSURANCE_SPENDING_JOB", json!({})),
        (
            "financialBreakdown",
            "FINANCIAL_BREAKDOWN_JOB",
            json!({"labelGroups": ["GROCERIES", {"alias": "pay", "includeLabels": ["SALARY"]}], "durationInMonth": 3}),
        ),
    ]
}

/// Starts one job of each type and waits until each has completed with at least one user, so
/// that the fuzzer's pages are checked against real, non-empty entries of every type.
async fn completed_jobs(runner: &Runner) -> Vec<(&'static str, String)> {
    segments_core::usecases::callbacks::install_tls_provider();
    let http = reqwest::Client::new();
    let mut jobs = Vec::new();
    for (segment_type, var, body) in seed_requests() {
        let created = http
            .post(format!("{}/segments/{segment_type}", runner.url))
            .bearer_auth(&runner.token)
            .json(&body)
            .send()
            .await
            .expect("the runner answers");
        assert_eq!(created.status(), StatusCode::ACCEPTED, "{segment_type} {body}");
        let created: Value = created.json().await.expect("a JSON answer");
        let job_id = created["jobId"].as_str().expect("a jobId").to_owned();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let page = http
                .get(format!("{}/segments/{segment_type}/{job_id}", runner.url))
                .bearer_auth(&runner.token)
                .send()
                .await
                .expect("the runner answers");
            match page.status() {
                StatusCode::OK => {
                    let page: Value = page.json().await.expect("a JSON page");
                    assert!(page["totalElements"].as_u64() > Some(0), "{segment_type} found nobody: {body}");
                    break;
                }
                StatusCode::NOT_FOUND => {}
                other => panic!("{segment_type} job {job_id}: {other} {}", page.text().await.unwrap_or_default()),
            }
            assert!(Instant::now() < deadline, "the {segment_type} job did not complete");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        jobs.push((var, job_id));
    }
    jobs
}

/// One dynamic segment at organization level and one in a ledger, each refreshed until the
/// service has applied its refresh, so that the fuzzer reads refreshes and change feeds that exist
/// and hold accounts (a random refresh id only ever answers 404). Returns the environment
/// variables the config names: `{ORG,LEDGER}_SEGMENT` and `{ORG,LEDGER}_REFRESH`.
async fn applied_refreshes(runner: &Runner) -> Vec<(&'static str, String)> {
    let http = reqwest::Client::new();
    let mut vars = Vec::new();
    let organization = format!("{}/v1/organizations/{MANDATOR}", runner.url);
    for (prefix, base) in [("ORG", organization.clone()), ("LEDGER", format!("{organization}/ledgers/contract"))] {
        let rule = json!({"segmentType": "highBalance", "parameters": {"accountType": "checking", "threshold": 100}});
        let created = http
            .post(format!("{base}/segments"))
            .bearer_auth(&runner.token)
            .json(&json!({"name": format!("contract {prefix}"), "rule": rule}))
            .send()
            .await
            .expect("the runner answers");
        assert_eq!(created.status(), StatusCode::CREATED, "{prefix} segment");
        let segment: Value = created.json().await.expect("a JSON segment");
        let segment_id = segment["id"].as_str().expect("an id").to_owned();
        let started = http
            .post(format!("{base}/segments/{segment_id}/refresh"))
            .bearer_auth(&runner.token)
            .send()
            .await
            .expect("the runner answers");
        assert_eq!(started.status(), StatusCode::ACCEPTED, "{prefix} refresh");
        let started: Value = started.json().await.expect("a JSON segment");
        let refresh_id = started["lastRefresh"]["id"].as_str().expect("the started refresh").to_owned();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let refresh: Value = http
                .get(format!("{base}/segments/{segment_id}/refreshes/{refresh_id}"))
                .bearer_auth(&runner.token)
                .send()
                .await
                .expect("the runner answers")
                .json()
                .await
                .expect("a JSON refresh");
            match refresh["status"].as_str() {
                Some("APPLIED") => {
                    assert!(refresh["entered"].as_u64() > Some(0), "{prefix}: the rule selected nobody: {refresh}");
                    break;
                }
                Some("PENDING" | "DIFFING" | "APPLYING") => {}
                _ => panic!("{prefix} refresh {refresh_id}: {refresh}"),
            }
            assert!(Instant::now() < deadline, "the {prefix} refresh was not applied: {refresh}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (segment_var, refresh_var) =
            if prefix == "ORG" { ("ORG_SEGMENT", "ORG_REFRESH") } else { ("LEDGER_SEGMENT", "LEDGER_REFRESH") };
        vars.push((segment_var, segment_id));
        vars.push((refresh_var, refresh_id));
    }
    vars
}

/// What to show of a failed run: schemathesis' failures and summary (its report from the first
/// section header on), bounded so a huge report does not drown the test output.
fn summary(stdout: &str) -> &str {
    const MAX: usize = 60_000;
    let from = stdout.find("=== FAILURES").or_else(|| stdout.find("=== ERRORS")).or_else(|| stdout.find("=== SUMMARY"));
    let report = &stdout[from.map_or(0, |at| stdout[..at].rfind('\n').map_or(0, |nl| nl + 1))..];
    if report.len() <= MAX {
        return report;
    }
    let mut start = report.len() - MAX;
    while !report.is_char_boundary(start) {
        start += 1;
    }
    &report[start..]
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_answer_the_document_does_not_describe() {
    let schemathesis = tool("SCHEMATHESIS");
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start(dir.path(), true);
    let mut seeds = completed_jobs(&runner).await;
    seeds.extend(applied_refreshes(&runner).await);
    let reports = tempfile::tempdir().unwrap();

    let mut command = Command::new(&schemathesis);
    command
        .args(["--config-file"])
        .arg(CONFIG)
        .args(["run", DOCUMENT, "--url", &runner.url, "--checks", "all", "--no-color"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .arg("--report-dir")
        .arg(reports.path())
        // Schemathesis and Hypothesis keep caches in the working directory: a scratch one, so a
        // run leaves nothing in the repository and depends on no earlier run.
        .current_dir(reports.path())
        .env("SEGMENTS_TOKEN", &runner.token)
        .env("SEGMENTS_MANDATOR", MANDATOR)
        // The report is read in a test log, not a terminal: lines wide enough not to wrap curl lines.
        .env("COLUMNS", "160")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, so a timeout stops everything it started.
        .process_group(0);
    for (var, id) in &seeds {
        command.env(var, id);
    }
    let started = Instant::now();
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", schemathesis.display()));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = wait_bounded(&mut child, RUN_TIMEOUT);
        (status, stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default())
    })
    .await
    .expect("the schemathesis run");
    let elapsed = started.elapsed();
    drop(runner);

    match status {
        Some(status) if status.success() => {
            let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
            eprintln!("schemathesis passed in {elapsed:.0?}: {last}");
        }
        Some(status) => panic!(
            "schemathesis found answers the document does not describe ({status}, after {elapsed:.0?}); fix the \
             server or the document, or list a deliberate exception with its reason in \
             tests/schemathesis/schemathesis.toml\n{}\n--- stderr ---\n{stderr}",
            summary(&stdout)
        ),
        None => panic!(
            "schemathesis did not finish within {RUN_TIMEOUT:?} and was stopped\n{}\n--- stderr ---\n{stderr}",
            summary(&stdout)
        ),
    }
}
