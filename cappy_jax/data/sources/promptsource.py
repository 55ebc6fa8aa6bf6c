"""PromptSource templates applied to dataset rows, giving `Example`s, without importing promptsource.

Templates come from `templates.yaml` files (`python -m cappy_jax.data.fetch promptsource` extracts
them from the promptsource 0.2.3 sdist). Those files carry the custom tags `!Template` and
`!TemplateMetadata`; a private SafeLoader subclass knows them, so nothing is registered globally
and no arbitrary Python object can be built from YAML.

`apply` follows promptsource 0.2.3's `Template.apply` and T0's `apply_template`
(bigscience-workshop/t-zero), which made T0's training data:
- hyphens in row keys become underscores (promptsource's `removeHyphen`);
- `|||` inside row values is protected while rendering, so only the template's `|||` splits;
- `answer_choices` is itself a Jinja template rendered with the row, split on `|||` and stripped;
  the list is visible to the main template as `answer_choices`;
- every `}}` becomes `| string | truncate(2048) }}` first (promptsource's TEXT_VAR_LENGTH; pass
  `truncate=None` to render untruncated);
- the render splits on `|||` into (input, target), each stripped; an empty render or an empty
  target is promptsource's way of saying "no example for this row" (e.g. a label of -1): `apply`
  returns None and `apply_all` counts it.
Jinja runs in a `SandboxedEnvironment` with what promptsource registers: the global `zip` and
the filters `choice` and `most_frequent` (plus `highlight`, as the identity). `choice` and Jinja's
own `random` filter draw from a `random.Random` seeded by (seed, template id, example id), so a
render is reproducible; promptsource used the global `random` module. The 0.2.3 templates use
no other helper (`str`, for one, appears in none of them).

A template with answer choices makes a classification example whose reference (the target) must
be one of the choices; anything else that goes wrong raises `TemplateError` naming the template
and the row.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from cappy_jax.data.records import Example

log = logging.getLogger("cappy_jax.data.sources.promptsource")

SEPARATOR = "|||"
TEXT_VAR_LENGTH = 2048                             # promptsource's truncation of every {{ ... }}
PIPE_PROTECTOR = "3ed2dface8203c4c9dfb1a5dc58e41e0"  # promptsource's stand-in for ||| inside row values
RNG_VARIABLE = "__cappy_rng__"
TEMPLATES_FILE = "templates.yaml"
_MAX_PROBLEMS_KEPT = 20


class TemplateError(ValueError):
    """A template that cannot be loaded or rendered; the message names the template and the row."""


@dataclasses.dataclass(frozen=True)
class TemplateMetadata:
    original_task: bool | None = None       # does the prompt ask for the dataset's original task?
    choices_in_prompt: bool | None = None   # are the answer choices spelled out in the input?
    metrics: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()         # newer promptsource files have it; 0.2.3 does not


@dataclasses.dataclass(frozen=True)
class Template:
    """One prompt template. `dataset`/`subset` come from the file, `path` names it in errors."""

    name: str
    id: str
    jinja: str
    answer_choices: str | None = None
    reference: str = ""
    metadata: TemplateMetadata = TemplateMetadata()
    dataset: str | None = None
    subset: str | None = None
    path: str | None = None

    @property
    def where(self) -> str:
        source = "/".join(p for p in (self.dataset, self.subset) if p) or self.path or "?"
        return f"template {self.name!r} (id {self.id}) of {source}"

    @functools.cached_property
    def _cache(self) -> dict[int | None, _Compiled]:
        # Per truncation length; dropped when pickled (compiled Jinja does not pickle).
        return {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}


# ---------------------------------------------------------------------------------------------
# Loading

class _RawTemplate(dict):
    """What the `!Template` tag builds: the mapping, turned into a `Template` after validation."""


def _construct_template(loader: yaml.SafeLoader, node: yaml.Node) -> _RawTemplate:
    return _RawTemplate(loader.construct_mapping(node, deep=True))


def _construct_metadata(loader: yaml.SafeLoader, node: yaml.Node) -> TemplateMetadata:
    raw = loader.construct_mapping(node, deep=True)
    return TemplateMetadata(original_task=raw.get("original_task"), choices_in_prompt=raw.get("choices_in_prompt"),
                            metrics=tuple(raw.get("metrics") or ()), languages=tuple(raw.get("languages") or ()))


_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TemplateLoader(_SafeBase):  # type: ignore[misc,valid-type]
    """SafeLoader plus promptsource's two tags; the constructors live on this class only."""

    yaml_constructors = {**_SafeBase.yaml_constructors, "!Template": _construct_template,
                         "!TemplateMetadata": _construct_metadata}


