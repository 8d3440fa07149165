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
use segments_core::ports::{AccountSink, AccountSource};
use segments_core::usecases::Services;
use segments_core::usecases::import::{self, ImportOptions};
use segments_embedded::{EmbeddedStore, LocalLinks};

use crate::progress::Progress;
use crate::server::{Gateway, router};
use crate::token::{Signer, all_scopes};

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
    /// Use the AWS adapters (DynamoDB, S3, SQS) configured by the usual AWS environment and
    /// ACCOUNT_DATA_TABLE, JOBS_TABLE, RESULTS_BUCKET, <TYPE>_QUEUE_URL.
    #[arg(long)]
    pub aws: bool,
    /// Jobs run at once by the in-process workers.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Print the address and token as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
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
    /// Import into DynamoDB (ACCOUNT_DATA_TABLE and the usual AWS environment) instead.
    #[arg(long)]
    pub aws: bool,
    /// Mandator to import; every line must belong to it (default: the first line's).
    #[arg(long)]
    pub mandator: Option<String>,
    /// Shards the mandator's data is spread over. Fixed at its first import (default 16); later
    /// imports use the recorded count.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_SHARD_COUNT as i64))]
    pub shards: Option<u32>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
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

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Token(a) => token(a),
        Command::Generate(a) => generate_files(a),
        Command::Import(a) => import_files(a).await,
        Command::CallbackSecret(a) => callback_secret(a).await,
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

pub const DEMO_MANDATOR: &str = "demo-bank";

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
        Some(m) => Some(MandatorId::parse(m).with_context(|| format!("--mandator {m:?}"))?),
        None => None,
    };
    let (sink, source): (Arc<dyn AccountSink>, Arc<dyn AccountSource>) = if a.aws {
        let resources = aws::AwsResources::from_env()?;
        let clients = aws::AwsClients::from_env().await;
        let accounts = Arc::new(aws::DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone()));
        (accounts.clone(), accounts)
    } else {
        let store = Arc::new(EmbeddedStore::open(&a.data.data_dir)?);
        (store.clone(), store)
    };
    let shards = match (a.shards, &mandator) {
        (Some(n), _) => n,
        (None, Some(m)) => source.shard_count(m).await?.unwrap_or(DEFAULT_SHARD_COUNT),
        (None, None) => match first_mandator(&a.accounts)? {
            Some(m) => source.shard_count(&m).await?.unwrap_or(DEFAULT_SHARD_COUNT),
            None => DEFAULT_SHARD_COUNT,
        },
    };
    let report = run_import(sink.as_ref(), &a.accounts, &a.transactions, mandator, shards, a.json).await?;
    if a.json {
        let json = serde_json::json!({
            "mandator": report.mandator, "shardCount": report.shard_count, "users": report.users,
            "accounts": report.accounts, "transactions": report.transactions,
        });
        println!("{json}");
    } else {
        eprintln!(
            "imported {} users, {} accounts, {} transactions for mandator {} ({} shards)",
            report.users, report.accounts, report.transactions, report.mandator, report.shard_count
        );
    }
    Ok(())
}

/// The mandator of the first line of an accounts file, to find its recorded shard count. The
/// importer validates every line again; this only peeks.
fn first_mandator(accounts: &Path) -> anyhow::Result<Option<MandatorId>> {
    use std::io::BufRead;
    let file = File::open(accounts).with_context(|| format!("opening {}", accounts.display()))?;
    let Some(line) = std::io::BufReader::new(file).lines().next() else { return Ok(None) };
    let line = line.with_context(|| format!("reading {}", accounts.display()))?;
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line.trim_start_matches('\u{feff}')) else {
        return Ok(None);
    };
    Ok(value["mandatorId"].as_str().and_then(|m| MandatorId::parse(m).ok()))
}

