"""Every BIG-bench JSON task (capped) as 8 JSONL files, each task's examples spread over all 8 by a hash."""
import json, sys, hashlib
from cappy_jax.data import read
from configs.data import bigbench as bc
cap = int(sys.argv[1]); out = sys.argv[2]
cfg = bc.get_config("all"); cfg.dir = "/tmp/bb_all"; cfg.max_examples_per_task = cap
cfg = cfg.to_dict()
files = [open(f"{out}/part{i}.jsonl", "w") for i in range(8)]
n = 0
for unit in read.work_units(cfg):
    examples, _ = read.read_unit(cfg, unit)
    for ex in examples:
        rec = {"task": ex.task, "id": ex.example_id, "instruction": ex.instruction, "references": list(ex.references)}
        if ex.choices:
            rec["choices"] = list(ex.choices)
        h = int(hashlib.sha256(f"{ex.task}/{ex.example_id}".encode()).hexdigest()[:8], 16) % 8
        files[h].write(json.dumps(rec) + "\n"); n += 1
print(n, "examples")
