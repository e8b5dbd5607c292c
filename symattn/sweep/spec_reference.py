"""The reference of a sweep spec's fields, generated from the spec models so that it stays true.

    python -m symattn.sweep.spec_reference

prints the Markdown that `experiments/README.md` holds between its reference markers; a test
checks that the two agree.
"""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from symattn.sweep.analysis_plan import AnalysisPlan, Endpoint, Equivalence, Secondary
from symattn.sweep.spec import FinetuneSpec, SearchSpec, StoresSpec, SweepSpec, WorkersSpec

BEGIN, END = "<!-- spec reference: begin -->", "<!-- spec reference: end -->"
# Each block of a spec, as its keys are written (`[]`: each item of a list).
BLOCKS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("", SweepSpec),
    ("stores.", StoresSpec),
    ("workers.", WorkersSpec),
    ("search.", SearchSpec),
    ("finetune.", FinetuneSpec),
    ("analysis.", AnalysisPlan),
    ("analysis.endpoint.", Endpoint),
    ("analysis.secondary[].", Secondary),
    ("analysis.equivalence.", Equivalence),
)
# What `load_spec` fills in, or reads, before the model sees the spec.
FILLED = {"name": "the file's stem"}
SET = (
    "`set`",
    "list of `key=value`",
    "",
    "overrides of the base config, applied before those of the command line",
)


def _type(annotation) -> str:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "block"
    if origin is list and _type(typing.get_args(annotation)[0]) == "block":
        return "list of blocks"
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if origin is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_type(a) for a in args)
    text = re.sub(r"typing\.|<class '(\w+)'>", r"\1", str(annotation))
    return text.replace("Any", "any")


def _default(key: str, field) -> str:
    if key in FILLED:
        return FILLED[key]
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else f"`{value}`"
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return (
        ""
        if field.default is None
        else f"`{field.default!r}`"
        if field.default == ""
        else f"`{field.default}`"
    )


def reference() -> str:
    rows = ["| key | type | default | what it sets |", "| --- | --- | --- | --- |"]
    for prefix, model in BLOCKS:
        for name, field in model.model_fields.items():
            key = prefix + name
            cells = (f"`{key}`", _type(field.annotation), _default(key, field), field.description or "")
            rows.append("| " + " | ".join(cells) + " |")
        if model is SweepSpec:
            rows.append("| " + " | ".join(SET) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
