//! The web console as the local runner serves it. Over plain HTTP: `/console/` and every file it
//! loads answer without a token, with the security headers, the right content types and ETags.
//! In a browser: `tests/console/browser_test.py` drives the whole console in headless Chromium
//! (Selenium) against `segments serve --demo`, as a person would use it, and
//! `tests/console/firefox_test.py` walks its main path in headless Firefox (WebDriver BiDi).
//!
//! The browser tests need Python with Selenium and websockets, Chromium with chromedriver, and
//! Firefox, which `tests/run.sh` installs; without them they fail with that hint rather than
//! passing untested.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::{drain, wait_bounded};
use crate::support::runner::{Runner, cli_token};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::Value;

/// The browser scenarios, run by the Python of `CONSOLE_BROWSER_PYTHON`.
const BROWSER_TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/browser_test.py");
/// The main path in Firefox, run by the same Python.
const FIREFOX_TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/firefox_test.py");
/// The whole browser run, start-up of Chromium included; the scenarios take a few minutes.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(600);

/// A client that reports redirects instead of following them, and never sends a token.
fn http() -> reqwest::Client {
    segments_core::usecases::callbacks::install_tls_provider();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client")
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// The content type a console file must be served with, by its extension.
fn expected_content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("js" | "mjs") => "text/javascript",
        Some("css") => "text/css",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("html") => "text/html",
        _ => panic!("the console names a file of an unexpected kind: {path}"),
    }
}

/// The values of `attr` in every `<tag …>` of `html` (`<script src>`, `<link href>`).
fn attribute_values(html: &str, tag: &str, attr: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let open = format!("<{tag}");
    let mut values = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find(&open).map(|i| from + i) {
        let end = lower[at..].find('>').map_or(lower.len(), |i| at + i);
        let element = &html[at..end];
        let element_lower = &lower[at..end];
        let mut search = 0;
        while let Some(pos) = element_lower[search..].find(attr).map(|i| search + i) {
            let before = element_lower[..pos].chars().next_back();
            let after = element_lower[pos + attr.len()..].trim_start();
            search = pos + attr.len();
            if before.is_some_and(char::is_whitespace) && after.starts_with('=') {
                let value = after[1..].trim_start();
                let offset = element_lower.len() - value.len();
                let quoted = &element[offset..];
                let value = match quoted.chars().next() {
                    Some(q @ ('"' | '\'')) => quoted[1..].split(q).next().unwrap_or_default(),
                    _ => quoted.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or_default(),
                };
                values.push(value.to_owned());
                break;
            }
        }
        from = end;
    }
    values
}

/// The relative modules a JavaScript module imports (`import … from "./x.js"`, `import "./x.js"`,
/// `import("./x.js")`).
fn module_imports(js: &str) -> Vec<String> {
    let mut found = Vec::new();
    for quote in ['"', '\''] {
        for start in [format!("from {quote}./"), format!("import {quote}./"), format!("import({quote}./")] {
            let mut rest = js;
            while let Some(i) = rest.find(&start) {
                rest = &rest[i + start.len() - 2..];
                if let Some(end) = rest.find(quote) {
                    found.push(rest[..end].to_owned());
                    rest = &rest[end..];
                } else {
                    break;
                }
            }
        }
    }
    found
}

/// A reference of the index resolved against `/console/`; `None` for `data:` URLs.
fn console_path(reference: &str) -> Option<String> {
    if reference.starts_with("data:") {
        return None;
    }
    assert!(
        !reference.contains("://") && !reference.starts_with("//"),
        "the console loads {reference} from another origin, which its own CSP forbids"
    );
    let reference = reference.split(['?', '#']).next().unwrap_or_default();
    Some(if reference.starts_with('/') {
        reference.to_owned()
    } else {
        format!("/console/{}", reference.trim_start_matches("./"))
    })
}

