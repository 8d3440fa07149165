//! `segments serve --aws` with Cognito access tokens, as a user runs it against the AWS resources
//! with tokens of the real user pool. The test plays the user pool: a key server on 127.0.0.1
//! serves the public keys (the fixtures' test keys) at `<issuer>/.well-known/jwks.json` and the
//! test signs access tokens with the private keys. The resources are in moto.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use segments_aws::provision;
use serde_json::{Value, json};

use crate::support::moto::{MotoServer, REGION};
use crate::support::runner::{BIN, cli_token};

const KEY_A: &str = include_str!("../fixtures/cognito/test-signing-key-a.pem");
const KEY_B: &str = include_str!("../fixtures/cognito/test-signing-key-b.pem");
/// A bank's app client: its id is the mandator.
const BANK_CLIENT: &str = "bank-1-client";
/// The console's app client: its users act for the mandator of their one group.
const CONSOLE_CLIENT: &str = "console-client";
/// How far the runner's leeway reaches (src/cognito.rs: 60 s), with a margin.
const BEYOND_LEEWAY_SECONDS: i64 = 120;

/// The DER inside a PKCS#1 PEM file (the fixtures carry a line of explanation first).
fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).expect("a PEM fixture")
}

fn public_jwk(pem: &str, kid: &str) -> Value {
    let key = EncodingKey::from_rsa_der(&pem_der(pem));
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("an RSA key");
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    serde_json::to_value(jwk).expect("a JWK")
}

