# train_compile for one H100 under jax 0.11.2 (the lent GPUs' version), inside the Debian trixie root that
# tests/newer_jax.sh builds, with /opt/cudaenv a venv holding jax-cuda12-plugin and jax-cuda12-pjrt 0.11.2 (--no-deps)
# and /opt/venv's packages on PYTHONPATH: `chroot ROOT bash /tmp/run.sh` with this file copied there.
cd /repo
export PYTHONPATH=/repo:/opt/venv/lib/python3.13/site-packages PATH=/usr/local/bin:/usr/bin:/bin
out=bench/logs/2026-11-28-jax011-h100
run() { name=$1; shift; s=$(date +%s); /opt/cudaenv/bin/python -m cappy_jax.train_compile --config configs/pretrain.py:large \
  --topology h100 --config.data.readers=8 --config.data.eval_rows=8 "$@" --output $out/$name.json > $out/$name.log 2>&1
  echo "$name rc=$? $(( $(date +%s) - s )) s" >> $out/done.log; }
run rows32 --config.global_rows=32
run rows32-ragged --config.global_rows=32 --config.model.attention=cudnn-ragged
run rows8 --config.global_rows=8
