"""Runs every benchmark and writes the report (see bench/run.sh, BENCHMARKS.md)."""

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import compare  # noqa: E402
import cost  # noqa: E402

RELEASE = os.path.join(ROOT, "target", "release")
SEGMENTS = os.path.join(RELEASE, "segments")
BENCH = os.path.join(RELEASE, "segments-bench")
PARAMS = os.path.join(HERE, "params.json")
# One core for the measurements that compare one core of the service against DuckDB on all.
ONE_CORE = ["taskset", "-c", "0"] if shutil.which("taskset") else []
# The layout before per-user records, measured by this script on 8ce7922 (2026-11-29): item data
# per transaction with one item per account and per transaction.
BYTES_PER_TRANSACTION_BEFORE = 269
SEED = 42
MANDATOR = "bench-bank"
END_DATE = "2026-11-20"  # balance date of the generated data; params.json asks asOf 2026-11-10


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def timed_json(args):
    """Runs a command printing one JSON object and adds the CPU seconds (user + system) the
    command used: on a shared machine wall time includes waiting for a core, CPU time does not."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = json.loads(sh(args))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpuSeconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
    dirty = bool(sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]).strip())
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "uptime": sh(["uptime"]).strip(),
        "commit": commit + (" (with uncommitted changes in the tree)" if dirty else ""),
        "python": platform.python_version(),
    }


def load():
    return sh(["uptime"]).split("load average:")[-1].strip()


def generate(users, scratch):
    out = os.path.join(scratch, f"data-{users}")
    done = os.path.join(out, ".complete")
    if not os.path.exists(done):
        log(f"generating {users} users into {out} ...")
        summary = json.loads(sh([SEGMENTS, "generate", "--users", str(users), "--seed", str(SEED), "--out", out,
                                 "--mandator", MANDATOR, "--end-date", END_DATE, "--json"]))
        with open(done, "w") as f:
            json.dump(summary, f)
    with open(done) as f:
        summary = json.load(f)
    summary["bytes"] = sum(os.path.getsize(os.path.join(out, n)) for n in ("accounts.ndjson", "transactions.ndjson"))
    return out, summary


def best_of(runs, key="seconds"):
    return min(runs, key=lambda r: r[key])


def compute_comparison(users, scratch, repeats):
    data, summary = generate(users, scratch)
    out = os.path.join(scratch, f"results-{users}")
    rust_dir, duck1_dir, duckn_dir, stored_dir = (os.path.join(out, n) for n in ("service", "duckdb-1", "duckdb-all",
                                                                                "stored"))
    for d in (rust_dir, duck1_dir, duckn_dir, stored_dir):
        shutil.rmtree(d, ignore_errors=True)
    nproc = os.cpu_count() or 1
    rust, duck1, duckn, read, stored = [], [], [], [], []
    for i in range(repeats):
        log(f"[{users} users] run {i + 1}/{repeats}: service (1 core), DuckDB threads=1, DuckDB threads={nproc} (load {load()})")
        rust.append(timed_json([BENCH, "compute", "--data", data, "--params", PARAMS, "--out", rust_dir]))
        read.append(timed_json(ONE_CORE + [BENCH, "read", "--data", data]))
        # Pinned to one core: the embedded store reads on a thread of its own.
        stored.append(timed_json(ONE_CORE + [BENCH, "compute-stored", "--data", data, "--params", PARAMS,
                                             "--store", os.path.join(out, "store"), "--out", stored_dir]))
        for threads, runs, d in ((1, duck1, duck1_dir), (nproc, duckn, duckn_dir)):
            runs.append(timed_json([sys.executable, os.path.join(HERE, "duckdb_segments.py"), "--data", data,
                                    "--params", PARAMS, "--out", d, "--threads", str(threads)]))
    checks = {
        "DuckDB threads=1": compare.compare(rust_dir, duck1_dir),
        f"DuckDB threads={nproc}": compare.compare(rust_dir, duckn_dir),
        f"stored records vs DuckDB threads={nproc}": compare.compare(stored_dir, duckn_dir),
    }
    return {"users": users, "data": summary, "service": rust, "read": read, "stored": stored,
            "duckdb1": duck1, "duckdbAll": duckn,
            "checks": checks, "nproc": nproc, "load": load()}


def hotpath(data):
    log(f"worker hot path (load {load()}) ...")
    return json.loads(sh([BENCH, "hotpath", "--data", data, "--params", PARAMS, "--transactions", "600000",
                          "--repeats", "2"]))


def storage(data):
    log("stored bytes per transaction ...")
    return json.loads(sh([BENCH, "storage", "--data", data]))


def shard_memory(data, transactions, segment_type):
    log(f"peak RSS, one shard of {transactions} transactions, {segment_type} ...")
    return json.loads(sh([BENCH, "shard-memory", "--data", data, "--params", PARAMS,
                          "--transactions", str(transactions), "--segment-type", segment_type]))


# --- start-up against a fake Lambda Runtime API ----------------------------------------------

class FakeRuntime:
    """The Lambda Runtime API a function polls: hands out one SQS event, records the answer."""

    def __init__(self, event):
        self.event = json.dumps(event).encode()
        self.answered = threading.Event()
        self.answer_at = None
        self.answer = None
        self.served = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.endswith("/runtime/invocation/next") and not outer.served:
                    outer.served = True
                    self.send_response(200)
                    self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-request-1")
                    self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000))
                    self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                     "arn:aws:lambda:eu-central-1:000000000000:function:bench")
                    self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(outer.event)))
                    self.end_headers()
                    self.wfile.write(outer.event)
                else:
                    # A second poll: keep the function waiting until it is stopped.
                    outer.answered.wait(30)
                    self.send_response(503)
                    self.end_headers()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if "/response" in self.path or "/error" in self.path:
                    outer.answer_at = time.perf_counter()
                    outer.answer = (self.path, body.decode(errors="replace"))
                    outer.answered.set()
                self.send_response(202)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def startup(binary, runs=5):
    """Process start to the first handled invocation (an SQS batch of no messages, answered
    without touching AWS), median of `runs`."""
    if not os.path.exists(binary):
        return None
    event = {"Records": []}
    times = []
    answer = None
    for _ in range(runs):
        rt = FakeRuntime(event)
        env = dict(os.environ)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{rt.port}",
            "AWS_LAMBDA_FUNCTION_NAME": "worker-low-balance", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
            "AWS_LAMBDA_LOG_GROUP_NAME": "bench", "AWS_REGION": "eu-central-1",
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true",
            "ACCOUNT_DATA_TABLE": "AccountData", "JOBS_TABLE": "Jobs", "RESULTS_BUCKET": "results",
            "LOW_BALANCE_QUEUE_URL": "https://sqs.eu-central-1.amazonaws.com/000000000000/low-balance",
            "RUST_LOG": "warn",
        })
        started = time.perf_counter()
        proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ok = rt.answered.wait(30)
        if ok:
            times.append(rt.answer_at - started)
            answer = rt.answer
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        rt.close()
        if not ok:
            return {"error": "no answer within 30 s", "stderr": proc.stderr.read().decode(errors="replace")[-2000:]}
    return {"binary": os.path.relpath(binary, ROOT), "runs": times, "median": statistics.median(times),
            "answer": answer}


def binary_sizes():
    base = os.path.join(ROOT, "target", "lambda")
    sizes = {}
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            p = os.path.join(base, name, "bootstrap")
            if os.path.isfile(p):
                arch = sh(["file", "-b", p]).split(",")[1].strip() if shutil.which("file") else "?"
                mtime = dt.datetime.fromtimestamp(os.path.getmtime(p), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                sizes[name] = {"bytes": os.path.getsize(p), "arch": arch, "built": mtime}
    return sizes


# --- report ----------------------------------------------------------------------------------

def fmt_s(x):
    return f"{x:.2f} s"


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def report(env, comparisons, hot, memories, requests, start, sizes, costs, stored_bytes):
    L = []
    w = L.append
    w(f"Measured {env['date']} on {env['nproc']} × {env['cpu']}, commit {env['commit']}.")
    w(f"Load at the start: `{env['uptime']}` (the machine is shared).")
    w("")
    w("### Compute path against DuckDB")
    w("")
    w("| users | transactions | NDJSON | service, 1 core | DuckDB threads=1 | DuckDB threads=all | "
      "DuckDB all ÷ service | results identical |")
    w("|---:|---:|---:|---:|---:|---:|---:|---|")
    for c in comparisons:
        r, d1, dn = best_of(c["service"]), best_of(c["duckdb1"]), best_of(c["duckdbAll"])
        identical = all(not p for chk in c["checks"].values() for (_, _, p) in chk.values())
        w(f"| {c['users']:,} | {c['data']['transactions']:,} | {c['data']['bytes'] / 1e9:.2f} GB | "
          f"{fmt_s(r['seconds'])} | {fmt_s(d1['seconds'])} | {fmt_s(dn['seconds'])} (threads={c['nproc']}) | "
          f"**{dn['seconds'] / r['seconds']:.1f}×** | {'yes, all five types' if identical else '**NO**'} |")
    w("")
    w("CPU seconds (user + system) of the same best runs, which the other work on the machine does not inflate:")
    w("")
    w("| users | service | DuckDB threads=1 | DuckDB threads=all |")
    w("|---:|---:|---:|---:|")
    for c in comparisons:
        r, d1, dn = best_of(c["service"]), best_of(c["duckdb1"]), best_of(c["duckdbAll"])
        w(f"| {c['users']:,} | {r['cpuSeconds']:.2f} s | {d1['cpuSeconds']:.2f} s | {dn['cpuSeconds']:.2f} s |")
    w("")
    for c in comparisons:
        w(f"{c['users']:,} users — entries per type and the check, field by field (money as exact decimal text):")
        w("")
        w("| type | entries (service) | vs DuckDB threads=1 | vs DuckDB threads=all |")
        w("|---|---:|---|---|")
        names = list(c["checks"])
        for t in compare.TYPES:
            cells = []
            for n in names:
                left, right, problems = c["checks"][n][t]
                cells.append("identical" if not problems else "DIFFERENT: " + "; ".join(problems[:3]))
            w(f"| {t} | {c['checks'][names[0]][t][0]:,} | {cells[0]} | {cells[1]} |")
        w("")
        d1, dn, r = best_of(c["duckdb1"]), best_of(c["duckdbAll"]), best_of(c["service"])
        w(f"Runs (best of {len(c['service'])}): service {', '.join(fmt_s(x['seconds']) for x in c['service'])}; "
          f"DuckDB threads=1 {', '.join(fmt_s(x['seconds']) for x in c['duckdb1'])}; "
          f"DuckDB threads=all {', '.join(fmt_s(x['seconds']) for x in c['duckdbAll'])}. "
          f"Reading and parsing the files into users alone (`segments-bench read`, best of "
          f"{len(c['read'])}): {fmt_s(best_of(c['read'])['seconds'])} of the service's {fmt_s(r['seconds'])}. "
          f"DuckDB phases of its best all-cores run: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in dn["phases"].items()) + f". Load at the end: {c['load']}.")
        w("")
    w("### Stored records against DuckDB")
    w("")
    w("All five segment types computed from the stored records (embedded store: read, decode, compute, "
      "write each type's entries in userId order; `segments-bench compute-stored`, pinned to one core) against "
      "DuckDB's five queries over its already loaded tables on all cores (the sum of its query phases, load "
      "excluded). Target ≥ 5×.")
    w("")
    w("| users | stored records, 1 core | DuckDB queries, all cores | ratio | target ≥ 5× | results identical |")
    w("|---:|---:|---:|---:|---|---|")
    for c in comparisons:
        st, dn = best_of(c["stored"]), best_of(c["duckdbAll"])
        queries = sum(v for k, v in dn["phases"].items() if k != "load")
        chk = c["checks"][f"stored records vs DuckDB threads={c['nproc']}"]
        identical = all(not p for (_, _, p) in chk.values())
        x = queries / st["seconds"]
        w(f"| {c['users']:,} | {fmt_s(st['seconds'])} | {fmt_s(queries)} (threads={c['nproc']}) | **{x:.1f}×** | "
          f"{'met' if x >= 5 else '**not met**'} | {'yes, all five types' if identical else '**NO**'} |")
    w("")
    w("Reading and parsing the NDJSON files on one core (`segments-bench read`, pinned) against DuckDB's "
      "`read_json` load of the same files on all cores. Target: at least as fast (ratio ≥ 1).")
    w("")
    w("| users | NDJSON | read + parse, 1 core | DuckDB load, all cores | ratio | target ≥ 1× |")
    w("|---:|---:|---:|---:|---:|---|")
    for c in comparisons:
        rd, dn = best_of(c["read"]), best_of(c["duckdbAll"])
        x = dn["phases"]["load"] / rd["seconds"]
        w(f"| {c['users']:,} | {c['data']['bytes'] / 1e9:.2f} GB | {fmt_s(rd['seconds'])} | "
          f"{fmt_s(dn['phases']['load'])} | **{x:.2f}×** | {'met' if x >= 1 else '**not met**'} |")
    w("")
    if stored_bytes:
        sb = stored_bytes
        bpt = sb["bytesPerTransaction"]
        w("### Stored bytes")
        w("")
        w(f"{sb['users']:,} users, {sb['transactions']:,} transactions stored as {sb['items']:,} DynamoDB items "
          f"({sb['usersWithSeveralBlocks']} users needed more than one block; the largest user is "
          f"{sb['largestUserBytes'] / 1024:.1f} KiB). Item data by DynamoDB's size rules (attribute names and "
          f"values of `pk`, `sk`, `v`, `n`, `b`):")
        w("")
        w("| layout | bytes per transaction | target ≤ 20 B |")
        w("|---|---:|---|")
        w(f"| one item per account and per transaction (before, 8ce7922) | {BYTES_PER_TRANSACTION_BEFORE} B | — |")
        w(f"| one compressed record per user, in blocks (now) | **{bpt:.1f} B** | "
          f"{'met' if bpt <= 20 else '**not met**'} |")
        w("")
    if hot:
        w("### Worker hot path")
        w("")
        partition = 3000 * 8192
        w(f"{hot['users']:,} users, {hot['transactions']:,} transactions in {hot['items']:,} items "
          f"({hot['itemBytes'] / 1e6:.1f} MB of item data, {hot['pages']} full pages) through the SDK and the "
          f"worker's adapter, one core. One partition delivers 3,000 RRU/s × 8 KB = **24.6 MB/s** of item data; "
          f"target: decode and compute ≥ 4× that per core = 98.3 MB per CPU second.")
        w("")
        w("| what | item data per CPU second | × one partition's rate | target ≥ 4× | transactions per CPU second |")
        w("|---|---:|---:|---|---:|")
        for r in hot["rates"]:
            x = r["itemBytesPerCpuSecond"] / partition
            verdict = "—" if r["what"] == "sdkOnly" else ("met" if x >= 4 else "**not met**")
            w(f"| {r['what']} | {r['itemBytesPerCpuSecond'] / 1e6:,.1f} MB | {x:.1f}× | {verdict} | "
              f"{r['transactionsPerCpuSecond']:,.0f} |")
        w("")
    if memories:
        w("### Memory")
        w("")
        w("| segment type | the shard | users | Query calls | read units | peak RSS (VmHWM) | target < 64 MiB |")
        w("|---|---:|---:|---:|---:|---:|---|")
        for m in memories:
            w(f"| {m['segmentType']} | {m['items']:,} items ({m['transactionsLimit']:,}+ tx) | {m['users']:,} | "
              f"{m['queryCalls']} | {m['readUnits']:,.1f} | {mib(m['peakRssKib'])} | "
              f"{'met' if m['peakRssKib'] < 64 * 1024 else '**not met**'} |")
        w("")
    if requests:
        w("### Requests per job (moto)")
        w("")
        w(requests.get("markdown", "```\n" + json.dumps(requests, indent=1) + "\n```"))
        w("")
    w("### Start-up and binary sizes")
    w("")
    if start and "median" in start:
        w(f"`{start['binary']}` (host build, release profile), process start → first handled invocation "
          f"(an SQS batch with no messages) against a fake Runtime API: **median {start['median'] * 1000:.1f} ms** "
          f"(runs: {', '.join(f'{t * 1000:.1f}' for t in start['runs'])} ms).")
    else:
        w(f"Start-up not measured: {start}")
    w("")
    if sizes:
        w("| function | arm64 bootstrap | built |")
        w("|---|---:|---|")
        for name, s in sizes.items():
            w(f"| {name} | {s['bytes'] / 1e6:.1f} MB ({s['arch']}) | {s['built']} |")
    else:
        w("arm64 binaries not measured: `target/lambda/*/bootstrap` is absent (run `infra/build.sh`).")
    w("")
    w("### Cost and scale")
    w("")
    w(costs)
    return "\n".join(L)


def cost_section(items_per_user, item_bytes, items_per_second):
    kw = dict(items_per_user=items_per_user, item_bytes=item_bytes, items_per_second=items_per_second)
    rows = []
    rows.append("| users | shards | concurrency | memory | data read | read units | Query calls | one shard | "
                "job wall | DynamoDB | Lambda | SQS + S3 | total / job |")
    rows.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for users, shards, conc, mem in ((10_000, 1, 1, 1024), (10_000, 16, 16, 1024), (1_000_000, 16, 16, 1024),
                                     (1_000_000, 64, 16, 1024), (10_000_000, 16, 16, 1024),
                                     (10_000_000, 128, 16, 1024), (10_000_000, 128, 64, 1024)):
        m = cost.model(users, shards=shards, memory_mb=mem, concurrency=conc, **kw)
        c = m["costUsd"]
        flag = "" if m["fitsLambdaTimeout"] else " **> 15 min timeout**"
        rows.append(
            f"| {users:,} | {shards} | {m['concurrency']} | {mem} MB | {m['dataGb']:.1f} GB | {m['readUnits'] / 1e6:,.2f} M | "
            f"{m['queryCalls']:,} | {m['shardSeconds']:,.0f} s{flag} | {m['wallSeconds'] / 60:,.1f} min | "
            f"${c['dynamodb_reads'] + c['dynamodb_writes']:.4f} | ${c['lambda']:.4f} | ${c['sqs'] + c['s3']:.4f} | "
            f"**${m['totalUsd']:.4f}** |")
    rows.append("")
    rec = []
    for users in (10_000, 1_000_000, 10_000_000):
        r = cost.recommend(users, **kw)
        rec.append(f"- {users:,} users: {r['shards']} shards, MaximumConcurrency {r['concurrency']}, "
                   f"{r['memoryMb']} MB → about {r['wallSeconds'] / 60:.1f} min, ${r['totalUsd']:.3f} per job.")
    rows.append("Fastest setting per size (then the cheapest of equally fast ones) among those whose shards "
                "finish within half the Lambda timeout (`cost.recommend`):")
    rows.append("")
    rows.extend(rec)
    rows.append("")
    one_m, ten_m = cost.recommend(1_000_000, **kw), cost.recommend(10_000_000, **kw)
    rows.append("| target | model | verdict |")
    rows.append("|---|---:|---|")
    rows.append(f"| 1 M-user job ≤ $0.10 (was $1.32) | ${one_m['totalUsd']:.3f} | "
                f"{'met' if one_m['totalUsd'] <= 0.10 else '**not met**'} |")
    rows.append(f"| 10 M-user job ≤ 5 min at the default 40,000 read units/s (was 74 min) | "
                f"{ten_m['wallSeconds'] / 60:.1f} min | {'met' if ten_m['wallSeconds'] <= 300 else '**not met**'} |")
    rows.append("")
    rows.append(f"Inputs measured above: one record per user of {item_bytes:,.0f} B of item data, "
                f"{items_per_second:,.0f} users/s per core (the slowest segment type's rate). Assumed prices and "
                f"limits (`bench/cost.py`):")
    rows.append("")
    rows.append("```json\n" + json.dumps(cost.ASSUMPTIONS, indent=1) + "\n```")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description="Runs every benchmark and writes the report.")
    ap.add_argument("--users", type=int, default=10_000, help="size of the main data set")
    ap.add_argument("--sizes", default="", help="more sizes for the DuckDB comparison, e.g. 1000,100000")
    ap.add_argument("--scratch", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-requests", action="store_true", help="skip the request counts against moto")
    a = ap.parse_args()
    os.makedirs(a.scratch, exist_ok=True)
    env = machine()
    log(json.dumps(env))

    sizes = sorted({a.users, *(int(s) for s in a.sizes.split(",") if s.strip())})
    comparisons = [compute_comparison(n, a.scratch, a.repeats) for n in sizes]
    main_data, main_summary = generate(a.users, a.scratch)

    hot = hotpath(main_data)
    stored_bytes = storage(main_data)
    memories = []
    if main_summary["transactions"] >= 1_000_000:
        for t, n in (("financialBreakdown", 2_500_000), ("financialBreakdown", 1_000_000),
                     ("financialBreakdown", 250_000)):
            if main_summary["transactions"] >= n:
                memories.append(shard_memory(main_data, n, t))

    requests = None
    if not a.no_requests:
        try:
            import requests_bench
            requests = requests_bench.run(BENCH, a.scratch, PARAMS)
        except Exception as e:  # the report says what happened instead of failing the whole run
            requests = {"markdown": f"Not measured: {e}"}

    start = startup(os.path.join(RELEASE, "worker-low-balance"))
    sizes_ = binary_sizes()
    # The cost model counts items: here an item is a user's record (its blocks counted in its size).
    bytes_per_user = stored_bytes["bytesPerUser"]
    tx_per_user = stored_bytes["transactions"] / stored_bytes["users"]
    slowest = min(r["transactionsPerCpuSecond"] for r in hot["rates"] if r["what"] != "sdkOnly")
    costs = cost_section(1.0, bytes_per_user, slowest / tx_per_user)

    md = report(env, comparisons, hot, memories, requests, start, sizes_, costs, stored_bytes)
    path = os.path.join(a.scratch, "report.md")
    with open(path, "w") as f:
        f.write(md + "\n")
    with open(os.path.join(a.scratch, "raw.json"), "w") as f:
        json.dump({"env": env, "comparisons": comparisons, "hotpath": hot, "storage": stored_bytes, "memory": memories,
                   "requests": requests, "startup": start, "sizes": sizes_}, f, indent=1, default=str)
    print(md)
    log(f"\nreport written to {path}")
    ok = all(not p for c in comparisons for chk in c["checks"].values() for (_, _, p) in chk.values())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