def _template(raw: Any, key: Any, path: str, dataset: str | None, subset: str | None) -> Template:
    where = f"{path}: template {key!r}"
    if not isinstance(raw, _RawTemplate):
        raise TemplateError(f"{where}: expected a !Template mapping, got {type(raw).__name__}")
    for field in ("name", "jinja"):
        if not isinstance(raw.get(field), str):
            raise TemplateError(f"{where}: missing or non-string {field!r}")
    choices = raw.get("answer_choices")
    if choices is not None and not isinstance(choices, str):
        raise TemplateError(f"{where}: answer_choices must be a Jinja string, got {type(choices).__name__}")
    metadata = raw.get("metadata")
    if metadata is None:
        metadata = TemplateMetadata()
    elif not isinstance(metadata, TemplateMetadata):
        raise TemplateError(f"{where}: metadata must be a !TemplateMetadata mapping")
    return Template(name=raw["name"], id=str(raw.get("id") or key), jinja=raw["jinja"], answer_choices=choices,
                    reference=str(raw.get("reference") or ""), metadata=metadata, dataset=dataset, subset=subset,
                    path=path)


def load_templates(path: str | Path) -> list[Template]:
    """The templates of one `templates.yaml`, in file order."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise TemplateError(f"{path}: malformed YAML: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("templates", {}), dict):
        raise TemplateError(f"{path}: expected a mapping with a 'templates' mapping")
    dataset, subset = data.get("dataset"), data.get("subset")
    return [_template(raw, key, str(path), dataset, subset) for key, raw in (data.get("templates") or {}).items()]


def load_collection(root: str | Path) -> dict[str, list[Template]]:
    """Every `templates.yaml` under `root` (a fetch DEST), keyed `dataset` or `dataset/subset`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no PromptSource template directory at {root}")
    return {str(p.parent.relative_to(root)): load_templates(p) for p in sorted(root.rglob(TEMPLATES_FILE))}


def task_name(dataset: str, subset: str | None, template_name: str) -> str:
    """T0's task name for a (dataset, subset, template), e.g. `super_glue_rte_MNLI_crowdsource`."""
    text = dataset + (f"_{subset}_" if subset else "_") + template_name
    return re.sub(r"[^\w\d._]+", "_", text)


# ---------------------------------------------------------------------------------------------
# Rendering

def _rng(context: jinja2.runtime.Context) -> random.Random:
    rng = context.get(RNG_VARIABLE)
    if not isinstance(rng, random.Random):
        raise TemplateError("internal: rendering without a seeded random.Random")
    return rng


@jinja2.pass_context
def _choice(context: jinja2.runtime.Context, choices: Any) -> Any:
    return _rng(context).choice(list(choices))


@jinja2.pass_context
def _random(context: jinja2.runtime.Context, seq: Any) -> Any:
    return _rng(context).choice(list(seq))


def _most_frequent(items: Any) -> list[Any] | None:
    """The items that appear most often (promptsource's filter, ties kept in first-seen order)."""
    if not items:
        return None
    counts = collections.Counter(items).most_common()
    return [item for item, count in counts if count == counts[0][1]]


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment()
    env.globals["zip"] = zip
    env.filters["choice"] = _choice
    env.filters["random"] = _random
    env.filters["most_frequent"] = _most_frequent
    env.filters["highlight"] = lambda text: text  # promptsource's HTML highlighting, for its app only
    return env


