//! The README's `cargo lambda` section, run as printed against moto: `segments provision --aws
//! --env-file`, an import, `cargo lambda watch` serving the workspace's functions, then
//! `cargo lambda invoke` of create-job, the high-balance worker and get-result with the events of
//! `events/`. The result must be what the segment rules give on the imported files.
//!
//! Needs cargo-lambda (and zig beside it): `CARGO_LAMBDA_DIR` names their directory, as
//! tests/run.sh exports it. The first run builds the three functions in debug.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::provision::{env_lines, provision_cli};
use crate::support::flows::{as_reference, expected_entries, users_from_files};
use crate::support::moto::MotoServer;
use crate::support::process::{drain, wait_bounded};
use crate::support::runner::BIN;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// How long `cargo lambda watch` may take to listen.
const WATCH_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// One invocation, including building the function the first time (debug, on two busy cores).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long `cargo lambda watch` gets to stop its functions after SIGTERM.
const WATCH_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// PATH with cargo-lambda's directory first (zig beside it), and cargo's own.
fn path_with_cargo_lambda() -> std::ffi::OsString {
    let dir = match std::env::var_os("CARGO_LAMBDA_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!("CARGO_LAMBDA_DIR is not set: run tests/run.sh, which installs cargo-lambda and exports it"),
    };
    assert!(
        dir.join("cargo-lambda").is_file(),
        "no cargo-lambda in CARGO_LAMBDA_DIR={}: run tests/run.sh",
        dir.display()
    );
    let mut dirs = vec![dir];
    if let Some(cargo_dir) =
        std::env::var_os("CARGO").map(PathBuf::from).and_then(|c| c.parent().map(Path::to_path_buf))
    {
        dirs.push(cargo_dir);
    }
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).expect("a valid PATH")
}

/// The AWS environment of the functions and the CLI: test credentials, nothing of the machine's.
fn aws_test_env(cmd: &mut Command) -> &mut Command {
    for inherited in ["AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"] {
        cmd.env_remove(inherited);
    }
    cmd.env("AWS_ACCESS_KEY_ID", "test").env("AWS_SECRET_ACCESS_KEY", "test").env("AWS_EC2_METADATA_DISABLED", "true")
}

