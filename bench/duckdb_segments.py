"""The five segment types of docs/semantics.md in SQL, run by DuckDB over the NDJSON files of
`segments generate`, written as one NDJSON result per type. Written from docs/semantics.md alone, as an
independent second implementation; bench/run.py compares its results with the service's.

Usage: duckdb_segments.py --data DIR --params bench/params.json --out DIR --threads N
Prints one JSON object: wall seconds of the load and of each query, and the total.
"""

import argparse
import datetime as dt
import json
import os
import sys
import time

import duckdb

HERE = os.path.dirname(os.path.abspath(__file__))
TYPES = ["highBalance", "lowBalance", "incomeSpendingSummary", "insuranceSpending", "financialBreakdown"]


def window(as_of: dt.date, n: int):
    """The n calendar months before the month of as_of, oldest first, as (first day, last day)."""
    months = []
    y, m = as_of.year, as_of.month
    for _ in range(n):
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
        first = dt.date(y, m, 1)
        nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
        months.append((first, nxt - dt.timedelta(days=1)))
    return list(reversed(months))


def lit(s):
    """A SQL string literal, or NULL."""
    return "NULL" if s is None else "'" + str(s).replace("'", "''") + "'"


def lit_list(xs):
    return "CAST([" + ", ".join(lit(x) for x in xs) + "] AS VARCHAR[])"


def money_literal(x) -> str:
    # params.json numbers are written as exact decimals; keep their text.
    return str(x)


def statements(params: dict, data: str, out: str) -> dict:
    as_of = dt.date.fromisoformat(params["asOf"])
    seg = params["segments"]
    sql = {}

    def read(name):
        with open(os.path.join(HERE, "sql", name + ".sql")) as f:
            return f.read()

    hb = seg["highBalance"]
    sql["highBalance"] = read("highBalance").format(
        account_type=hb["accountType"], currency=lit(hb.get("currency")),
        as_of=as_of, threshold=money_literal(hb["threshold"]), out=os.path.join(out, "highBalance.ndjson"))

    lb = seg["lowBalance"]
    w = window(as_of, lb["durationInMonth"])
    sql["lowBalance"] = read("lowBalance").format(
        account_type=lb.get("accountType", "checking"), first_day=w[0][0], last_day=w[-1][1],
        threshold=money_literal(lb["threshold"]), months=len(w), out=os.path.join(out, "lowBalance.ndjson"))

    isb = seg["incomeSpendingSummary"]
    sql["incomeSpendingSummary"] = read("incomeSpendingSummary").format(
        account_type=lit(isb.get("accountType")), date_from=isb["dateFrom"], date_to=isb["dateTo"],
        out=os.path.join(out, "incomeSpendingSummary.ndjson"))

    ins = seg["insuranceSpending"]
    w = window(as_of, ins.get("durationInMonth", 12))
    sql["insuranceSpending"] = read("insuranceSpending").format(
        first_day=w[0][0], last_day=w[-1][1], out=os.path.join(out, "insuranceSpending.ndjson"))

    fb = seg["financialBreakdown"]
    groups = []
    for g, group in enumerate(fb["labelGroups"]):
        if isinstance(group, str):
            group = {"alias": group, "includeLabels": [group]}
        groups.append("(%d, %s, %s, %s)" % (g, lit(group["alias"]), lit_list(group["includeLabels"]),
                                            lit_list(group.get("excludeLabels", []))))
    w = window(as_of, fb["durationInMonth"])
    months = ["(%d, '%04d-%02d', DATE '%s', DATE '%s')" % (i, f.year, f.month, f, l) for i, (f, l) in enumerate(w)]
    sql["financialBreakdown"] = read("financialBreakdown").format(
        groups=", ".join(groups), months=", ".join(months), out=os.path.join(out, "financialBreakdown.ndjson"))

    sql["load"] = read("load").format(accounts=os.path.join(data, "accounts.ndjson"),
                                      transactions=os.path.join(data, "transactions.ndjson"))
    return sql


MACROS = """
CREATE OR REPLACE MACRO money(c) AS
    CASE WHEN c < 0 THEN '-' ELSE '' END || CAST(abs(c) // 100 AS VARCHAR) || '.' || lpad(CAST(abs(c) % 100 AS VARCHAR), 2, '0');
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, required=True)
    a = ap.parse_args()
    with open(a.params) as f:
        params = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    sql = statements(params, os.path.abspath(a.data), os.path.abspath(a.out))
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {a.threads}")
    con.execute("SET preserve_insertion_order = true")
    con.execute(MACROS)
    timings = {}
    started = time.perf_counter()
    t = time.perf_counter()
    con.execute(sql["load"])
    timings["load"] = time.perf_counter() - t
    for name in TYPES:
        t = time.perf_counter()
        con.execute(sql[name])
        timings[name] = time.perf_counter() - t
    total = time.perf_counter() - started
    print(json.dumps({"threads": a.threads, "seconds": total, "phases": timings, "duckdb": duckdb.__version__}))


if __name__ == "__main__":
    sys.exit(main())