@dataclasses.dataclass(frozen=True)
class _Compiled:
    prompt: jinja2.Template
    choices: jinja2.Template | None


def _compiled(template: Template, truncate: int | None) -> _Compiled:
    cache = template._cache
    if truncate not in cache:
        env = _environment()
        jinja = template.jinja
        if truncate is not None:
            jinja = jinja.replace("}}", f" | string | truncate({int(truncate)}) }}}}")
        try:
            cache[truncate] = _Compiled(prompt=env.from_string(jinja),
                                        choices=env.from_string(template.answer_choices)
                                        if template.answer_choices is not None else None)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"{template.where}: Jinja syntax error at line {e.lineno}: {e.message}") from e
    return cache[truncate]


def _protect(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.replace(SEPARATOR, PIPE_PROTECTOR) if isinstance(v, str) else v for k, v in row.items()}


def _unprotect(text: str) -> str:
    return text.replace(PIPE_PROTECTOR, SEPARATOR)


def answer_choices(template: Template, row: dict[str, Any], *, seed: int | str = 0,
                   example_id: str = "") -> list[str] | None:
    """The template's answer choices for a row (None for an open-ended template)."""
    compiled = _compiled(template, None)
    if compiled.choices is None:
        return None
    rng = random.Random(f"{seed}/{template.id}/{example_id}/choices")
    rendered = compiled.choices.render(**_protect(_clean_keys(row)), **{RNG_VARIABLE: rng})
    return [_unprotect(c.strip()) for c in rendered.split(SEPARATOR)]


def _clean_keys(row: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("-", "_"): v for k, v in row.items()}


def render(template: Template, row: dict[str, Any], *, example_id: str = "", truncate: int | None = TEXT_VAR_LENGTH,
           seed: int | str = 0) -> tuple[list[str], list[str] | None]:
    """(the render split on `|||` and stripped, the answer choices): promptsource's `apply`."""
    if not isinstance(row, dict):
        raise TemplateError(f"{template.where}, row {example_id}: a row must be a dict, got {type(row).__name__}")
    row = _clean_keys(row)
    if "answer_choices" in row:
        raise TemplateError(f"{template.where}, row {example_id}: the row has the reserved key 'answer_choices'")
    try:
        choices = answer_choices(template, row, seed=seed, example_id=example_id)
        rng = random.Random(f"{seed}/{template.id}/{example_id}")
        rendered = _compiled(template, truncate).prompt.render(
            **_protect(row), answer_choices=choices, **{RNG_VARIABLE: rng})
    except TemplateError:
        raise
    except Exception as e:  # Jinja raises many kinds (UndefinedError, TypeError, SecurityError, ...)
        raise TemplateError(f"{template.where} failed to render row {example_id}: {type(e).__name__}: {e}") from e
    return [_unprotect(part).strip() for part in rendered.split(SEPARATOR)], choices


def apply(template: Template, row: dict[str, Any], *, task: str, example_id: str,
          truncate: int | None = TEXT_VAR_LENGTH, seed: int | str = 0) -> Example | None:
    """The `Example` a template makes of a row; None when it renders an empty target (skip the row)."""
    if SEPARATOR not in template.jinja:
        raise TemplateError(f"{template.where}: the template has no {SEPARATOR!r} between input and target")
    parts, choices = render(template, row, example_id=example_id, truncate=truncate, seed=seed)
    if len(parts) > 2:
        raise TemplateError(f"{template.where}, row {example_id}: the render splits into {len(parts)} parts on "
                            f"{SEPARATOR!r}, not 2 (input, target)")
    if len(parts) == 1 or not parts[1]:
        return None  # promptsource's "no example here", e.g. {% if label != -1 %} around the target
    instruction, target = parts
    if not instruction:
        raise TemplateError(f"{template.where}, row {example_id}: empty input with target {target!r}")
    if choices is not None and target not in choices:
        raise TemplateError(f"{template.where}, row {example_id}: the target {target!r} is not among the "
                            f"answer choices {choices!r}")
    try:
        return Example(task=task, example_id=example_id, instruction=instruction, references=(target,),
                       choices=tuple(choices) if choices is not None else ())
    except (ValueError, TypeError) as e:
        raise TemplateError(f"{template.where}, row {example_id}: {e}") from e


