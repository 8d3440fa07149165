"""Request counts per job against a local moto server: every call the AWS adapters make is
counted at the server, by service and operation; DynamoDB Query pages are sized by DynamoDB's
rules to give the read units they consume (eventually consistent: ½ unit per started 4 KB).

Drives the service from outside: `segments import --aws` loads a small generated data set,
`segments serve --aws` runs the API with the same handler and worker code as the Lambdas (its
workers long-poll the SQS queues), and one job of each segment type is created, awaited and read
through the HTTP API.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TYPES = ["highBalance", "lowBalance", "incomeSpendingSummary", "insuranceSpending", "financialBreakdown"]
USERS = 40
SHARDS = 2
MANDATOR = "demo-bank"  # the mandator `segments serve` mints its printed token for

# The project's moto launcher (tests/moto_launcher.py: patches and serving), with every request
# counted around its application.
LAUNCHER = r'''
import collections, json, math, sys, threading
sys.path.insert(0, sys.argv[1])
import moto_launcher

moto_launcher.patch()
backend = moto_launcher.application()
lock = threading.Lock()
counts = collections.Counter()

def value_size(v):
    if "S" in v: return len(v["S"].encode())
    if "N" in v:
        digits = v["N"].lstrip("-").replace(".", "").strip("0")
        return math.ceil(max(len(digits), 1) / 2) + 1
    if "L" in v: return 3 + sum(1 + value_size(x) for x in v["L"])
    if "M" in v: return 3 + sum(len(k.encode()) + 1 + value_size(x) for k, x in v["M"].items())
    if "BOOL" in v or "NULL" in v: return 1
    return 0

def item_size(item):
    return sum(len(k.encode()) + value_size(v) for k, v in item.items())

def operation(environ):
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("DynamoDB"):
        return "dynamodb", target.split(".")[-1]
    if target.startswith("AmazonSQS"):
        return "sqs", target.split(".")[-1]
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "/s3/" in auth:
        return "s3", environ["REQUEST_METHOD"]
    return "other", environ["REQUEST_METHOD"]

def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/bench/counts":
        with lock:
            body = json.dumps(dict(counts)).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    service, op = operation(environ)
    result = list(backend(environ, start_response))
    with lock:
        counts[f"{service}:{op}"] += 1
        if service == "dynamodb" and op == "Query":
            try:
                out = json.loads(b"".join(result))
                size = sum(item_size(i) for i in out.get("Items", []))
                counts["dynamodb:Query.items"] += len(out.get("Items", []))
                counts["dynamodb:Query.bytes"] += size
                counts["dynamodb:Query.halfReadUnits"] += math.ceil(size / 4096)
                if "LastEvaluatedKey" in out:
                    counts["dynamodb:Query.pagesWithMore"] += 1
                    counts["dynamodb:Query.bytesOfPagesWithMore"] += size
            except ValueError:
                pass
    return result

moto_launcher.serve(app)
'''


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def moto_python():
    for venv in (os.path.join(ROOT, ".venv", "bench"), os.path.join(ROOT, ".venv")):
        py = os.path.join(venv, "bin", "python")
        if os.path.exists(py) and subprocess.run([py, "-c", "import moto.server"], capture_output=True).returncode == 0:
            return py
    raise RuntimeError("moto is not installed (bench/run.sh installs it into .venv/bench)")


def get(url, token=None, data=None):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def diff(after, before):
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))
            if after.get(k, 0) - before.get(k, 0)}


def run(bench_bin, scratch, params_path):
    segments = os.path.join(ROOT, "target", "release", "segments")
    work = os.path.join(scratch, "requests")
    os.makedirs(work, exist_ok=True)
    launcher = os.path.join(work, "moto_counting.py")
    with open(launcher, "w") as f:
        f.write(LAUNCHER)
    moto = subprocess.Popen([moto_python(), launcher, os.path.join(ROOT, "tests")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    serve = None
    try:
        port = int(moto.stdout.readline())
        log(f"requests: moto on port {port}; provisioning, generating and importing {USERS} users ...")
        endpoint = f"http://127.0.0.1:{port}"
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_REGION="eu-central-1", AWS_ACCESS_KEY_ID="test",
                   AWS_SECRET_ACCESS_KEY="test", AWS_EC2_METADATA_DISABLED="true", RUST_LOG="warn")
        env.update(json.loads(subprocess.run([bench_bin, "provision", "--prefix", "bench"], env=env, check=True,
                                             capture_output=True, text=True).stdout))
        data = os.path.join(work, "data")
        subprocess.run([segments, "generate", "--users", str(USERS), "--seed", "42", "--out", data, "--mandator",
                        MANDATOR, "--end-date", "2026-11-20", "--json"], check=True, capture_output=True)
        subprocess.run([segments, "import", "--aws", "--shards", str(SHARDS), "--mandator", MANDATOR, "--json",
                        "--accounts", os.path.join(data, "accounts.ndjson"),
                        "--transactions", os.path.join(data, "transactions.ndjson")],
                       env=env, check=True, capture_output=True)
        log("requests: imported; starting segments serve --aws")
        counts = lambda: json.loads(urllib.request.urlopen(endpoint + "/bench/counts").read())  # noqa: E731
        serve = subprocess.Popen([segments, "serve", "--aws", "--port", "0", "--json",
                                  "--data-dir", os.path.join(work, "serve")],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        hello = json.loads(serve.stdout.readline())
        url, token = hello["url"], hello["token"]
        with open(params_path) as f:
            params = json.load(f)
        jobs = []
        for t in TYPES:
            log(f"requests: {t} job")
            body = dict(params["segments"][t], asOf=params["asOf"])
            before = counts()
            status, created = get(f"{url}/segments/{t}", token, json.dumps(body).encode())
            if status != 202:
                raise RuntimeError(f"POST /segments/{t}: {status} {created}")
            job_id, polls = created["jobId"], 0
            deadline = time.time() + 300
            while True:
                polls += 1
                status, page = get(f"{url}/segments/{t}/{job_id}?page=1&perPage=500", token)
                if status == 200 or time.time() > deadline:
                    break
                if status != 404:
                    raise RuntimeError(f"GET job: {status} {page}")
                time.sleep(0.5)
            done = counts()
            pages = 1
            while status == 200 and page["page"] < page["totalPages"]:
                pages += 1
                status, page = get(f"{url}/segments/{t}/{job_id}?page={pages}&perPage=500", token)
            after = counts()
            jobs.append({"type": t, "users": page.get("totalElements"), "polls": polls, "resultPages": pages,
                         "job": diff(done, before), "reading": diff(after, done)})
        return {"users": USERS, "shards": SHARDS, "jobs": jobs, "markdown": markdown(jobs)}
    finally:
        if serve:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(10)
            except subprocess.TimeoutExpired:
                serve.kill()
        moto.kill()
        moto.wait()


def markdown(jobs):
    rows = [f"{USERS} users on {SHARDS} shards (moto is slow: a small data set), one job per type, "
            "counted at the server from the POST until the first result page answered 200 (the poll GETs "
            "of the client included), then the reading of all result pages of 500 users.",
            "",
            "| type | users in result | Query calls | of them full pages (more to come) | avg bytes of a full page | "
            "read units | other DynamoDB calls | S3 PUT / GET | SQS send / receive / delete | polls | reading further pages |",
            "|---|---:|---:|---:|---:|---:|---|---|---|---:|---|"]
    for j in jobs:
        c = j["job"]
        others = ", ".join(f"{k.split(':')[1]} {v}" for k, v in c.items()
                           if k.startswith("dynamodb:") and not k.startswith("dynamodb:Query"))
        full = c.get("dynamodb:Query.pagesWithMore", 0)
        avg_full = c.get("dynamodb:Query.bytesOfPagesWithMore", 0) / full if full else 0
        s3 = f"{c.get('s3:PUT', 0)} / {c.get('s3:GET', 0)}"
        sqs = (f"{c.get('sqs:SendMessage', 0) + c.get('sqs:SendMessageBatch', 0)} / {c.get('sqs:ReceiveMessage', 0)} / "
               f"{c.get('sqs:DeleteMessage', 0) + c.get('sqs:DeleteMessageBatch', 0)}")
        r = j["reading"]
        reading = ", ".join(f"{k} {v}" for k, v in r.items()) or "none (one page, read by the last poll)"
        rows.append(f"| {j['type']} | {j['users']} | {c.get('dynamodb:Query', 0)} | {full} | {avg_full:,.0f} | "
                    f"{c.get('dynamodb:Query.halfReadUnits', 0) / 2:,.1f} | {others} | {s3} | {sqs} | {j['polls']} | "
                    f"{reading} |")
    return "\n".join(rows)


if __name__ == "__main__":
    out = run(os.path.join(ROOT, "target", "release", "segments-bench"), sys.argv[1] if len(sys.argv) > 1
              else os.path.join(ROOT, "target", "bench"), os.path.join(HERE, "params.json"))
    print(out["markdown"])
