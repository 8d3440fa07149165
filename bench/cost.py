"""Cost and scale model of one job (one segment type over all users of a mandator).

Usage: cost.py --users N [--items-per-user F] [--item-bytes B] [--shards S] [--memory-mb M]
               [--items-per-second R] [--json]

Every price and limit the model assumes is in ASSUMPTIONS below and printed with the result.
The defaults for data volume and worker speed are the figures bench/run.py measures.
"""

import argparse
import json
import math

ASSUMPTIONS = {
    # Prices: AWS us-east-1, on-demand, as published in 2025 (eu-central-1 is ~20 % dearer).
    "dynamodb_usd_per_million_read_request_units": 0.125,
    "dynamodb_usd_per_million_write_request_units": 0.625,
    "lambda_arm64_usd_per_gb_second": 0.0000133334,
    "lambda_usd_per_million_requests": 0.20,
    "sqs_usd_per_million_requests": 0.40,
    "s3_usd_per_thousand_put": 0.005,
    "s3_usd_per_thousand_get": 0.0004,
    # Limits.
    "dynamodb_partition_read_units_per_second": 3000,  # one partition key: 3,000 RRU/s
    "dynamodb_table_read_units_per_second": 40000,  # default per-table quota (adjustable)
    "eventually_consistent_bytes_per_read_unit": 8192,  # 2 reads of 4 KB
    "query_page_bytes": 1 << 20,
    "query_page_latency_seconds": 0.05,  # one 1 MB page per 50 ms on one Query stream (~20 MB/s)
    "lambda_timeout_seconds": 900,
    "lambda_mb_per_vcpu": 1769,  # Lambda CPU share grows with memory; 1,769 MB = 1 vCPU
    "lambda_cold_start_seconds": 0.3,  # init of a worker plus the runtime's own start
    "s3_merge_bytes_per_second": 50e6,  # finalize: read parts and write chunks
    "result_bytes_per_user": 600,  # a result line (a large financialBreakdown entry is ~2 KB)
    "chunk_users": 1000,
    "sqs_requests_per_message": 3,  # send, receive, delete
}


def model(users, items_per_user=298.4, item_bytes=280.0, shards=16, memory_mb=1024,
          items_per_second=300_000.0, concurrency=None, a=ASSUMPTIONS):
    """The expected wall time and cost of one job; `concurrency` defaults to the shard count
    (the template's MaximumConcurrency)."""
    concurrency = min(concurrency or shards, shards)
    items = users * items_per_user
    data_bytes = items * item_bytes
    read_units = data_bytes / a["eventually_consistent_bytes_per_read_unit"]
    pages = math.ceil(data_bytes / a["query_page_bytes"])

    # Reading: each shard is one partition key, read by one sequential Query stream.
    stream_bps = min(a["query_page_bytes"] / a["query_page_latency_seconds"],
                     a["dynamodb_partition_read_units_per_second"] * a["eventually_consistent_bytes_per_read_unit"])
    table_bps = a["dynamodb_table_read_units_per_second"] * a["eventually_consistent_bytes_per_read_unit"]
    per_shard_bps = min(stream_bps, table_bps / concurrency)
    # Computing: one core's rate, scaled by the CPU share of the memory size (one thread).
    cpu_share = min(1.0, memory_mb / a["lambda_mb_per_vcpu"])
    compute_ips = items_per_second * cpu_share
    shard_items = items / shards
    shard_bytes = data_bytes / shards
    # The worker awaits each page before decoding it: reading and computing add up.
    shard_seconds = a["lambda_cold_start_seconds"] + shard_bytes / per_shard_bps + shard_items / compute_ips
    waves = math.ceil(shards / concurrency)
    result_bytes = users * a["result_bytes_per_user"]
    finalize_seconds = result_bytes / a["s3_merge_bytes_per_second"] + 0.5
    wall = waves * shard_seconds + finalize_seconds

    gb_seconds = (shards * shard_seconds + finalize_seconds) * memory_mb / 1024
    chunks = math.ceil(users / a["chunk_users"])
    s3_puts = shards + chunks + 1  # a part per shard, the chunks, the manifest
    s3_gets = shards  # the finalizer reads every part once
    sqs_messages = shards + 1  # one per shard, one to finalize
    cost = {
        "dynamodb_reads": read_units / 1e6 * a["dynamodb_usd_per_million_read_request_units"],
        "dynamodb_writes": (shards * 2 + 4) / 1e6 * a["dynamodb_usd_per_million_write_request_units"],
        "lambda": gb_seconds * a["lambda_arm64_usd_per_gb_second"]
        + (shards + 2) / 1e6 * a["lambda_usd_per_million_requests"],
        "sqs": sqs_messages * a["sqs_requests_per_message"] / 1e6 * a["sqs_usd_per_million_requests"],
        "s3": s3_puts / 1000 * a["s3_usd_per_thousand_put"] + s3_gets / 1000 * a["s3_usd_per_thousand_get"],
    }
    return {
        "users": users, "shards": shards, "concurrency": concurrency, "memoryMb": memory_mb,
        "items": items, "dataGb": data_bytes / 1e9, "readUnits": read_units, "queryCalls": pages,
        "perShardMBps": per_shard_bps / 1e6, "computeItemsPerSecond": compute_ips,
        "shardSeconds": shard_seconds, "fitsLambdaTimeout": shard_seconds <= a["lambda_timeout_seconds"],
        "wallSeconds": wall, "gbSeconds": gb_seconds, "costUsd": cost, "totalUsd": sum(cost.values()),
    }


def recommend(users, **kw):
    """The fastest (shards, memory, concurrency), then the cheapest of equally fast ones, whose
    shards finish well inside the timeout (≤ half of it), under the default table quota."""
    best = None
    for shards in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        for memory in (512, 1024, 1769):
            for concurrency in (shards, 16, 32, 64):
                m = model(users, shards=shards, memory_mb=memory, concurrency=concurrency, **kw)
                if m["shardSeconds"] > ASSUMPTIONS["lambda_timeout_seconds"] / 2:
                    continue
                key = (round(m["wallSeconds"] / 30), m["totalUsd"])  # 30 s apart counts as equal
                if best is None or key < best[0]:
                    best = (key, m)
    return best[1] if best else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--items-per-user", type=float, default=298.4)
    ap.add_argument("--item-bytes", type=float, default=280.0)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--memory-mb", type=int, default=1024)
    ap.add_argument("--concurrency", type=int)
    ap.add_argument("--items-per-second", type=float, default=300_000.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    kw = dict(items_per_user=a.items_per_user, item_bytes=a.item_bytes, items_per_second=a.items_per_second)
    m = model(a.users, shards=a.shards, memory_mb=a.memory_mb, concurrency=a.concurrency, **kw)
    if a.json:
        print(json.dumps({"model": m, "recommended": recommend(a.users, **kw), "assumptions": ASSUMPTIONS}))
        return
    for k, v in m.items():
        print(f"{k:>22}: {v}")
    print("assumptions:", json.dumps(ASSUMPTIONS, indent=1))


if __name__ == "__main__":
    main()
