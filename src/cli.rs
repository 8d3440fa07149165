//! Subcommands of `segments`.

use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::generate::{self, GenerateConfig};
use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use segments_aws as aws;
use segments_core::config::ServiceConfig;
use segments_core::domain::MandatorId;
use segments_core::domain::records::{DEFAULT_SHARD_COUNT, MAX_SHARD_COUNT};
use segments_core::imports::{ImportMode, ImportRecord};
use segments_core::usecases::Services;
use segments_core::usecases::import::{ImportError, ImportOptions, ImportPhase, ImportProgress, Importer};
use segments_core::usecases::run_shard::RetrySchedule;
use segments_core::usecases::sweep::SweepConfig;
use segments_embedded::{EmbeddedStore, EventFile, LocalLinks};

use crate::cognito::{CognitoSettings, CognitoVerifier};
use crate::progress::Progress;
use crate::server::{Gateway, router};
use crate::token::{Signer, all_scopes};
use crate::workers::LocalRefreshConfig;

/// Financial segments: segment a mandator's users by their account data.
#[derive(Debug, Parser)]
#[command(name = "segments", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the whole HTTP API on 127.0.0.1 with in-process workers.
    Serve(ServeArgs),
    /// Print a bearer token that `serve` on the same data directory accepts.
    Token(TokenArgs),
    /// Write synthetic accounts.ndjson and transactions.ndjson, deterministic per seed.
    Generate(GenerateArgs),
    /// Load accounts.ndjson and transactions.ndjson into the store.
    Import(ImportArgs),
    /// Print a mandator's callback signing secret (64 hex digits), creating it on first use.
    CallbackSecret(CallbackSecretArgs),
    /// Create the tables, queues, bucket and event bus on AWS or an AWS-compatible server, and
    /// print the environment the functions and `serve --aws` need.
    Provision(ProvisionArgs),
    /// Print the segment events `serve` published (its data directory's events.ndjson), one JSON
    /// object per line, as EventBridge would deliver them.
    Events(EventsArgs),
}

#[derive(Debug, Args)]
pub struct DataDir {
    /// Directory of the embedded store and the token signing secret.
    #[arg(long, env = "SEGMENTS_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Generate and import demo data when the store has none, and print a ready token.
    #[arg(long)]
    pub demo: bool,
    /// Users of the demo data.
    #[arg(long, default_value_t = 1000)]
    pub demo_users: u64,
    /// Use the AWS adapters (DynamoDB, S3, SQS, EventBridge) configured by the usual AWS
    /// environment and ACCOUNT_DATA_TABLE, JOBS_TABLE, RESULTS_BUCKET, SEGMENTS_TABLE,
    /// <TYPE>_QUEUE_URL, IMPORT_QUEUE_URL, REFRESH_QUEUE_URL, EVENT_BUS_NAME.
    #[arg(long)]
    pub aws: bool,
    /// Jobs run at once by the in-process workers.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Print the address and token as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cognito: CognitoArgs,
}

/// With `--aws`: accept the access tokens of a Cognito user pool, checked as the deployed API's
/// JWT authorizer checks them, instead of development tokens.
#[derive(Debug, Args)]
pub struct CognitoArgs {
    /// The user pool whose access tokens are accepted (e.g. eu-central-1_AbC123xyz); its issuer
    /// is https://cognito-idp.<region>.amazonaws.com/<id>, the region being the id's prefix.
    #[arg(long, env = "COGNITO_USER_POOL_ID", requires = "aws", conflicts_with = "cognito_issuer")]
    pub cognito_user_pool_id: Option<String>,
    /// Accept tokens of this issuer instead of a user pool's: for a Cognito emulator or a test's
    /// key server (https, or http to a loopback address). Keys are read from
    /// <issuer>/.well-known/jwks.json.
    #[arg(long, env = "COGNITO_ISSUER", requires = "aws")]
    pub cognito_issuer: Option<String>,
    /// An app client whose access tokens are accepted (its id is the token's `client_id`): the
    /// authorizer's audience. Repeatable, or comma separated in the variable.
    #[arg(long = "cognito-client-id", env = "COGNITO_CLIENT_IDS", value_delimiter = ',')]
    pub cognito_client_ids: Vec<String>,
}