/// A running `cargo lambda watch`, stopped when dropped (also when the test fails).
struct Watch {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Watch {
    /// `cargo lambda watch -A 127.0.0.1 -P PORT --env-file ENV_FILE` from the repository root, as
    /// the README prints it (on a free port); waits until it listens.
    fn start(env_file: &Path, log: PathBuf) -> Watch {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let output = File::create(&log).expect("the watch log");
        let mut cmd = Command::new("cargo");
        cmd.args(["lambda", "watch", "-A", "127.0.0.1", "-P", &port.to_string(), "--env-file"])
            .arg(env_file)
            .current_dir(ROOT)
            .env("PATH", path_with_cargo_lambda())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("the log twice"))
            .stderr(output);
        let child = aws_test_env(&mut cmd).spawn().expect("cargo lambda watch starts");
        let mut watch = Watch { child, port, log };
        let deadline = Instant::now() + WATCH_READY_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = watch.child.try_wait() {
                panic!("cargo lambda watch exited at start ({status}):\n{}", watch.log_tail());
            }
            assert!(Instant::now() < deadline, "cargo lambda watch did not listen:\n{}", watch.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
        watch
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `cargo lambda invoke -A 127.0.0.1 -P PORT FUNCTION ARGS…`: the function's answer as JSON.
    fn invoke(&self, function: &str, payload: &[&str]) -> Value {
        let mut cmd = Command::new("cargo");
        cmd.args(["lambda", "invoke", "-A", "127.0.0.1", "-P", &self.port.to_string(), function])
            .args(payload)
            .current_dir(ROOT)
            .env("PATH", path_with_cargo_lambda())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = output_within(cmd.spawn().expect("cargo lambda invoke starts"), INVOKE_TIMEOUT)
            .unwrap_or_else(|| panic!("invoking {function} took over {INVOKE_TIMEOUT:?}:\n{}", self.log_tail()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "invoking {function}: {}\n{stdout}\nwatch:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{function} answered {stdout:?}: {e}"))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SIGTERM lets cargo-lambda stop the function processes it started (each in a process
        // group of its own); SIGKILL only if it does not exit.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + WATCH_STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's output once it exits, or `None` (and the child killed) after `timeout`.
fn output_within(mut child: Child, timeout: Duration) -> Option<Output> {
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let status = wait_bounded(&mut child, timeout)?;
    let text = |pipe: std::thread::JoinHandle<String>| pipe.join().unwrap_or_default().into_bytes();
    Some(Output { status, stdout: text(stdout), stderr: text(stderr) })
}

fn event(name: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join("events").join(name)).expect("the event fixture")
}

/// The job id the worker and get-result events carry, which the README replaces with the
/// created job's.
fn sample_job_id() -> String {
    let sqs: Value = serde_json::from_str(&event("sqs-high-balance.json")).unwrap();
    let body: Value = serde_json::from_str(sqs["Records"][0]["body"].as_str().unwrap()).unwrap();
    body["jobId"].as_str().unwrap().to_owned()
}

fn cli(args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v))).env("RUST_LOG", "warn");
    let out = aws_test_env(&mut cmd).output().expect("segments runs");
    assert!(out.status.success(), "segments {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn the_readme_cargo_lambda_flow_runs_a_job_end_to_end() {
    let started = Instant::now();
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("lambda.env");

    // Resources and their environment, as the README creates them.
    let provisioned = provision_cli(&moto, &["--prefix", "segments-dev", "--env-file", env_file.to_str().unwrap()]);
    assert!(provisioned.status.success(), "{}", String::from_utf8_lossy(&provisioned.stderr));
    let env: Vec<(String, String)> = env_lines(&std::fs::read_to_string(&env_file).unwrap()).into_iter().collect();

    // A few users of the events' mandator, in one shard: the worker event carries shard 0.
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    cli(&["generate", "--users", "40", "--mandator", "demo-bank", "--out", data_arg], &[]);
    let accounts = data.join("accounts.ndjson");
    let transactions = data.join("transactions.ndjson");
    cli(
        &[
            "import",
            "--aws",
            "--shards",
            "1",
            "--accounts",
            accounts.to_str().unwrap(),
            "--transactions",
            transactions.to_str().unwrap(),
        ],
        &env,
    );

    let watch = Watch::start(&env_file, dir.path().join("watch.log"));
    let create_event = Path::new("events/create-job-high-balance.json");
    let created = watch.invoke("create-job", &["--data-file", create_event.to_str().unwrap()]);
    assert_eq!(created["statusCode"], 202, "{created}");
    let created_body: Value = serde_json::from_str(created["body"].as_str().expect("a body")).unwrap();
    assert_eq!(created_body["status"], "QUEUED", "{created_body}");
    let job_id = created_body["jobId"].as_str().expect("a jobId").to_owned();

    // The README's step: the worker's event with the created job's id in place of the sample's.
    let sample = sample_job_id();
    let worker_event = event("sqs-high-balance.json").replace(&sample, &job_id);
    let worked = watch.invoke("worker-high-balance", &["--data-ascii", &worker_event]);
    assert_eq!(worked, serde_json::json!({"batchItemFailures": []}), "the worker succeeded");

    let result_event = event("get-result-high-balance.json").replace(&sample, &job_id);
    let result = watch.invoke("get-result", &["--data-ascii", &result_event]);
    assert_eq!(result["statusCode"], 200, "{result}");
    let page: Value = serde_json::from_str(result["body"].as_str().expect("a body")).unwrap();
    assert_eq!(page["jobId"], job_id.as_str());

    // The segment rules on the imported files, at the job's asOf, with the event's parameters.
    let create_json: Value = serde_json::from_str(&event("create-job-high-balance.json")).unwrap();
    let as_of = page["asOf"].as_str().expect("asOf").parse().expect("a date");
    let expected =
        expected_entries(&users_from_files(&data), "highBalance", create_json["body"].as_str().unwrap(), as_of);
    assert!(!expected.is_empty(), "the data must hold high balances for the check to mean anything");
    assert_eq!(page["totalElements"], expected.len(), "{page}");
    let per_page = page["perPage"].as_u64().expect("perPage") as usize;
    let users = page["users"].as_array().expect("users");
    assert_eq!(as_reference(users), as_reference(&expected[..expected.len().min(per_page)]));

    drop(watch);
    eprintln!("cargo lambda flow took {:?}", started.elapsed());
}