/// `/console` without its slash is the page itself, not a redirect (API Gateway may hand the
/// function either form, and a redirect between them could loop); so every file the page names
/// is an absolute path (a relative one would resolve outside `/console/`).
#[tokio::test(flavor = "multi_thread")]
async fn console_without_its_slash_reaches_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start(dir.path(), false);
    let http = http();
    let resp = http.get(format!("{}/console", runner.url)).send().await.expect("the runner answers");
    assert_eq!(resp.status(), StatusCode::OK, "/console answers the page");
    assert!(header(&resp, CONTENT_TYPE).starts_with("text/html"), "{}", header(&resp, CONTENT_TYPE));
    let page = resp.text().await.unwrap();
    let with_slash = http.get(format!("{}/console/", runner.url)).send().await.expect("the runner answers");
    assert_eq!(page, with_slash.text().await.unwrap(), "/console and /console/ answer different pages");
    for reference in attribute_values(&page, "script", "src").into_iter().chain(attribute_values(&page, "link", "href"))
    {
        assert!(
            reference.starts_with("/console/") || reference.starts_with("data:"),
            "the page is served at /console too, where {reference:?} resolves outside the console"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn console_page_and_every_file_it_loads_are_served_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start(dir.path(), false);
    let http = http();

    let resp = http.get(format!("{}/console/", runner.url)).send().await.expect("the runner answers");
    assert_eq!(resp.status(), StatusCode::OK, "/console/ without a token");
    assert!(header(&resp, CONTENT_TYPE).starts_with("text/html"), "{}", header(&resp, CONTENT_TYPE));
    let csp = header(&resp, reqwest::header::CONTENT_SECURITY_POLICY);
    assert!(csp.contains("default-src"), "Content-Security-Policy of /console/: {csp:?}");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&resp, reqwest::header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    let html = resp.text().await.unwrap();

    let named: Vec<String> =
        attribute_values(&html, "script", "src").into_iter().chain(attribute_values(&html, "link", "href")).collect();
    assert!(
        attribute_values(&html, "script", "src").iter().any(|s| s.ends_with(".js")),
        "the index names no script: {html}"
    );
    let mut pending: Vec<String> = named.iter().filter_map(|r| console_path(r)).collect();
    let mut seen = BTreeSet::new();
    while let Some(path) = pending.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let resp = http.get(format!("{}{path}", runner.url)).send().await.expect("the runner answers");
        assert_eq!(resp.status(), StatusCode::OK, "{path} (named by the console) without a token");
        let content_type = header(&resp, CONTENT_TYPE);
        let expected = expected_content_type(&path);
        assert!(
            content_type.starts_with(expected)
                || (expected == "text/javascript" && content_type.starts_with("application/javascript")),
            "{path} is served as {content_type:?}, not {expected}"
        );
        assert_eq!(header(&resp, reqwest::header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
        let body = resp.text().await.unwrap();
        assert!(!body.trim().is_empty(), "{path} is empty");
        if path.ends_with(".js") {
            let base = &path[..path.rfind('/').expect("a path") + 1];
            pending.extend(module_imports(&body).into_iter().map(|m| format!("{base}{}", m.trim_start_matches("./"))));
        }
    }
    assert!(seen.len() >= 2, "the console loads {seen:?}");

    // How the page signs in on the local runner.
    let resp = http.get(format!("{}/console/config.json", runner.url)).send().await.expect("the runner answers");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, CONTENT_TYPE).starts_with("application/json"), "{}", header(&resp, CONTENT_TYPE));
    let config: Value = resp.json().await.unwrap();
    assert_eq!(config["signIn"], "token", "{config}");

    // A token, even one for another mandator or a wrong one, changes nothing: the files carry no data.
    let other = cli_token(dir.path(), "other-bank", &[]);
    for token in [other.as_str(), "not-a-token"] {
        let resp =
            http.get(format!("{}/console/", runner.url)).bearer_auth(token).send().await.expect("the runner answers");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.text().await.unwrap(), html);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn console_refuses_unknown_files_and_methods_other_than_get() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start(dir.path(), false);
    let http = http();
    for path in ["/console/nowhere.js", "/console/index.htm", "/console/..%2fCargo.toml", "/console/assets/app.js"] {
        let resp = http.get(format!("{}{path}", runner.url)).send().await.expect("the runner answers");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    for path in ["/console/", "/console/config.json"] {
        let resp = http.post(format!("{}{path}", runner.url)).body("{}").send().await.expect("the runner answers");
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "POST {path}");
    }
    let resp = http.delete(format!("{}/console/", runner.url)).send().await.expect("the runner answers");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "DELETE /console/");
}

#[tokio::test(flavor = "multi_thread")]
async fn console_answers_not_modified_to_a_current_etag() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start(dir.path(), false);
    let http = http();
    for path in ["/console/", "/console/config.json"] {
        let url = format!("{}{path}", runner.url);
        let first = http.get(&url).send().await.expect("the runner answers");
        assert_eq!(first.status(), StatusCode::OK, "{path}");
        let etag = header(&first, ETAG);
        assert!(etag.starts_with('"') || etag.starts_with("W/\""), "{path}: ETag {etag:?}");
        let body = first.bytes().await.unwrap();

        let again = http.get(&url).header(IF_NONE_MATCH, &etag).send().await.expect("the runner answers");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path} with If-None-Match {etag}");
        assert_eq!(header(&again, ETAG), etag);
        assert!(again.bytes().await.unwrap().is_empty());

        let stale = http.get(&url).header(IF_NONE_MATCH, "\"stale\"").send().await.expect("the runner answers");
        assert_eq!(stale.status(), StatusCode::OK, "{path} with a stale ETag");
        assert_eq!(stale.bytes().await.unwrap(), body);
    }
}

