#!/bin/bash
# like fulltrain.sh, with py-spy recording from the SIGTERM on
# The runs without autotuning of the evaluation stream ran /tmp/timed_train3.py instead of timed_train2.py.
rm -rf /tmp/fulltrain_spy
cd /tmp
python /tmp/timed_train2.py --config /work/main/configs/finetune.py --workdir /tmp/fulltrain_spy \
  --config.init_from=/tmp/demo2/init_scorer --config.data.dir=/tmp/bb_full --config.num_steps=${STEPS:-4} \
  --config.global_rows=16 --config.eval_every=0 --config.log_every=1 --config.checkpoint_every=100 \
  --config.data.eval_rows=16 > /tmp/ft_spy.log 2>&1 &
pid=$!
start=$(date +%s)
while kill -0 $pid 2>/dev/null; do
  if [ -z "$sent" ] && grep -aq "eval pairs" /tmp/ft_spy.log; then
    [ -z "$seen" ] && seen=$(date +%s)
    if [ $(( $(date +%s) - seen )) -ge ${WAIT:-30} ]; then
      :  # (the py-spy run: py-spy record here; the dump run: py-spy dump --native 5 s after the SIGTERM)
      sleep 1
      kill -TERM $pid; sent=$(date +%s); echo "SIGTERM at $((sent-start)) s $(date +%T)"
    fi
  fi
  sleep 1
done
wait $pid; rc=$?
end=$(date +%s)
echo "rc=$rc total $((end-start)) s, exit $((end-sent)) s after SIGTERM $(date +%T)"
