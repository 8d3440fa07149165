//! A local AWS-compatible server (moto in server mode) for integration tests: each test starts
//! its own server, talks to it over real HTTP with the real SDK clients, and stops it when the
//! server value is dropped. Tests run in parallel without sharing any state.
//!
//! The server is installed by `tests/run.sh` into `.venv`; `MOTO_SERVER` may name another
//! `moto_server`. A missing server fails the test: AWS-facing code is never silently left untested.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use segments_aws::AwsClients;

pub const REGION: &str = "eu-central-1";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The launcher of the server (`tests/moto_launcher.py`, shared with the benchmarks): moto's
/// application with the differences its docstring lists (a free port printed at start, DynamoDB
/// requests one at a time, partition-only Query, AttributeValues written as held).
const LAUNCHER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto_launcher.py");

/// The launcher with IAM enforcement corrected to AWS's rules (its docstring lists them).
const IAM_LAUNCHER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto_iam_launcher.py");

/// A running moto server; dropping it stops the process.
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts a server on a free port of 127.0.0.1 and waits until it answers.
    pub fn start() -> MotoServer {
        Self::launch(LAUNCHER, None)
    }

    /// Starts a server that enforces IAM (`tests/moto_iam_launcher.py`): the first
    /// `unchecked_requests` requests are not checked (`INITIAL_NO_AUTH_ACTION_COUNT`), every later
    /// one must be signed with an access key of an IAM user whose policies allow it. Refused
    /// requests are listed by [`MotoServer::denials`].
    pub fn start_with_iam(unchecked_requests: u32) -> MotoServer {
        Self::launch(IAM_LAUNCHER, Some(unchecked_requests))
    }

    fn launch(launcher: &str, unchecked_requests: Option<u32>) -> MotoServer {
        let binary = moto_binary();
        let python = python_of(&binary);
        let mut command = Command::new(&python);
        if let Some(count) = unchecked_requests {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", count.to_string());
        }
        let mut child = command
            .arg(launcher)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto with {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (port_tx, port_rx) = mpsc::channel();
        // Reads the port, then drains the output until the server exits.
        thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let (Ok(port), Some(tx)) = (line.trim().parse::<u16>(), port_tx.take()) {
                    let _ = tx.send(port);
                }
            }
        });

        let deadline = Instant::now() + READY_TIMEOUT;
        let port = loop {
            match port_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("moto ({}) exited at start: {status}", python.display());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("moto ({}) did not report its port within {READY_TIMEOUT:?}", python.display());
                }
            }
        };
        let mut server = MotoServer { child, port };
        server.wait_until_answering(deadline);
        server
    }

    fn wait_until_answering(&mut self, deadline: Instant) {
        loop {
            if answers_http(self.port) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto server exited at start: {status}");
            }
            if Instant::now() >= deadline {
                panic!("moto server on port {} did not answer within {READY_TIMEOUT:?}", self.port);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:{port}`: an IP, not `localhost`, so S3 addressing never needs DNS.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK configuration for this server only: its endpoint, region eu-central-1 and static
    /// test credentials; nothing is taken from the environment of the test process.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .empty_test_environment()
            .endpoint_url(self.endpoint())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("test", "test", None, None, "moto-test"))
            .load()
            .await
    }

    /// The service's clients, built the way the functions build them, for this server.
    pub async fn clients(&self) -> AwsClients {
        AwsClients::from_sdk_config(&self.sdk_config().await)
    }

    /// Clears all state of the server.
    pub async fn reset(&self) {
        segments_core::usecases::callbacks::install_tls_provider();
        let response = reqwest::Client::new()
            .post(format!("{}/moto-api/reset", self.endpoint()))
            .send()
            .await
            .expect("moto answers the reset");
        assert!(response.status().is_success(), "moto reset answered {}", response.status());
    }
}

/// A request an IAM-enforcing server refused: the caller's access key id, the IAM action it
/// lacked (`dynamodb:PutItem`) and the resource it asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Denial {
    pub access_key_id: String,
    pub action: String,
    pub resource: String,
}

impl MotoServer {
    /// Every request a server started by [`MotoServer::start_with_iam`] has refused, oldest first.
    pub async fn denials(&self) -> Vec<Denial> {
        segments_core::usecases::callbacks::install_tls_provider();
        reqwest::Client::new()
            .get(format!("{}/moto-iam/denials", self.endpoint()))
            .send()
            .await
            .expect("moto answers")
            .json()
            .await
            .expect("a list of denials")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$MOTO_SERVER`, else `.venv/bin/moto_server` in the workspace root.
fn moto_binary() -> PathBuf {
    let binary = match std::env::var_os("MOTO_SERVER") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"),
    };
    if !binary.is_file() {
        panic!(
            "moto not installed: run tests/run.sh (it installs moto into .venv), or set MOTO_SERVER \
             (looked for {})",
            binary.display()
        );
    }
    binary
}

/// The Python interpreter of a `moto_server` script: its `#!` line, else the `python3` beside it.
fn python_of(moto_server: &Path) -> PathBuf {
    let first_line = std::fs::read(moto_server)
        .ok()
        .and_then(|bytes| bytes.split(|b| *b == b'\n').next().map(|l| String::from_utf8_lossy(l).into_owned()));
    if let Some(interpreter) = first_line.as_deref().and_then(|l| l.strip_prefix("#!")).map(str::trim)
        && !interpreter.is_empty()
        && !interpreter.contains(' ')
        && Path::new(interpreter).is_file()
    {
        return PathBuf::from(interpreter);
    }
    moto_server.with_file_name("python3")
}

/// Whether an HTTP request to the port gets an HTTP response.
fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
