//! Dynamic segments on the local runner, through the API only: `segments serve --demo` applies a
//! refresh by itself once its job completes (its scheduler and applier run in the process), the
//! change feed answers, and `segments events` prints the events the runner published.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::runner::{BIN, Runner};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SEGMENTS: &str = "/v1/organizations/demo-bank/segments";

async fn call(
    http: &reqwest::Client,
    r: &Runner,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, format!("{}{path}", r.url)).bearer_auth(&r.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the runner answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The event file's lines as `segments events` prints them (without `--follow`).
fn printed_events(data_dir: &Path) -> Vec<Value> {
    let out = Command::new(BIN).args(["events", "--data-dir"]).arg(data_dir).output().expect("segments events runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn of_segment<'a>(events: &'a [Value], id: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["detail"]["segmentId"] == id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_is_applied_by_the_runner_and_its_events_are_printed() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing printed, and no error, before the runner published anything.
    assert!(printed_events(dir.path()).is_empty());
    let runner = Runner::start(dir.path(), true);
    segments_core::usecases::callbacks::install_tls_provider();
    let http = reqwest::Client::new();

    let rule = json!({"segmentType": "highBalance", "parameters": {"accountType": "checking", "threshold": 1000}});
    let (status, created) =
        call(&http, &runner, reqwest::Method::POST, SEGMENTS, Some(json!({"name": "Rich", "rule": rule}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let segment = format!("{SEGMENTS}/{id}");

    let (status, started) = call(&http, &runner, reqwest::Method::POST, &format!("{segment}/refresh"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let refresh_id = started["lastRefresh"]["id"].as_str().unwrap().to_owned();

    // Nobody but the runner moves the refresh on: reads only, until it is final.
    let deadline = Instant::now() + Duration::from_secs(120);
    let applied = loop {
        let (status, got) = call(&http, &runner, reqwest::Method::GET, &segment, None).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        let state = got["lastRefresh"]["status"].as_str().unwrap_or_default().to_owned();
        assert!(["PENDING", "DIFFING", "APPLYING", "APPLIED"].contains(&state.as_str()), "{got}");
        if state == "APPLIED" {
            break got;
        }
        assert!(Instant::now() < deadline, "the refresh was not applied: {got}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let last = &applied["lastRefresh"];
    let entered = last["entered"].as_u64().unwrap();
    assert!(entered > 0, "nobody above the threshold: {applied}");
    assert_eq!((last["id"].as_str(), last["left"].as_u64()), (Some(refresh_id.as_str()), Some(0)));
    assert!(last["finishedAt"].is_string(), "{applied}");
    assert_eq!(applied["memberCount"].as_u64(), Some(entered));

    // The feeds: the refresh, then its changes, which are the members now.
    let (status, refreshes) = call(&http, &runner, reqwest::Method::GET, &format!("{segment}/refreshes"), None).await;
    assert_eq!(
        (status, refreshes["items"][0]["id"].as_str()),
        (StatusCode::OK, Some(refresh_id.as_str())),
        "{refreshes}"
    );
    let (status, one) =
        call(&http, &runner, reqwest::Method::GET, &format!("{segment}/refreshes/{refresh_id}"), None).await;
    assert_eq!((status, &one), (StatusCode::OK, last), "{one}");
    let changes = format!("{segment}/refreshes/{refresh_id}/changes?kind=entered&limit=1000");
    let (status, page) = call(&http, &runner, reqwest::Method::GET, &changes, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut changed: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|c| c["accountId"].as_str().unwrap().to_owned()).collect();
    let mut member_ids = Vec::new();
    for page in 1.. {
        let path = format!("{segment}/accounts?limit=100&page={page}");
        let (status, members) = call(&http, &runner, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{members}");
        let items = members["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        member_ids.extend(items.iter().map(|m| m["accountId"].as_str().unwrap().to_owned()));
    }
    changed.sort();
    member_ids.sort();
    assert_eq!((changed.len() as u64, &changed), (entered, &member_ids));
    let (status, problem) =
        call(&http, &runner, reqwest::Method::GET, &format!("{segment}/refreshes/{refresh_id}/changes"), None).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("kind")), "{problem}");

    // The events of the segment, in order, with the refresh's counts.
    let events = printed_events(dir.path());
    let kinds: Vec<&str> = of_segment(&events, &id).iter().map(|e| e["detail-type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Segment Created", "Segment Membership Changed"], "{events:?}");
    let changed_event = of_segment(&events, &id)[1];
    assert_eq!(changed_event["source"], "financial-segments");
    let detail = &changed_event["detail"];
    assert_eq!(
        (detail["refreshId"].as_str(), detail["entered"].as_u64(), detail["memberCount"].as_u64()),
        (Some(refresh_id.as_str()), Some(entered), Some(entered)),
        "{changed_event}"
    );

    // `--follow` prints what is there, then a line appended later (a PATCH's "Segment Updated").
    let mut follow = Command::new(BIN)
        .args(["events", "--follow", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("segments events --follow starts");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = || lines.recv_timeout(Duration::from_secs(30)).expect("a line of segments events --follow");
    for expected in &events {
        assert_eq!(&serde_json::from_str::<Value>(&next_line()).unwrap(), expected);
    }
    let (status, patched) =
        call(&http, &runner, reqwest::Method::PATCH, &segment, Some(json!({"name": "Richer"}))).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let appended: Value = serde_json::from_str(&next_line()).unwrap();
    assert_eq!(
        (appended["detail-type"].as_str(), appended["detail"]["segmentId"].as_str()),
        (Some("Segment Updated"), Some(id.as_str())),
        "{appended}"
    );

    // Ctrl-C ends it cleanly.
    let interrupted = Command::new("kill").args(["-INT", &follow.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let status =
        crate::support::process::wait_bounded(&mut follow, Duration::from_secs(10)).expect("it stops on Ctrl-C");
    assert!(status.success(), "{status:?}");
}
