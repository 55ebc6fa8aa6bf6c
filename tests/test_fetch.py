"""`python -m cappy_jax.data.fetch` on small fake sdists with the real internal layout; never downloads."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cappy_jax.data import fetch as fetch_lib
from cappy_jax.data.sources import bigbench as bb
from cappy_jax.data.sources import promptsource as ps

BB_TOP = "bigbench-1.0.0/bigbench/benchmark_tasks"
PS_TOP = "promptsource-0.2.3/promptsource/templates"


def task_json(name: str, examples: list | None = None) -> str:
    data = dict(name=name, canary="c", description="d", keywords=["k"])
    if examples is not None:
        data.update(metrics=["exact_str_match"], preferred_score="exact_str_match", examples=examples)
    return json.dumps(data)


BB_FILES = {
    "bigbench-1.0.0/setup.py": "# not data\n",
    "bigbench-1.0.0/bigbench/api/json_task.py": "# not data\n",
    f"{BB_TOP}/task_metadata.json": "{}",
    f"{BB_TOP}/arithmetic_json/task.json": task_json("arithmetic_json", [{"input": "1+1=", "target": "2"}]),
    f"{BB_TOP}/arithmetic_json/README.md": "# readme\n",
    f"{BB_TOP}/arithmetic_json/results/scores.json": "{}",
    f"{BB_TOP}/choices/task.json": task_json("choices", [{"input": "Red?", "target_scores": {"rose": 1, "sky": 0}}]),
    f"{BB_TOP}/multi/task.json": task_json("multi"),
    f"{BB_TOP}/multi/sub_a/task.json": task_json("sub_a", [{"input": "a", "target": "A"}]),
    f"{BB_TOP}/multi/sub_b/task.json": task_json("sub_b", [{"input": "b", "target": "B"}]),
    f"{BB_TOP}/multi/sub_b/README.md": "# readme\n",
    f"{BB_TOP}/programmatic/task.py": "# a programmatic task\n",
    f"{BB_TOP}/programmatic/__init__.py": "",
    f"{BB_TOP}/orphan/sub/task.json": task_json("sub", [{"input": "o", "target": "O"}]),  # no top task.json
    f"{BB_TOP}/../task.json": "{}",  # never written outside DEST
}
BB_EXPECTED = {
    "arithmetic_json/task.json", "choices/task.json", "multi/task.json", "multi/sub_a/task.json",
    "multi/sub_b/task.json",
}

TEMPLATES = """dataset: {dataset}
templates:
  t1: !Template
    answer_choices: Yes ||| No
    id: t1
    jinja: '{{{{ text }}}} ||| {{{{ answer_choices[label] }}}}'
    metadata: !TemplateMetadata
      choices_in_prompt: false
      metrics: [Accuracy]
      original_task: true
    name: yes no
    reference: ''
