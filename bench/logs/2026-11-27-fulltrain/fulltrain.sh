#!/bin/bash
# Tiny finetune on every BIG-bench task's shards (20.2 M records), SIGTERM during the final evaluation pass.
cd /tmp
python /tmp/timed_train.py --config /work/main/configs/finetune.py --workdir /tmp/fulltrain \
  --config.init_from=/tmp/demo2/init_scorer --config.data.dir=/tmp/bb_full --config.num_steps=12 \
  --config.global_rows=16 --config.eval_every=0 --config.log_every=1 --config.checkpoint_every=100 \
  --config.data.eval_rows=16 > /tmp/fulltrain.log 2>&1 &
pid=$!
start=$(date +%s)
peak=0
while kill -0 $pid 2>/dev/null; do
  rss=$(ps -o rss= -p $pid 2>/dev/null | tr -d ' '); [ -n "$rss" ] && [ "$rss" -gt "$peak" ] && peak=$rss
  if [ -z "$sent" ] && grep -aq "eval pairs" /tmp/fulltrain.log; then
    [ -z "$seen" ] && seen=$(date +%s)
    if [ $(( $(date +%s) - seen )) -ge 60 ]; then kill -TERM $pid; sent=$(date +%s); echo "SIGTERM at $((sent-start)) s"; (sleep 8; kill -USR1 $pid); fi
  fi
  sleep 1
done
wait $pid; rc=$?
end=$(date +%s)
echo "rc=$rc total $((end-start)) s, exit $((end-sent)) s after SIGTERM, peak RSS ${peak} KB"