impl CognitoArgs {
    /// The settings when a user pool or issuer is given.
    fn settings(&self) -> anyhow::Result<Option<CognitoSettings>> {
        let settings = match (&self.cognito_user_pool_id, &self.cognito_issuer) {
            (Some(pool), _) => CognitoSettings::for_user_pool(pool, &self.cognito_client_ids)
                .context("--cognito-user-pool-id / --cognito-client-id")?,
            (None, Some(issuer)) => CognitoSettings::for_issuer(issuer, &self.cognito_client_ids)
                .context("--cognito-issuer / --cognito-client-id")?,
            (None, None) if self.cognito_client_ids.is_empty() => return Ok(None),
            (None, None) => bail!("--cognito-client-id needs --cognito-user-pool-id (or --cognito-issuer)"),
        };
        Ok(Some(settings))
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The mandator the token is for.
    #[arg(long)]
    pub mandator: String,
    /// A scope to grant (repeatable); all scopes when none is given.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    #[command(flatten)]
    pub data: DataDir,
    /// Validity in hours.
    #[arg(long, default_value_t = 12)]
    pub ttl_hours: i64,
    /// Print `{"token": …}` instead of the bare token.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of users.
    #[arg(long)]
    pub users: u64,
    /// Seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Mandator of the generated data.
    #[arg(long, default_value = "demo-bank")]
    pub mandator: String,
    /// Balance date of the accounts, the last day of history (default: today, UTC).
    #[arg(long)]
    pub end_date: Option<NaiveDate>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// accounts.ndjson: one account per line (docs/data.md).
    #[arg(long)]
    pub accounts: PathBuf,
    /// transactions.ndjson: one transaction per line; each must belong to an account of the file.
    #[arg(long)]
    pub transactions: PathBuf,
    #[command(flatten)]
    pub data: DataDir,
    /// Import into DynamoDB (ACCOUNT_DATA_TABLE; the import's record in JOBS_TABLE, memberships in
    /// SEGMENTS_TABLE; the usual AWS environment) instead.
    #[arg(long)]
    pub aws: bool,
    /// Mandator to import; every line must belong to it (default: the first line's).
    #[arg(long)]
    pub mandator: Option<String>,
    /// `upsertUsers` replaces each user of the files as a unit and leaves the mandator's other
    /// users; `replaceMandator` also erases every stored user the files do not contain.
    #[arg(long, default_value = "upsertUsers", value_parser = parse_mode)]
    pub mode: ImportMode,
    /// Shards the mandator's data is spread over. Fixed at its first import (default 16); later
    /// imports use the recorded count.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_SHARD_COUNT as i64))]
    pub shards: Option<u32>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_mode(s: &str) -> Result<ImportMode, String> {
    ImportMode::parse(s).ok_or_else(|| format!("{s:?} is not upsertUsers or replaceMandator"))
}

#[derive(Debug, Args)]
pub struct CallbackSecretArgs {
    /// The mandator whose secret to print.
    #[arg(long)]
    pub mandator: String,
    #[command(flatten)]
    pub data: DataDir,
    /// Read (or create) it in the Jobs table (JOBS_TABLE and the usual AWS environment) instead.
    #[arg(long)]
    pub aws: bool,
    /// Print `{"mandator": …, "secret": …}` instead of the bare secret.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// Keep printing the events published later, until Ctrl-C (waits for the file if there is
    /// none yet).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Create them with the usual AWS environment (credentials, AWS_REGION, and AWS_ENDPOINT_URL
    /// for a local AWS-compatible server). Required: the embedded store needs no provisioning.
    #[arg(long)]
    pub aws: bool,
    /// Prefix of every resource name: `{prefix}-jobs`, `{prefix}-results`, `{prefix}-high-balance`…
    #[arg(long, default_value = "segments-dev")]
    pub prefix: String,
    /// Receives after which a message moves to its queue's dead-letter queue; printed as the
    /// workers' MAX_RECEIVE_COUNT, which must be equal.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receive_count: u32,
    /// Print the environment as one JSON object instead of KEY=value lines.
    #[arg(long)]
    pub json: bool,
    /// Also write the environment, with AWS_ENDPOINT_URL and AWS_REGION when they are set, to
    /// this file: KEY=value lines, as `cargo lambda watch --env-file` reads them.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Token(a) => token(a),
        Command::Generate(a) => generate_files(a),
        Command::Import(a) => import_files(a).await,
        Command::CallbackSecret(a) => callback_secret(a).await,
        Command::Provision(a) => provision(a).await,
        Command::Events(a) => {
            crate::events::print_events(&a.data.data_dir.join(segments_embedded::EVENTS_FILE), a.follow).await
        }
    }
}

/// The secret that signs a mandator's callbacks. It is handed to the mandator out of band, never
/// through the API.
async fn callback_secret(a: CallbackSecretArgs) -> anyhow::Result<()> {
    use segments_core::ports::CallbackSecrets;
    let mandator = MandatorId::parse(&a.mandator).with_context(|| format!("--mandator {:?}", a.mandator))?;
    let secrets: Arc<dyn CallbackSecrets> = if a.aws {
        let table = segments_core::config::required(aws::JOBS_TABLE_VAR)?;
        let clients = aws::AwsClients::from_env().await;
        Arc::new(aws::DynamoCallbackSecrets::new(clients.dynamodb.clone(), table))
    } else {
        Arc::new(EmbeddedStore::open(&a.data.data_dir)?)
    };
    let secret = secrets.secret(&mandator).await?;
    if a.json {
        println!("{}", serde_json::json!({"mandator": a.mandator, "secret": secret.to_hex()}));
    } else {
        println!("{}", secret.to_hex());
    }
    Ok(())
}

/// Creates what the service needs on AWS or an emulator, refusing (and changing nothing) when a
/// resource of one of its names exists with another shape. The environment goes to stdout, what
/// was created or found to stderr.
async fn provision(a: ProvisionArgs) -> anyhow::Result<()> {
    if !a.aws {
        bail!("provision creates AWS resources: give --aws (the embedded store of `serve` creates its own)");
    }
    let clients = aws::AwsClients::from_env().await;
    let provisioned = aws::provision::provision_service(&clients, &a.prefix, a.max_receive_count).await?;
    for resource in &provisioned.resources {
        let outcome = if resource.created { "created" } else { "unchanged" };
        eprintln!("{outcome} {} {}", resource.kind, resource.name);
    }
    let vars = provisioned.service.env_vars();
    if let Some(path) = &a.env_file {
        // What a function needs besides the names: where the AWS-compatible server is.
        let mut file_vars = vars.clone();
        for name in ["AWS_ENDPOINT_URL", "AWS_REGION"] {
            if let Some(value) = segments_core::config::optional(name) {
                file_vars.push((name.to_owned(), value));
            }
        }
        let text = file_vars.iter().map(|(k, v)| env_file_line(k, v)).collect::<anyhow::Result<String>>()?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if a.json {
        let object: serde_json::Map<String, serde_json::Value> =
            vars.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        println!("{}", serde_json::Value::Object(object));
    } else {
        for (key, value) in vars {
            println!("{key}={value}");
        }
    }
    Ok(())
}

/// One `KEY=value` line of an environment file that both `cargo lambda watch --env-file` and a
/// POSIX shell (`set -a; . FILE`) read the same: bare when the value has no character either
/// treats specially, single-quoted otherwise.
fn env_file_line(key: &str, value: &str) -> anyhow::Result<String> {
    let bare = |c: char| c.is_ascii_alphanumeric() || "-_.:/@+,%".contains(c);
    if !value.is_empty() && value.chars().all(bare) {
        Ok(format!("{key}={value}\n"))
    } else if value.chars().any(|c| c == '\'' || c.is_control()) {
        bail!("{key}: the value {value:?} cannot be written to an environment file")
    } else {
        Ok(format!("{key}='{value}'\n"))
    }
}

pub const DEMO_MANDATOR: &str = "demo-bank";
/// The folder of the data directory where the runner's import worker downloads and spills: it is
/// emptied before and after every import.
pub const IMPORT_SCRATCH_DIR: &str = "import-scratch";

fn token(a: TokenArgs) -> anyhow::Result<()> {
    MandatorId::parse(&a.mandator).with_context(|| format!("--mandator {:?}", a.mandator))?;
    let known = all_scopes();
    if let Some(bad) = a.scopes.iter().find(|s| !known.contains(s)) {
        bail!("unknown scope {bad:?}; valid: {}", known.join(", "));
    }
    let scopes = if a.scopes.is_empty() { known } else { a.scopes };
    let config = ServiceConfig::from_env()?;
    let signer = Signer::load_or_create(&a.data.data_dir)?;
    let token = signer.mint(&config.mandator_claim, &a.mandator, &scopes, a.ttl_hours * 3600)?;
    if a.json {
        println!("{}", serde_json::json!({"token": token, "mandator": a.mandator, "scopes": scopes}));
    } else {
        println!("{token}");
    }
    Ok(())
}

fn generate_files(a: GenerateArgs) -> anyhow::Result<()> {
    let mandator = MandatorId::parse(&a.mandator).with_context(|| format!("--mandator {:?}", a.mandator))?;
    let end_date = a.end_date.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let config = GenerateConfig { seed: a.seed, mandator, ..GenerateConfig::new(a.users, end_date) };
    let summary = write_generated(&config, &a.out, a.json)?;
    if a.json {
        let json = serde_json::json!({
            "users": summary.users, "accounts": summary.accounts, "transactions": summary.transactions,
            "out": a.out,
        });
        println!("{json}");
    } else {
        eprintln!(
            "wrote {} users, {} accounts, {} transactions to {}",
            summary.users,
            summary.accounts,
            summary.transactions,
            a.out.display()
        );
    }
    Ok(())
}

fn write_generated(config: &GenerateConfig, out: &Path, quiet: bool) -> anyhow::Result<generate::GenerateSummary> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let create = |name: &str| -> anyhow::Result<BufWriter<File>> {
        let path = out.join(name);
        Ok(BufWriter::with_capacity(
            1 << 20,
            File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        ))
    };
    let (accounts, transactions) = (create("accounts.ndjson")?, create("transactions.ndjson")?);
    let mut progress = Progress::new("generate", config.users, quiet);
    let summary = generate::write_ndjson(config, accounts, transactions, |done| progress.set(done))
        .context("writing generated data")?;
    progress.finish();
    Ok(summary)
}

async fn import_files(a: ImportArgs) -> anyhow::Result<()> {
    let mandator = match &a.mandator {
        Some(m) => MandatorId::parse(m).with_context(|| format!("--mandator {m:?}"))?,
        None => first_mandator(&[&a.accounts, &a.transactions])?
            .context("nothing to import: no line of the files names a mandator (or give --mandator)")?,
    };
    let importer = if a.aws {
        let resources = aws::AwsResources::from_env()?;
        let segments_table = segments_core::config::required(aws::SEGMENTS_TABLE_VAR)?;
        let clients = aws::AwsClients::from_env().await;
        aws::importer(&clients, &resources, &segments_table)
    } else {
        embedded_importer(EmbeddedStore::open(&a.data.data_dir)?)
    };
    let record = run_import(&importer, &mandator, a.mode, &a.accounts, &a.transactions, a.shards, a.json).await?;
    let shard_count = importer.users.shard_count(&mandator).await?.unwrap_or(DEFAULT_SHARD_COUNT);
    let counts = record.counts;
    if a.json {
        let json = serde_json::json!({
            "mandator": mandator, "importId": record.import_id, "mode": record.mode.as_str(),
            "shardCount": shard_count, "users": counts.users, "accounts": counts.accounts,
            "transactions": counts.transactions, "erasedUsers": counts.erased_users,
        });
        println!("{json}");
    } else {
        let erased = match counts.erased_users {
            0 => String::new(),
            n => format!(", erased {n} other users"),
        };
        eprintln!(
            "imported {} users, {} accounts, {} transactions for mandator {mandator} ({shard_count} shards){erased}",
            counts.users, counts.accounts, counts.transactions
        );
    }
    Ok(())
}

/// The importer over the embedded store.
fn embedded_importer(store: EmbeddedStore) -> Importer {
    let store = Arc::new(store);
    Importer { users: store.clone(), imports: store.clone(), segments: store }
}

/// The mandator of the first line of the files that names a valid one: the mandator of the
/// import when none is given. The importer validates every line; this only peeks.
fn first_mandator(files: &[&Path]) -> anyhow::Result<Option<MandatorId>> {
    use std::io::BufRead;
    // A file whose first lines name no mandator is broken; the import reports it line by line.
    const PEEKED_LINES: usize = 1000;
    for path in files {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for line in std::io::BufReader::new(file).lines().take(PEEKED_LINES) {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line.trim_start_matches('\u{feff}')) else {
                continue;
            };
            if let Some(m) = value["mandatorId"].as_str().and_then(|m| MandatorId::parse(m).ok()) {
                return Ok(Some(m));
            }
        }
    }
    Ok(None)
}