"""
PS_FILES = {
    "promptsource-0.2.3/promptsource/templates.py": "# not data\n",
    f"{PS_TOP}/imdb/templates.yaml": TEMPLATES.format(dataset="imdb"),
    f"{PS_TOP}/super_glue/rte/templates.yaml": TEMPLATES.format(dataset="super_glue"),
    f"{PS_TOP}/super_glue/cb/templates.yaml": TEMPLATES.format(dataset="super_glue"),
    f"{PS_TOP}/Zaid/coqa_expanded/templates.yaml": TEMPLATES.format(dataset="Zaid/coqa_expanded"),
}
PS_EXPECTED = {"imdb/templates.yaml", "super_glue/rte/templates.yaml", "super_glue/cb/templates.yaml",
               "Zaid/coqa_expanded/templates.yaml"}


def make_sdist(path: Path, files: dict[str, str]) -> Path:
    """A .tar.gz laid out like the real sdist, directory entries included."""
    with tarfile.open(path, "w:gz") as tar:
        dirs: set[str] = set()
        for name, text in files.items():
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs and ".." not in parts[:i]:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def bb_sdist(tmp_path):
    return make_sdist(tmp_path / "bigbench-1.0.0.tar.gz", BB_FILES)


@pytest.fixture
def ps_sdist(tmp_path):
    return make_sdist(tmp_path / "promptsource-0.2.3.tar.gz", PS_FILES)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != fetch_lib.MANIFEST}


def test_bigbench_extracts_only_json_tasks(bb_sdist, tmp_path):
    dest = tmp_path / "out" / "tasks"
    result = fetch_lib.fetch("bigbench", dest, sdist=bb_sdist)
    assert files_under(dest) == BB_EXPECTED
    assert not (tmp_path / "out" / "task.json").exists()
    assert (result.units, result.written, result.skipped, result.downloaded) == (
        ("arithmetic_json", "choices", "multi"), 5, 0, False)
    assert (dest / "multi/sub_a/task.json").read_text() == BB_FILES[f"{BB_TOP}/multi/sub_a/task.json"]
    # What comes out is what the BIG-bench source reads.
    assert bb.list_tasks(dest) == ["arithmetic_json", "choices", "multi"]
    assert [(e.task, e.instruction) for e in bb.read_tasks(dest, ["multi"])] == [
        ("multi:sub_a", "Q: a\nA:"), ("multi:sub_b", "Q: b\nA:")]


def test_bigbench_selected_tasks_and_idempotence(bb_sdist, tmp_path):
    dest = tmp_path / "tasks"
    result = fetch_lib.fetch("bigbench", dest, names=["multi"], sdist=bb_sdist)
    assert files_under(dest) == {"multi/task.json", "multi/sub_a/task.json", "multi/sub_b/task.json"}
    assert (result.written, result.skipped) == (3, 0)
    result = fetch_lib.fetch("bigbench", dest, names=["multi", "choices"], sdist=bb_sdist)
    assert (result.written, result.skipped) == (1, 3)
    (dest / "multi/sub_a/task.json").unlink()
    (dest / "choices/task.json").write_text("{}")  # a different size: written again
    result = fetch_lib.fetch("bigbench", dest, names=["multi", "choices"], sdist=bb_sdist)
    assert (result.written, result.skipped) == (2, 2)
    assert (dest / "choices/task.json").read_text() == BB_FILES[f"{BB_TOP}/choices/task.json"]
    assert not list(dest.rglob("*.part"))


def test_bigbench_unknown_and_programmatic_names(bb_sdist, tmp_path):
    dest = tmp_path / "tasks"
    with pytest.raises(ValueError, match="unknown bigbench name 'arithmetic'; close matches: arithmetic_json"):
        fetch_lib.fetch("bigbench", dest, names=["arithmetic", "choices"], sdist=bb_sdist)
    assert not dest.exists()  # nothing written when a name is wrong
    with pytest.raises(ValueError, match="'programmatic' has no task.json"):
        fetch_lib.fetch("bigbench", dest, names=["programmatic"], sdist=bb_sdist)
    with pytest.raises(ValueError, match="'orphan' has no task.json"):
        fetch_lib.fetch("bigbench", dest, names=["orphan"], sdist=bb_sdist)


def test_wrong_sdist(ps_sdist, tmp_path):
    with pytest.raises(ValueError, match="no bigbench/benchmark_tasks/\\*\\*/task.json inside"):
        fetch_lib.fetch("bigbench", tmp_path / "tasks", sdist=ps_sdist)
    with pytest.raises(ValueError, match="unknown source 'flan'"):
        fetch_lib.fetch("flan", tmp_path / "x")


def test_manifest_answers_reruns_without_download(bb_sdist, tmp_path, monkeypatch):
    dest = tmp_path / "tasks"
    fetch_lib.fetch("bigbench", dest, sdist=bb_sdist)

    def no_download(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(fetch_lib, "download", no_download)
    result = fetch_lib.fetch("bigbench", dest, names=["choices"])
    assert (result.units, result.written, result.skipped, result.downloaded) == (("choices",), 0, 1, False)
    assert fetch_lib.fetch("bigbench", dest).units == ("arithmetic_json", "choices", "multi")
    # The complete manifest knows every name: typos fail offline too.
    with pytest.raises(ValueError, match="close matches: choices"):
        fetch_lib.fetch("bigbench", dest, names=["choises"])
    with pytest.raises(ValueError, match="'programmatic' has no task.json"):
        fetch_lib.fetch("bigbench", dest, names=["programmatic"])


def test_download_path_uses_pip_and_cleans_up(bb_sdist, tmp_path, monkeypatch):
    calls: list[list[str]] = []

    def fake_pip(command, check):
        calls.append(command)
        target = Path(command[command.index("-d") + 1])
        (target / "bigbench-1.0.0.tar.gz").write_bytes(bb_sdist.read_bytes())

    monkeypatch.setattr(fetch_lib.subprocess, "run", fake_pip)
    result = fetch_lib.fetch("bigbench", tmp_path / "tasks", names=["choices"])
    assert result.downloaded and files_under(tmp_path / "tasks") == {"choices/task.json"}
    (command,) = calls
    assert command[:3] == [sys.executable, "-m", "pip"]
    assert command[3:10] == ["download", "--no-deps", "--no-binary", ":all:", "--ignore-requires-python",
                             "bigbench==1.0.0", "-d"]
    assert not Path(command[10]).exists()  # the temporary download directory is gone
    # With --download_dir the sdist is kept and reused.
    keep = tmp_path / "keep"
    fetch_lib.fetch("bigbench", tmp_path / "more", names=["multi"], download_dir=keep)
    fetch_lib.fetch("bigbench", tmp_path / "again", names=["multi"], download_dir=keep)
    assert len(calls) == 2 and (keep / "bigbench-1.0.0.tar.gz").is_file()


def test_promptsource_templates(ps_sdist, tmp_path):
    dest = tmp_path / "templates"
    result = fetch_lib.fetch("promptsource", dest, names=["super_glue"], sdist=ps_sdist)
    assert result.units == ("super_glue/cb", "super_glue/rte")
    assert files_under(dest) == {"super_glue/rte/templates.yaml", "super_glue/cb/templates.yaml"}
    fetch_lib.fetch("promptsource", dest, sdist=ps_sdist)
    assert files_under(dest) == PS_EXPECTED
    with pytest.raises(ValueError, match="unknown promptsource name 'super_glue/rtx'; close matches: super_glue/rte"):
        fetch_lib.fetch("promptsource", dest, names=["super_glue/rtx"], sdist=ps_sdist)
    collection = ps.load_collection(dest)
    assert sorted(collection) == sorted(p.rsplit("/", 1)[0] for p in PS_EXPECTED)
    (template,) = collection["super_glue/rte"]
    ex = ps.apply(template, {"text": "Good?", "label": 0}, task="t", example_id="0")
    assert (ex.instruction, ex.references, ex.choices) == ("Good?", ("Yes",), ("Yes", "No"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cappy_jax.data.fetch", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)


def test_cli(bb_sdist, tmp_path):
    dest = tmp_path / "tasks"
    done = run_cli("bigbench", "--dest", str(dest), "--sdist", str(bb_sdist), "--tasks", "choices,multi")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "dest": str(dest), "units": 2, "written": 4, "skipped": 0, "downloaded": False}
    assert files_under(dest) == BB_EXPECTED - {"arithmetic_json/task.json"}
    bad = run_cli("bigbench", "--dest", str(dest), "--sdist", str(bb_sdist), "--tasks", "choice")
    assert bad.returncode != 0 and "unknown bigbench name 'choice'; close matches: choices" in bad.stderr
    usage = run_cli("flan", "--dest", str(dest))
    assert usage.returncode != 0 and "expected one of ['bigbench', 'promptsource']" in usage.stderr
