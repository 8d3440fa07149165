//! `segments-bench`: the measurements behind BENCHMARKS.md. `bench/run.sh` runs them all and
//! writes the report; each subcommand prints one JSON object on stdout.

mod compute;
mod data;
mod dynamo;
mod hotpath;
mod stored;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use segments_core::domain::SegmentType;

#[derive(Debug, Parser)]
#[command(name = "segments-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Inputs {
    /// Directory with accounts.ndjson and transactions.ndjson (`segments generate`).
    #[arg(long)]
    data: PathBuf,
    /// The segment parameters (bench/params.json).
    #[arg(long)]
    params: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse a generated data set and compute all five segment types on one core; write each
    /// type's entries to OUT/{segmentType}.ndjson.
    Compute {
        #[command(flatten)]
        inputs: Inputs,
        /// Directory for the results.
        #[arg(long)]
        out: PathBuf,
    },
    /// Read and parse a generated data set into users, one at a time, and compute nothing: the
    /// part of `compute` that is not the segment computations and the writing of results.
    Read {
        /// Directory with accounts.ndjson and transactions.ndjson (`segments generate`).
        #[arg(long)]
        data: PathBuf,
    },
    /// Bytes and transactions per CPU second of the worker's hot path on one core: DynamoDB Query
    /// pages through the SDK and the worker's adapter into each segment computation.
    Hotpath {
        #[command(flatten)]
        inputs: Inputs,
        /// Transactions of the shard, at least.
        #[arg(long, default_value_t = 300_000)]
        transactions: u64,
        /// Passes per measurement; the fastest counts.
        #[arg(long, default_value_t = 3)]
        repeats: u32,
    },
    /// Peak RSS of this process after one shard of at least N transactions went through the
    /// worker's loop, pages made only when the SDK asks for them.
    ShardMemory {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(long, default_value_t = 1_000_000)]
        transactions: u64,
        #[arg(long, default_value = "financialBreakdown")]
        segment_type: SegmentType,
    },
    /// DynamoDB item bytes of the data set in the stored layout (every user's record in blocks).
    Storage {
        /// Directory with accounts.ndjson and transactions.ndjson (`segments generate`).
        #[arg(long)]
        data: PathBuf,
    },
    /// Load a data set into a new embedded store, then compute all five segment types from the
    /// stored records (read and decode included) and write each type's entries to OUT.
    ComputeStored {
        #[command(flatten)]
        inputs: Inputs,
        /// Directory for the embedded store (replaced).
        #[arg(long)]
        store: PathBuf,
        #[arg(long, default_value_t = 16)]
        shards: u32,
        /// Directory for the results.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create the service's tables, bucket and queues under a name prefix at the endpoint of the
    /// usual AWS environment (a local moto server for the request counts) and print the
    /// environment variables that point the service at them.
    Provision {
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
}

fn one_core_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let today = chrono::Utc::now().date_naive();
    let report = match cli.command {
        Command::Compute { inputs, out } => {
            let specs = data::load_specs(&inputs.params, today)?;
            serde_json::to_value(compute::run(&inputs.data, &specs, &out).context("compute path")?)?
        }
        Command::Read { data } => serde_json::to_value(compute::read(&data).context("reading")?)?,
        Command::Hotpath { inputs, transactions, repeats } => {
            let specs = data::load_specs(&inputs.params, today)?;
            let report = one_core_runtime()?.block_on(hotpath::rates(&inputs.data, &specs, transactions, repeats))?;
            serde_json::to_value(report)?
        }
        Command::ShardMemory { inputs, transactions, segment_type } => {
            let specs = data::load_specs(&inputs.params, today)?;
            let spec = specs
                .iter()
                .find(|(t, _)| *t == segment_type)
                .map(|(_, s)| s.clone())
                .context("no parameters for the segment type")?;
            let report =
                one_core_runtime()?.block_on(hotpath::shard_memory(&inputs.data, segment_type, &spec, transactions))?;
            serde_json::to_value(report)?
        }
        Command::Storage { data } => serde_json::to_value(stored::storage(&data)?)?,
        Command::ComputeStored { inputs, store, shards, out } => {
            let specs = data::load_specs(&inputs.params, today)?;
            let report =
                one_core_runtime()?.block_on(stored::compute_stored(&inputs.data, &store, shards, &specs, &out))?;
            serde_json::to_value(report)?
        }
        Command::Provision { prefix } => one_core_runtime()?.block_on(provision(&prefix))?,
    };
    println!("{report}");
    Ok(())
}

async fn provision(prefix: &str) -> anyhow::Result<serde_json::Value> {
    use segments_aws::{self as aws, AwsClients, provision};
    let clients = AwsClients::from_env().await;
    let resources = provision::provision_all(&clients, prefix, 3).await?;
    let segments_table = provision::segments_table_name(prefix);
    provision::create_segments_table(&clients.dynamodb, &segments_table).await?;
    let mut vars: serde_json::Map<String, serde_json::Value> =
        resources.env_vars().into_iter().map(|(k, v)| (k, v.into())).collect();
    vars.insert(aws::SEGMENTS_TABLE_VAR.to_owned(), segments_table.into());
    // `serve --aws` also consumes the queue of started bulk imports.
    let (import_queue, _dlq) = provision::create_queue_with_dlq(&clients.sqs, &format!("{prefix}-imports"), 3).await?;
    vars.insert(aws::IMPORT_QUEUE_URL_VAR.to_owned(), import_queue.into());
    Ok(serde_json::Value::Object(vars))
}
