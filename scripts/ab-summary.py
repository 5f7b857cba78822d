#!/usr/bin/env python3
"""Medians per label and case from a bench-ab.sh JSON-lines file, and after/before ratios.

    ab-summary.py FILE [BEFORE_LABEL AFTER_LABEL]   (labels default to before and after;
    scripts/bench-metrics.sh writes off and on)
"""
import json
import statistics
import sys
from collections import defaultdict

values = defaultdict(list)
units = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = (r["case"], r["metric"])
    values[(r["label"], key)].append(r["value"])
    units[key] = r["unit"]
before_label, after_label = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else ("before", "after")
keys = sorted({k for (_, k) in values})
print(f"| case | metric | {before_label} (median) | {after_label} (median) | {after_label}/{before_label} | rounds |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for key in keys:
    before, after = values.get((before_label, key), []), values.get((after_label, key), [])
    if not before or not after:
        continue
    b, a = statistics.median(before), statistics.median(after)
    ratio = a / b if b else float("nan")
    print(f"| {key[0]} | {key[1]} ({units[key]}) | {b:.3f} | {a:.3f} | {ratio:.2f} | {len(before)}/{len(after)} |")