/// Creates an import of the two files and runs it, with a progress bar per phase. Bad lines are
/// printed one per line (`file:line: reason`, or JSON with `--json`).
async fn run_import(
    importer: &Importer,
    mandator: &MandatorId,
    mode: ImportMode,
    accounts: &Path,
    transactions: &Path,
    shard_count: Option<u32>,
    quiet: bool,
) -> anyhow::Result<ImportRecord> {
    let record = ImportRecord::new(mandator.clone(), mode, chrono::Utc::now());
    importer.imports.create_import(&record).await.context("creating the import's record")?;
    let options = ImportOptions { shard_count, ..ImportOptions::default() };
    // One bar per phase (and per round of writing), over what the phase counts.
    let mut progress: Option<(ImportPhase, u64, Progress)> = None;
    let result = importer
        .run(record, accounts, transactions, &options, |p: ImportProgress| {
            if progress.as_ref().is_none_or(|(phase, total, _)| (*phase, *total) != (p.phase, p.total)) {
                if let Some((_, _, bar)) = progress.take() {
                    bar.finish();
                }
                let label = match p.phase {
                    ImportPhase::Validating => "validate",
                    ImportPhase::CheckingDuplicates => "check",
                    ImportPhase::Writing => "write",
                    ImportPhase::Erasing => "erase",
                };
                progress = Some((p.phase, p.total, Progress::new(label, p.total, quiet)));
            }
            if let Some((_, _, bar)) = progress.as_mut() {
                bar.set(p.done);
            }
        })
        .await;
    if let Some((_, _, bar)) = progress {
        bar.finish();
    }
    if let Err(ImportError::Invalid { errors, more }) = &result {
        // Every bad line as `file:line: reason`, then the one-line summary as the error.
        for e in errors {
            if quiet {
                eprintln!("{}", serde_json::json!({"file": e.file, "line": e.line, "reason": e.reason}));
            } else {
                eprintln!("{e}");
            }
        }
        if *more > 0 {
            eprintln!("… and {more} more bad line(s)");
        }
    }
    Ok(result?)
}