@dataclasses.dataclass
class ApplyStats:
    """What `apply_all` left out, so nothing is dropped silently."""

    examples: int = 0
    skipped_empty: int = 0   # rows the template renders with an empty target (promptsource's skip)
    skipped_bad: int = 0     # rows that raised TemplateError, skipped because skip_bad=True
    problems: list[str] = dataclasses.field(default_factory=list)  # first messages of skipped_bad rows


def apply_all(template: Template, rows: Iterable[dict[str, Any]], *, task: str | None = None,
              skip_bad: bool = False, stats: ApplyStats | None = None, truncate: int | None = TEXT_VAR_LENGTH,
              seed: int | str = 0, id_prefix: str = "", indexed: bool = False) -> Iterator[Example]:
    """`apply` over rows; example ids are `{id_prefix}{row index}`; task defaults to T0's task name.

    With `indexed`, `rows` yields `(index, row)` pairs, so a sample of a split keeps each row's
    index in the full split as its id.
    """
    stats = stats if stats is not None else ApplyStats()
    if task is None:
        task = task_name(template.dataset or "unknown", template.subset, template.name)
    before = (stats.skipped_empty, stats.skipped_bad)
    for index, row in (rows if indexed else enumerate(rows)):
        try:
            example = apply(template, row, task=task, example_id=f"{id_prefix}{index}", truncate=truncate, seed=seed)
        except TemplateError as e:
            if not skip_bad:
                raise
            stats.skipped_bad += 1
            if len(stats.problems) < _MAX_PROBLEMS_KEPT:
                stats.problems.append(str(e))
            continue
        if example is None:
            stats.skipped_empty += 1
            continue
        stats.examples += 1
        yield example
    empty, bad = stats.skipped_empty - before[0], stats.skipped_bad - before[1]
    if empty or bad:
        log.info("%s: skipped %d rows with an empty target and %d bad rows", task, empty, bad)


# ---------------------------------------------------------------------------------------------
# Rows

def rows_from_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows stored one JSON object a line (blank lines skipped); errors name file and line."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON: {e.msg}") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: a row must be a JSON object, got {type(row).__name__}")
            yield row


def _plain(value: Any) -> Any:
    """TFDS values (bytes, numpy scalars and arrays, nested dicts) as the Python values templates expect."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist())
    return value


def rows_from_tfds(name: str, split: str, *, data_dir: str | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a TFDS dataset (`name` may carry a config, e.g. `super_glue/rte`).

    PromptSource templates are written against Hugging Face field names; use this only where
    TFDS has the same fields.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("rows_from_tfds needs tensorflow-datasets (pip install tensorflow-datasets "
                          "tensorflow); or use rows_from_hf / rows_from_jsonl") from e
    for row in tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir)):
        yield _plain(row)


def rows_from_hf(name: str, subset: str | None, split: str, **load_kwargs: Any) -> Iterator[dict[str, Any]]:
    """Rows of a Hugging Face dataset, as T0 read them (`datasets.load_dataset(name, subset)[split]`)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("rows_from_hf needs the Hugging Face datasets library (pip install datasets) and "
                          "access to the hub; or use rows_from_jsonl") from e
    yield from datasets.load_dataset(name, subset, split=split, **load_kwargs)
