"""Exact comparison of two result directories (one NDJSON file per segment type).

Money is compared as the exact decimal text: the service writes JSON numbers with two decimals
(read here as their literal text), the SQL writes strings. Counts are integers. Every field of
every entry must be equal, entries in the same (userId) order.
"""

import json
import os

TYPES = ["highBalance", "lowBalance", "incomeSpendingSummary", "insuranceSpending", "financialBreakdown"]


def _load(path):
    entries = []
    with open(path) as f:
        for line in f:
            if line.strip():
                # parse_float keeps a number's literal text: 12.50 stays "12.50", never a float.
                entries.append(json.loads(line, parse_float=str))
    return entries


def _diff(a, b, path=""):
    """The first difference between two JSON values, as text, or None."""
    if type(a) is not type(b):
        return f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path}: fields {sorted(a)} vs {sorted(b)}"
        for k in a:
            d = _diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} elements"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def compare(left_dir, right_dir, max_report=5):
    """Per type: (entries left, entries right, list of differences)."""
    out = {}
    for t in TYPES:
        left = _load(os.path.join(left_dir, t + ".ndjson"))
        right = _load(os.path.join(right_dir, t + ".ndjson"))
        problems = []
        for name, entries in (("left", left), ("right", right)):
            ids = [e.get("userId") for e in entries]
            if any(x >= y for x, y in zip(ids, ids[1:])):
                problems.append(f"{name} is not in strictly increasing userId order")
        by_user_right = {e["userId"]: e for e in right}
        by_user_left = {e["userId"]: e for e in left}
        for uid in sorted(set(by_user_left) - set(by_user_right))[:max_report]:
            problems.append(f"{uid}: only left")
        for uid in sorted(set(by_user_right) - set(by_user_left))[:max_report]:
            problems.append(f"{uid}: only right")
        n = 0
        for uid in sorted(set(by_user_left) & set(by_user_right)):
            d = _diff(by_user_left[uid], by_user_right[uid])
            if d:
                n += 1
                if n <= max_report:
                    problems.append(f"{uid}{d}")
        if n > max_report:
            problems.append(f"... {n - max_report} more users differ")
        out[t] = (len(left), len(right), problems)
    return out


if __name__ == "__main__":
    import sys

    result = compare(sys.argv[1], sys.argv[2])
    ok = True
    for t, (l, r, problems) in result.items():
        print(f"{t}: {l} vs {r} entries, {'identical' if not problems else 'DIFFERENT'}")
        for p in problems:
            print("   ", p)
        ok &= not problems
    sys.exit(0 if ok else 1)