fn sign(pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(&pem_der(pem))).expect("signed")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The user pool's side: its JWKS, replaceable, and how often it was fetched.
struct UserPool {
    issuer: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl UserPool {
    async fn start(keys: Value) -> UserPool {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/eu-central-1_TestPool/.well-known/jwks.json",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                async move { axum::Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}/eu-central-1_TestPool", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        UserPool { issuer, keys, fetches }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The claims of an access token Cognito issues to `client_id` (client-credentials flow).
    fn access_claims(&self, client_id: &str) -> Value {
        json!({
            "sub": client_id, "client_id": client_id, "token_use": "access", "iss": self.issuer,
            "scope": "segments/highBalance segments/definitions.read", "auth_time": now(),
            "iat": now(), "exp": now() + 3600, "jti": "8d1f0c2e", "version": 2,
        })
    }

    fn token(&self, client_id: &str) -> String {
        sign(KEY_A, "a", &self.access_claims(client_id))
    }

    fn token_with(&self, claim: &str, value: Value) -> String {
        let mut claims = self.access_claims(BANK_CLIENT);
        claims[claim] = value;
        sign(KEY_A, "a", &claims)
    }
}

/// A `segments serve --aws` process on moto's resources; stopped when dropped. Its stderr (the
/// log) is collected.
struct AwsRunner {
    child: Child,
    url: String,
    /// The first line `serve` printed.
    announcement: Value,
    log: Arc<Mutex<Vec<String>>>,
    data_dir: std::path::PathBuf,
    _data_dir: tempfile::TempDir,
}

impl AwsRunner {
    async fn start(moto: &MotoServer, prefix: &str, cognito_args: &[&str]) -> AwsRunner {
        let clients = moto.clients().await;
        // Everything `serve --aws` reads, as `segments provision --aws` makes it.
        let service = provision::provision_service(&clients, prefix, 5).await.expect("provisioned").service;

        let data_dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--aws", "--port", "0", "--json", "--workers", "1", "--data-dir"])
            .arg(data_dir.path())
            .args(cognito_args)
            .envs(service.env_vars())
            .env("CONSOLE_CLIENT_ID", CONSOLE_CLIENT)
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn")
            .env_remove("AWS_PROFILE")
            .env_remove("COGNITO_USER_POOL_ID")
            .env_remove("COGNITO_ISSUER")
            .env_remove("COGNITO_CLIENT_IDS");
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("segments starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let collected = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the first line of serve");
        let announcement: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}; log: {:?}", log.lock().unwrap()));
        AwsRunner {
            child,
            url: announcement["url"].as_str().expect("url").to_owned(),
            announcement,
            log,
            data_dir: data_dir.path().to_owned(),
            _data_dir: data_dir,
        }
    }

    /// Waits until the log holds `count` lines containing `text`.
    async fn await_log(&self, text: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = self.log.lock().unwrap().iter().filter(|l| l.contains(text)).cloned().collect();
            if lines.len() >= count {
                return lines;
            }
            assert!(Instant::now() < deadline, "{count} log lines with {text:?}: {:?}", self.log.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AwsRunner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status and body of `GET path` with `token`; a 401 must be a problem.
async fn get(http: &reqwest::Client, runner: &AwsRunner, token: &str, path: &str) -> (StatusCode, Value) {
    let response =
        http.get(format!("{}{path}", runner.url)).bearer_auth(token).send().await.expect("the runner answers");
    let status = response.status();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(content_type, "application/problem+json", "{body}");
        assert_eq!(body["status"], 401, "{body}");
    }
    (status, body)
}

const JOBS: &str = "/segments/highBalance";
const BANK_SEGMENTS: &str = "/v1/organizations/bank-1-client/segments";

#[tokio::test(flavor = "multi_thread")]
async fn serve_aws_takes_the_user_pools_access_tokens_and_refuses_every_other() {
    let pool = UserPool::start(json!({"keys": [public_jwk(KEY_A, "a")]})).await;
    let moto = MotoServer::start();
    let clients = format!("{BANK_CLIENT},{CONSOLE_CLIENT}");
    let runner =
        AwsRunner::start(&moto, "cognito", &["--cognito-issuer", &pool.issuer, "--cognito-client-id", &clients]).await;
    assert_eq!(runner.announcement["issuer"], pool.issuer.as_str());
    assert_eq!(runner.announcement["clientIds"], json!([BANK_CLIENT, CONSOLE_CLIENT]));
    assert!(runner.announcement.get("token").is_none(), "no development token: {}", runner.announcement);
    assert_eq!(pool.fetches(), 1, "the key set is fetched at start");
    segments_core::usecases::callbacks::install_tls_provider();
    let http = reqwest::Client::new();

    // A bank's access token: its client id is the mandator.
    let token = pool.token(BANK_CLIENT);
    let (status, jobs) = get(&http, &runner, &token, JOBS).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    let (status, segments) = get(&http, &runner, &token, BANK_SEGMENTS).await;
    assert_eq!(status, StatusCode::OK, "{segments}");

    // A console user's: the claims reach the functions as the authorizer gives them, so the one
    // group of `cognito:groups` (an array in the token) is the mandator.
    let mut console = pool.access_claims(CONSOLE_CLIENT);
    console["cognito:groups"] = json!(["bank-2"]);
    console["username"] = json!("alice");
    let console = sign(KEY_A, "a", &console);
    assert_eq!(get(&http, &runner, &console, "/v1/organizations/bank-2/segments").await.0, StatusCode::OK);
    assert_eq!(get(&http, &runner, &console, BANK_SEGMENTS).await.0, StatusCode::NOT_FOUND);

    // Refused, each for its reason: 401 problem+json, the reason in the log, never the token.
    let unknown_client = pool.token_with("client_id", json!("bank-9-client"));
    let refused = [
        (
            "wrong issuer",
            pool.token_with("iss", json!("https://cognito-idp.eu-central-1.amazonaws.com/other")),
            "issuer",
        ),
        ("expired", pool.token_with("exp", json!(now() - BEYOND_LEEWAY_SECONDS)), "expired"),
        ("an id token", pool.token_with("token_use", json!("id")), "token_use"),
        ("unknown client", unknown_client, "client_id"),
        ("bad signature", sign(KEY_B, "a", &pool.access_claims(BANK_CLIENT)), "signature"),
        ("unknown kid", sign(KEY_B, "b", &pool.access_claims(BANK_CLIENT)), "key id"),
        ("development token", cli_token(&runner.data_dir, "bank-1-client", &[]), "RS256"),
    ];
    for (case, token, _) in &refused {
        let (status, body) = get(&http, &runner, token, JOBS).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
    }
    let log = runner.await_log("bearer token refused", refused.len()).await;
    for (case, token, reason) in &refused {
        assert!(log.iter().any(|line| line.contains(reason)), "{case}: no {reason:?} in {log:?}");
        assert!(!log.iter().any(|line| line.contains(token.as_str())), "{case}: the token was logged");
    }
    // The unknown kid made the runner look for a new key once.
    assert_eq!(pool.fetches(), 2);

    // Many requests with known keys, and more made-up key ids: the key set is not fetched again.
    for _ in 0..10 {
        assert_eq!(get(&http, &runner, &token, JOBS).await.0, StatusCode::OK);
        let forged = sign(KEY_B, &format!("forged-{}", uuid::Uuid::new_v4()), &pool.access_claims(BANK_CLIENT));
        assert_eq!(get(&http, &runner, &forged, JOBS).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(pool.fetches(), 2, "known keys come from the cache; unknown ones wait for the interval");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_aws_picks_up_a_rotated_key_with_one_fetch() {
    let pool = UserPool::start(json!({"keys": [public_jwk(KEY_A, "a")]})).await;
    let moto = MotoServer::start();
    let runner =
        AwsRunner::start(&moto, "rotation", &["--cognito-issuer", &pool.issuer, "--cognito-client-id", BANK_CLIENT])
            .await;
    segments_core::usecases::callbacks::install_tls_provider();
    let http = reqwest::Client::new();
    let old = pool.token(BANK_CLIENT);
    assert_eq!(get(&http, &runner, &old, JOBS).await.0, StatusCode::OK);

    // The pool publishes key b and signs new tokens with it; tokens of key a stay valid.
    *pool.keys.lock().unwrap() = json!({"keys": [public_jwk(KEY_A, "a"), public_jwk(KEY_B, "b")]});
    let new = sign(KEY_B, "b", &pool.access_claims(BANK_CLIENT));
    for _ in 0..10 {
        assert_eq!(get(&http, &runner, &new, JOBS).await.0, StatusCode::OK);
        assert_eq!(get(&http, &runner, &old, BANK_SEGMENTS).await.0, StatusCode::OK);
    }
    assert_eq!(pool.fetches(), 2, "one fetch at start, one for the new key");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_aws_without_cognito_keeps_development_tokens() {
    let moto = MotoServer::start();
    let runner = AwsRunner::start(&moto, "devtokens", &[]).await;
    let token = runner.announcement["token"].as_str().expect("a development token").to_owned();
    segments_core::usecases::callbacks::install_tls_provider();
    let http = reqwest::Client::new();
    assert_eq!(get(&http, &runner, &token, JOBS).await.0, StatusCode::OK);
    let pool = UserPool::start(json!({"keys": [public_jwk(KEY_A, "a")]})).await;
    assert_eq!(get(&http, &runner, &pool.token(BANK_CLIENT), JOBS).await.0, StatusCode::UNAUTHORIZED);
}

#[test]
fn cognito_options_need_aws_and_app_clients() {
    let refused = |args: &[&str]| {
        let out = Command::new(BIN).arg("serve").args(args).output().expect("segments runs");
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(&["--port", "0", "--cognito-user-pool-id", "eu-central-1_AbC123"]);
    assert!(stderr.contains("--aws"), "{stderr}");
    let stderr = refused(&["--aws", "--port", "0", "--cognito-user-pool-id", "eu-central-1_AbC123"]);
    assert!(stderr.contains("app client"), "{stderr}");
    let stderr = refused(&["--aws", "--port", "0", "--cognito-user-pool-id", "AbC123", "--cognito-client-id", "c"]);
    assert!(stderr.contains("<region>_<id>"), "{stderr}");
    let stderr =
        refused(&["--aws", "--port", "0", "--cognito-issuer", "http://issuer.example/p", "--cognito-client-id", "c"]);
    assert!(stderr.contains("https"), "{stderr}");
}
