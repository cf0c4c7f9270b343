"""The bulk export's baseline (never part of the product): every row of the plain table,
SELECTed as a stream and serialised to NDJSON on stdout, in a process of its own so that
its memory growth can be measured as the server's is. Prints to stderr, as its last line,
a JSON summary: rows, rate (rows/s), rss_growth (anonymous memory) and whole_rss_growth
(the resident set) in bytes, sampled peaks.

    python -m bench.plain_export sqlite:///plain.db > /dev/null
"""

from __future__ import annotations

import json
import os
import sys
import time

from sqlalchemy import create_engine, text

from bench.suite import peak_rss

BATCH = 1_000


def main() -> int:
    engine = create_engine(sys.argv[1])
    rows = 0
    out = sys.stdout.buffer
    with peak_rss(os.getpid()) as rss, engine.connect() as connection:
        start = time.perf_counter()
        result = connection.execution_options(stream_results=True, yield_per=BATCH).execute(
            text("SELECT * FROM plain_residents")
        )
        names = list(result.keys())
        for row in result:
            out.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False).encode())
            out.write(b"\n")
            rows += 1
        out.flush()
        elapsed = time.perf_counter() - start
    engine.dispose()
    summary = {
        "rows": rows,
        "rate": rows / elapsed,
        "rss_growth": rss["growth"],
        "whole_rss_growth": rss["rss_growth"],
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
