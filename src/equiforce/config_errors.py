"""Config errors as the YAML spells them: ``file: key.path: message (did you mean ...)``."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from equiforce.models.registry import MODELS


def choice_msg(value: str, known) -> str:
    """The message for a value not among ``known``, with the closest one."""
    close = difflib.get_close_matches(value, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown value {value!r}{hint}; allowed: {', '.join(sorted(known))}"


def _walk(root: type[BaseModel] | None, loc: tuple) -> tuple[tuple, list[str]]:
    """``loc`` as the YAML spells it, and the keys allowed where it ends.

    Drops the tags pydantic puts in the path of a discriminated union
    (``model.so3krates.overrides`` -> ``model.overrides``) and names fields by
    their alias.
    """
    cls, out = root, []
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        field = None
        if cls is not None and isinstance(part, str):
            field = next(
                (f for n, f in cls.model_fields.items() if (f.alias or n) == part),
                None,
            )
        out.append(part)
        if field is None:
            cls = None
            continue
        members = _model_classes(field.annotation)
        if len(members) > 1 and parts and parts[0] in members:
            cls = members[parts.pop(0)]  # the union tag: not part of the YAML path
        else:
            cls = next(iter(members.values()), None)
    known = (
        [f.alias or n for n, f in cls.model_fields.items()] if cls is not None else []
    )
    return tuple(out), known


def _model_classes(annotation: Any) -> dict[str, type[BaseModel]]:
    """Model classes in ``annotation``, keyed by their ``name`` default (or name)."""
    found: dict[str, type[BaseModel]] = {}
    stack = [annotation]
    while stack:
        ann = stack.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            tag = ann.model_fields.get("name")
            key = tag.default if tag is not None and tag.default else ann.__name__
            found[str(key)] = ann
        else:
            stack.extend(reversed(get_args(ann)))
    return found


def format_errors(
    err: ValidationError,
    source: str,
    root: type[BaseModel] | None = None,
    prefix: tuple[str, ...] = (),
) -> list[str]:
    """One ``source: key.path: message`` line per pydantic error.

    Unknown keys get a ``did you mean`` suggestion from the owning model's fields;
    literal choices list the allowed values; range errors show the given value;
    an unknown model ``name`` lists the registry's names.
    """
    lines = []
    for e in err.errors():
        loc, _ = _walk(root, tuple(e["loc"]))
        if e["type"] == "union_tag_invalid":
            loc = (*loc, e["ctx"]["discriminator"].strip("'"))
        where = ".".join(str(p) for p in prefix + loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            _, known = _walk(root, tuple(e["loc"])[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            allowed = f"; allowed: {', '.join(known)}" if known and not close else ""
            msg = f"unknown key{hint}{allowed}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "union_tag_invalid":
            msg = choice_msg(str(e["ctx"]["tag"]), MODELS)
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] not in ("literal_error", "unknown_choice") and not isinstance(
                e.get("input"), dict | list
            ):
                msg += f" (got {e['input']!r})"
        lines.append(f"{source}: {where}: {msg}")
    return lines


def load_yaml(path: str | Path) -> Any:
    """The YAML document in ``path``.

    Raises:
        ValueError: ``path: reason`` for a missing, unreadable, binary or invalid file.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ValueError(f"{path}: cannot read config ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not a YAML text file (byte {err.start} is not UTF-8 text)"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML: {err}") from None