async fn run_import(
    sink: &dyn AccountSink,
    accounts: &Path,
    transactions: &Path,
    mandator: Option<MandatorId>,
    shard_count: u32,
    quiet: bool,
) -> anyhow::Result<import::ImportReport> {
    // One bar per phase, over the bytes of both files.
    let mut progress: Option<(import::ImportPhase, Progress)> = None;
    let options = ImportOptions { mandator, shard_count };
    let report = import::import_files(sink, accounts, transactions, options, |p: import::ImportProgress| {
        if progress.as_ref().is_none_or(|(phase, _)| *phase != p.phase) {
            if let Some((_, bar)) = progress.take() {
                bar.finish();
            }
            let label = match p.phase {
                import::ImportPhase::Validating => "validate",
                import::ImportPhase::CheckingDuplicates => "check",
                import::ImportPhase::Writing => "write",
            };
            progress = Some((p.phase, Progress::new(label, p.bytes_total, quiet)));
        }
        if let Some((_, bar)) = progress.as_mut() {
            bar.set(p.bytes_done);
        }
    })
    .await;
    if let Some((_, bar)) = progress {
        bar.finish();
    }
    if let Err(import::ImportError::Invalid { errors, more }) = &report {
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
    Ok(report?)
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let config = ServiceConfig::from_env()?;
    let signer = Signer::load_or_create(&a.data.data_dir)?;
    // Bound first: the export links the runner serves carry its address.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], a.port)))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", a.port))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (services, segments, jobs_api, links): (Services, _, _, _) = if a.aws {
        let resources = aws::AwsResources::from_env()?;
        let segments_table = segments_core::config::required(aws::SEGMENTS_TABLE_VAR)?;
        let clients = aws::AwsClients::from_env().await;
        let services = aws::services(&clients, &resources, config.clone());
        let segments = aws::segments_api(&clients, &resources, &segments_table, config.clone());
        let jobs_api = aws::jobs_api(&clients, &resources, config.clone());
        let queue = Arc::new(aws::SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone()));
        crate::workers::spawn_sqs_pollers(services.runner(), queue, resources.queue_urls.keys().copied().collect());
        if a.demo {
            seed_demo(services.accounts.as_ref(), None, &a).await?;
        }
        (services, segments, jobs_api, None)
    } else {
        let store = EmbeddedStore::open(&a.data.data_dir)?;
        if a.demo {
            seed_demo(&store, Some(&store), &a).await?;
        }
        let unfinished = store.unfinished_jobs().await?;
        let (services, receiver) = segments_embedded::wiring::services(store.clone(), config.clone());
        let segments = segments_embedded::wiring::segments_api(store.clone(), &services);
        let links = Arc::new(LocalLinks::new(store.clone(), url.clone()));
        let jobs_api = segments_embedded::wiring::jobs_api(store, &services, links.clone());
        crate::workers::spawn_embedded_pool(services.runner(), receiver, a.workers);
        for message in unfinished {
            services.queue.enqueue(&message).await?;
        }
        (services, segments, jobs_api, Some(links))
    };

    let gateway = Arc::new(Gateway { services, segments, jobs_api, links, signer });
    let token = gateway.signer.mint(&config.mandator_claim, DEMO_MANDATOR, &all_scopes(), 12 * 3600)?;
    if a.json {
        println!("{}", serde_json::json!({"url": url, "token": token, "mandator": DEMO_MANDATOR}));
    } else {
        println!("Financial segments listening on {url}");
        println!("Token for mandator {DEMO_MANDATOR} (all scopes, valid 12 h):\n\n  export TOKEN={token}\n");
        println!(
            "Try:\n\n  curl -s -X POST {url}/segments/highBalance -H \"Authorization: Bearer $TOKEN\" \\\n    -H 'Content-Type: application/json' -d '{{\"accountType\":\"checking\",\"threshold\":5000}}'\n"
        );
        println!("  curl -s {url}/segments/highBalance/<jobId> -H \"Authorization: Bearer $TOKEN\"\n");
    }
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    Ok(())
}

/// Generates and imports demo data for the demo mandator when it has none yet.
async fn seed_demo(source: &dyn AccountSource, sink: Option<&dyn AccountSink>, a: &ServeArgs) -> anyhow::Result<()> {
    let mandator = MandatorId::parse(DEMO_MANDATOR)?;
    if source.shard_count(&mandator).await?.is_some() {
        return Ok(());
    }
    let dir = a.data.data_dir.join("demo");
    eprintln!("generating demo data ({} users) in {}", a.demo_users, dir.display());
    let config = GenerateConfig {
        mandator: mandator.clone(),
        ..GenerateConfig::new(a.demo_users, chrono::Utc::now().date_naive())
    };
    write_generated(&config, &dir, a.json)?;
    let owned;
    let sink: &dyn AccountSink = match sink {
        Some(s) => s,
        None => {
            let resources = aws::AwsResources::from_env()?;
            let clients = aws::AwsClients::from_env().await;
            owned = aws::DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone());
            &owned
        }
    };
    run_import(
        sink,
        &dir.join("accounts.ndjson"),
        &dir.join("transactions.ndjson"),
        Some(mandator),
        DEFAULT_SHARD_COUNT,
        a.json,
    )
    .await?;
    Ok(())
}
