from cappy_jax.data import read
from configs.data import bigbench as bc
cfg = bc.get_config("all"); cfg.dir = "/tmp/bb_all"; cfg = cfg.to_dict()
gen = cls = 0
for unit in read.work_units(cfg):
    examples, _ = read.read_unit(cfg, unit)
    for ex in examples:
        if ex.is_classification: cls += 1
        else: gen += 1
print(f"examples {gen + cls}, generation {gen}, choice {cls} ({cls / (gen + cls):.1%})")