/// `$CONSOLE_BROWSER_PYTHON`, the Python with Selenium that `tests/run.sh` installs.
fn browser_python() -> PathBuf {
    match std::env::var_os("CONSOLE_BROWSER_PYTHON") {
        Some(path) if Path::new(&path).is_file() => PathBuf::from(path),
        Some(path) => panic!(
            "CONSOLE_BROWSER_PYTHON names {}, which does not exist: run tests/run.sh (it installs Selenium \
             and websockets into .venv, Chromium with its driver and Firefox)",
            Path::new(&path).display()
        ),
        None => panic!(
            "CONSOLE_BROWSER_PYTHON is not set: run tests/run.sh (it installs Selenium and websockets into .venv, Chromium \
             with its driver and Firefox), or set it to a Python with Selenium and websockets, e.g. CONSOLE_BROWSER_PYTHON=$PWD/.venv/bin/python"
        ),
    }
}

/// A browser program: `$VAR` when set, else its Debian path; it must exist.
fn browser_program(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).filter(|p| !p.is_empty()).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: run tests/run.sh (it installs Debian's chromium, chromium-driver and firefox-esr), or set {var}",
        path.display()
    );
    path
}

/// The build's target directory: the parent of the integration tests' scratch directory.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), Path::to_path_buf)
}

#[test]
fn console_works_in_a_browser_against_the_demo_runner() {
    let chromium = browser_program("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = browser_program("CHROMEDRIVER", "/usr/bin/chromedriver");
    let screenshots = screenshots_dir(true);
    run_browser_script(
        BROWSER_TEST,
        &[
            ("CONSOLE_SCREENSHOTS", screenshots.as_os_str()),
            ("CHROMIUM", chromium.as_os_str()),
            ("CHROMEDRIVER", chromedriver.as_os_str()),
            // Selenium must not try to download a browser or driver of its own: nothing to fetch here.
            ("SE_OFFLINE", "true".as_ref()),
        ],
    );
}

#[test]
fn console_works_in_firefox_against_the_demo_runner() {
    let firefox = browser_program("FIREFOX", "/usr/bin/firefox-esr");
    let screenshots = screenshots_dir(false);
    run_browser_script(
        FIREFOX_TEST,
        &[("CONSOLE_SCREENSHOTS", screenshots.as_os_str()), ("FIREFOX", firefox.as_os_str())],
    );
}

/// `target/console-screenshots`; emptied first by the Chromium test (which runs the most), so
/// that what is there afterwards is this run's.
fn screenshots_dir(empty_first: bool) -> PathBuf {
    let screenshots = target_dir().join("console-screenshots");
    if empty_first {
        for entry in std::fs::read_dir(&screenshots).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with("firefox-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    std::fs::create_dir_all(&screenshots).expect("the screenshots directory");
    screenshots
}

/// Runs a browser script against a fresh `segments serve --demo` and fails with its output unless
/// it succeeds within `BROWSER_TIMEOUT`.
fn run_browser_script(script: &str, env: &[(&str, &std::ffi::OsStr)]) {
    let python = browser_python();
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::start(dir.path(), true);
    let started = Instant::now();
    let mut command = Command::new(&python);
    command
        .arg("-u")
        .arg(script)
        .env("CONSOLE_URL", format!("{}/console/", runner.url))
        .env("CONSOLE_TOKEN", &runner.token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, so a timeout stops the browser it started too.
        .process_group(0);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", python.display()));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, BROWSER_TIMEOUT);
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    let report = format!(
        "--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n(screenshots in {})",
        target_dir().join("console-screenshots").display()
    );
    match status {
        Some(status) if status.success() => {
            eprintln!("{script} passed in {:.0?}\n{report}", started.elapsed());
        }
        Some(status) => panic!("{script} failed ({status}) after {:.0?}\n{report}", started.elapsed()),
        None => panic!("{script} did not finish within {BROWSER_TIMEOUT:?} and was stopped\n{report}"),
    }
}