/// How `serve` authenticates requests.
enum Authentication {
    /// HS256 tokens of the data directory's secret (`segments token`).
    Development(Signer),
    /// A Cognito user pool's access tokens (`--aws` with `--cognito-…`).
    Cognito(CognitoVerifier),
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    // Refused tokens and failed handlers are logged to stderr (warnings unless RUST_LOG says
    // otherwise); stdout keeps what `serve` prints for its user. Another subscriber may be set.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let config = ServiceConfig::from_env()?;
    let authentication = match a.cognito.settings()? {
        Some(settings) => {
            let verifier = CognitoVerifier::start(settings).await.context("Cognito token verification")?;
            Authentication::Cognito(verifier)
        }
        None => Authentication::Development(Signer::load_or_create(&a.data.data_dir)?),
    };
    // Bound first: the export links the runner serves carry its address.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], a.port)))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", a.port))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (services, segments, jobs_api, data, imports, links): (Services, _, _, _, _, _) = if a.aws {
        let resources = aws::AwsResources::from_env()?;
        let segments_resources = aws::SegmentsResources::from_env()?;
        let segments_table = segments_resources.table.clone();
        let clients = aws::AwsClients::from_env().await;
        let services = aws::services(&clients, &resources, config.clone());
        let mut segments = aws::segments_api(&clients, &resources, &segments_resources, config.clone());
        // Refreshes are scheduled and applied by tasks of this process, as the refresh-scheduler
        // and refresh-applier functions do on AWS, looking as often as the embedded runner does.
        let refresh_config = LocalRefreshConfig::from_env()?;
        segments.refresh_settings = refresh_config.settings();
        let refresh_queue =
            aws::SqsRefreshQueue::new(clients.sqs.clone(), segments_resources.refresh_queue_url.clone());
        crate::workers::spawn_sqs_refresh_applier(segments.clone(), refresh_queue);
        crate::workers::spawn_refresh_ticker(segments.clone(), refresh_config.tick_interval);
        let jobs_api = aws::jobs_api(&clients, &resources, config.clone());
        let data = aws::account_data(&clients, &resources.account_table, &segments_table);
        let queue = Arc::new(aws::SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone()));
        crate::workers::spawn_sqs_pollers(services.runner(), queue, resources.queue_urls.keys().copied().collect());
        crate::workers::spawn_sweeper(services.sweeper(SweepConfig::from_env()?));
        let import_queue = aws::SqsImportQueue::url_from_env()?;
        let imports = aws::imports_api(&clients, &resources, &import_queue);
        let scratch = a.data.data_dir.join(IMPORT_SCRATCH_DIR);
        let import_worker = aws::import_worker(&clients, &resources, &segments_table, &config, scratch);
        crate::workers::spawn_sqs_imports(import_worker, aws::SqsImportQueue::new(clients.sqs.clone(), import_queue));
        if a.demo {
            seed_demo(&aws::importer(&clients, &resources, &segments_table), &a).await?;
        }
        (services, segments, jobs_api, data, imports, None)
    } else {
        let store = EmbeddedStore::open(&a.data.data_dir)?;
        if a.demo {
            seed_demo(&embedded_importer(store.clone()), &a).await?;
        }
        let unfinished = store.unfinished_jobs().await?;
        let (services, receiver) = segments_embedded::wiring::services(store.clone(), config.clone());
        // Segment events go to the data directory's event file (`segments events` prints it);
        // refreshes are scheduled and applied by tasks of this process.
        let refresh_config = LocalRefreshConfig::from_env()?;
        let events = Arc::new(EventFile::in_data_dir(&a.data.data_dir)?);
        let (refresh_queue, refresh_receiver) = segments_embedded::refresh_channel();
        let segments = segments_embedded::wiring::segments_api(
            store.clone(),
            &services,
            events,
            Arc::new(refresh_queue),
            refresh_config.settings(),
        );
        crate::workers::spawn_refresh_applier(segments.clone(), refresh_receiver);
        crate::workers::spawn_refresh_ticker(segments.clone(), refresh_config.tick_interval);
        let data = segments_embedded::wiring::account_data(store.clone());
        let links = Arc::new(LocalLinks::new(store.clone(), url.clone()));
        let (imports, started) = segments_embedded::wiring::imports_api(store.clone(), links.clone());
        let scratch = a.data.data_dir.join(IMPORT_SCRATCH_DIR);
        crate::workers::spawn_embedded_imports(crate::workers::import_worker(&store, scratch, &config), started);
        for message in store.running_imports().await? {
            imports.queue.enqueue_import(&message).await?;
        }
        let jobs_api = segments_embedded::wiring::jobs_api(store, &services, links.clone());
        crate::workers::spawn_embedded_pool(services.runner(), receiver, a.workers, RetrySchedule::default());
        crate::workers::spawn_sweeper(services.sweeper(SweepConfig::from_env()?));
        for message in unfinished {
            services.queue.enqueue(&message).await?;
        }
        (services, segments, jobs_api, data, imports, Some(links))
    };

    let (app, token) = match authentication {
        Authentication::Development(signer) => {
            let token = signer.mint(&config.mandator_claim, DEMO_MANDATOR, &all_scopes(), 12 * 3600)?;
            let gateway = Gateway { services, segments, jobs_api, data, imports, links, verifier: signer };
            (router(Arc::new(gateway)), Some(token))
        }
        Authentication::Cognito(verifier) => {
            let cognito = verifier.settings().clone();
            let gateway = Gateway { services, segments, jobs_api, data, imports, links, verifier };
            let app = router(Arc::new(gateway));
            let clients: Vec<&String> = cognito.client_ids.iter().collect();
            if a.json {
                let json = serde_json::json!({"url": url, "issuer": cognito.issuer, "clientIds": clients,
                    "console": format!("{url}{}/", web_console::BASE_PATH)});
                println!("{json}");
            } else {
                println!("Financial segments listening on {url}");
                println!(
                    "Accepting access tokens of {} for the app clients {} (no development tokens).\n",
                    cognito.issuer,
                    cognito.client_ids.iter().cloned().collect::<Vec<_>>().join(", ")
                );
                println!("Console (paste an access token to sign in):\n\n  {url}{}/\n", web_console::BASE_PATH);
            }
            (app, None)
        }
    };
    if let Some(token) = token {
        let console = format!("{url}{}/#token={token}", web_console::BASE_PATH);
        if a.json {
            println!(
                "{}",
                serde_json::json!({"url": url, "token": token, "mandator": DEMO_MANDATOR, "console": console})
            );
        } else {
            println!("Financial segments listening on {url}");
            // The fragment never reaches a server: the page reads the token from it and removes it.
            println!("Console (signed in as {DEMO_MANDATOR}):\n\n  {console}\n");
            println!("Token for mandator {DEMO_MANDATOR} (all scopes, valid 12 h):\n\n  export TOKEN={token}\n");
            println!(
                "Try:\n\n  curl -s -X POST {url}/segments/highBalance -H \"Authorization: Bearer $TOKEN\" \\\n    -H 'Content-Type: application/json' -d '{{\"accountType\":\"checking\",\"threshold\":5000}}'\n"
            );
            println!("  curl -s {url}/segments/highBalance/<jobId> -H \"Authorization: Bearer $TOKEN\"\n");
        }
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    Ok(())
}

/// Generates and imports demo data for the demo mandator when it has none yet.
async fn seed_demo(importer: &Importer, a: &ServeArgs) -> anyhow::Result<()> {
    let mandator = MandatorId::parse(DEMO_MANDATOR)?;
    if importer.users.shard_count(&mandator).await?.is_some() {
        return Ok(());
    }
    let dir = a.data.data_dir.join("demo");
    eprintln!("generating demo data ({} users) in {}", a.demo_users, dir.display());
    let config = GenerateConfig {
        mandator: mandator.clone(),
        ..GenerateConfig::new(a.demo_users, chrono::Utc::now().date_naive())
    };
    write_generated(&config, &dir, a.json)?;
    let (accounts, transactions) = (dir.join("accounts.ndjson"), dir.join("transactions.ndjson"));
    run_import(importer, &mandator, ImportMode::UpsertUsers, &accounts, &transactions, None, a.json).await?;
    Ok(())
}
