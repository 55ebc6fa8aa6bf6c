"""Reads the progress lines of evaluate logs: elapsed = pairs done / average rate; the ETA at each point against the run's real scoring time."""
import re, sys
for path in sys.argv[1:]:
    txt = open(path).read().replace('\r', '\n')
    pts = [(int(a.replace(',', '')), int(b.replace(',', '')), float(c.replace(',', '')), float(d.replace(',', '')))
           for a, b, c, d in re.findall(r"([\d,]+)/([\d,]+) pairs \(\d+%\), ([\d,.]+) pairs/s, ETA ([\d,.]+)s", txt)]
    total = pts[-1][0] / pts[-1][2]
    print(path, f"scoring took about {total:.0f} s ({pts[-1][0]} pairs)")
    for frac in (0.05, 0.1, 0.25, 0.5):
        done, n, rate, eta = next(p for p in pts if p[0] / p[1] >= frac)
        el = done / rate
        print(f"  at {done/n:4.0%} done ({el:4.0f} s in): ETA said {eta:5.0f} s more -> {el + eta:5.0f} s in all, {(el + eta) / total:.2f}x the real")
