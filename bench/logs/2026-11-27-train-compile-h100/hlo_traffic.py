"""Kernels of an optimized HLO module's entry computation, and the bytes each reads and writes (its operands'
and its result's sizes): by kind, and the non-GEMM fusions by the JAX name stack of their op (forward,
backward, optimizer; layer part). An estimate of memory traffic, not a timing: a fusion may read an operand
in part, or twice. PART (e.g. fwd:other) lists that part's largest ops.
"""
import re, sys, collections
text = open(sys.argv[1]).read()
entry = text[text.index("\nENTRY "):]
lines = entry.split("\n")[1:]
DT = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "f8e4m3fn": 1, "s64": 8, "u64": 8}
def nbytes(typ):
    tot = 0
    for dt, dims in re.findall(r"(\w+)\[([\d,]*)\]", typ):
        if dt not in DT: continue
        n = 1
        for d in dims.split(","):
            if d: n *= int(d)
        tot += n * DT[dt]
    return tot
size = {}
kern = []
for l in lines:
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (.+?) (\w[\w\-]*)\((.*?)\)(, .*)?$", l)
    if not m: continue
    name, typ, op, args, rest = m.groups()
    rest = rest or ""
    size[name] = nbytes(typ.split("{")[0] if not typ.startswith("(") else typ)
    if op in ("parameter", "get-tuple-element", "bitcast", "tuple", "constant"): continue
    ops = re.findall(r"%([\w.\-]+)", args)
    inb = sum(size.get(o, 0) for o in ops)
    meta = re.search(r'op_name="([^"]*)"', rest)
    kind = re.search(r"kind=(\w+)", rest)
    target = re.search(r'custom_call_target="([^"]*)"', rest)
    calls = re.search(r"calls=%([\w.\-]+)", rest)
    cls = op
    if op == "fusion":
        if "gemm_fusion" in (calls.group(1) if calls else "") or "__triton_nested_gemm" in rest or "__triton_gemm" in rest: cls = "gemm"
        else: cls = "fusion:" + (kind.group(1) if kind else "?")
    elif op == "custom-call":
        t = target.group(1) if target else ""
        cls = "cudnn" if "cudnn" in t else ("gemm" if "cublas" in t else "custom:" + t)
    kern.append((cls, name, inb, size[name], meta.group(1) if meta else ""))
by = collections.defaultdict(lambda: [0, 0])
for cls, name, i, o, meta in kern:
    by[cls][0] += 1; by[cls][1] += i + o
for cls, (n, b) in sorted(by.items(), key=lambda x: -x[1][1]):
    print(f"{cls:24s} {n:6d} kernels {b/2**30:8.2f} GiB moved  {b/3.35e12*1e3:7.2f} ms at 3.35 TB/s")
def part(meta):
    m = meta.lower()
    if "optimizer" in m: return "optimizer"
    if "transpose(jvp" in m or "transpose(" in m: d = "bwd"
    else: d = "fwd"
    for k in ("layer_norm", "_norm", "dropout", "attention", "mlp_in", "mlp_out", "embeddings", "head", "gelu"):
        if k in m: return d + ":" + k
    return d + ":other"
agg = collections.defaultdict(lambda: [0, 0])
for cls, name, i, o, meta in kern:
    if cls.startswith("fusion") or cls in ("copy", "transpose"):
        k = part(meta); agg[k][0] += 1; agg[k][1] += i + o
print("non-GEMM fusions by name stack:")
for k, (n, b) in sorted(agg.items(), key=lambda x: -x[1][1])[:16]:
    print(f"  {k:24s} {n:6d} {b/2**30:8.2f} GiB {b/3.35e12*1e3:7.2f} ms")
if len(sys.argv) > 2:
    want = sys.argv[2]
    top = collections.Counter()
    for cls, name, i, o, meta in kern:
        if (cls.startswith("fusion") or cls in ("copy", "transpose")) and part(meta) == want:
            top[re.sub(r"layer_\d+", "layer_N", meta)] += i + o
    for k, b in top.most_common(8):
        print(f"    {b/2**30:6.2f} GiB  {k[:150]}")
