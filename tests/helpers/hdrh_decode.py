#!/usr/bin/env python3
"""Decodes an HdrHistogram interval log (.hlog) with the independent PyPI
`hdrhistogram` package and prints, per tag, the lines, total count, min, max,
p50 and p90 as JSON. Exit status 3 when `hdrh` cannot be imported.
Usage: hdrh_decode.py FILE.hlog"""
import json, sys
try:
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader
except ImportError as e:
    print("IMPORT-ERROR: %s" % e)
    sys.exit(3)
reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 2, 3))
acc, lines = {}, {}
while True:
    h = reader.get_next_interval_histogram()
    if h is None:
        break
    tag = h.get_tag() or ""
    lines[tag] = lines.get(tag, 0) + 1
    acc.setdefault(tag, HdrHistogram(1, 24 * 3600 * 1000000, 3)).add(h)
out = {}
for tag, a in acc.items():
    out[tag] = {
        "lines": lines[tag],
        "count": a.get_total_count(),
        "min": a.get_min_value() if a.get_total_count() else 0,
        "max": a.get_max_value(),
        "p50": a.get_value_at_percentile(50),
        "p90": a.get_value_at_percentile(90),
    }
print(json.dumps(out))
