"""Compilations the memory suite's search for the largest batch costs, before (acee072^) and after
(acee072), on four shapes of a step's memory against its rows, three limits, sizes 8 and 32 known
(what the suite measures first). Run from the repository root:

    git show acee072^:bench/memory_suite.py > /tmp/old_memory_suite.py
    python bench/logs/2026-11-28-memory-search/compare.py /tmp/old_memory_suite.py

"Before" counts one more compilation per search: the old suite compiled the size it found again to
report it. Both searches must agree on the answer.
"""

import importlib.util
import sys

from bench.memory_suite import largest_fitting

spec = importlib.util.spec_from_file_location("old_memory_suite", sys.argv[1])
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)

GIB = 2 ** 30
SHAPES = {
    "linear": lambda n: 10 * GIB + n * GIB // 4,
    "convex": lambda n: 10 * GIB + n * GIB // 4 + n * n * GIB // 2000,
    "jittery": lambda n: 10 * GIB + n * GIB // 4 + (n % 3) * GIB // 8,
    "kink": lambda n: 10 * GIB + min(n, 40) * GIB // 4 + max(n - 40, 0) * GIB // 40,
}
total_old = total_new = 0
print("shape   limit (GiB)  largest  before  after")
for name, size in SHAPES.items():
    for limit in (20 * GIB, 31 * GIB, 74 * GIB):
        known = {8: size(8), 32: size(32)}
        before, after = [], []
        a = old.largest_fitting(lambda n: before.append(n) or size(n) < limit, 32,
                                guess=old.linear_guess(known, limit),
                                known=max((n for n, e in known.items() if e < limit), default=0))
        b = largest_fitting(lambda n: after.append(n) or size(n), limit, known, 32)
        assert a == b, (name, limit, a, b)
        total_old += len(before) + 1
        total_new += len(after)
        print(f"{name:8s} {limit / GIB:6.0f} {b:10d} {len(before) + 1:7d} {len(after):6d}")
print(f"total compilations: before {total_old}, after {total_new}")
