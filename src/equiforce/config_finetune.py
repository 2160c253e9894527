"""Fine-tuning keys of the ``model:`` section and how ``model.init_from`` resolves.

``model.init_from`` names a model file (or a shipped pretrained model such as
``so3lr``) whose weights a run starts from. The file decides the architecture:
:func:`resolve_init_from` replaces the section's ``name``, ``preset`` and
``overrides`` by the file's before the config is validated. Keys the YAML
gives anyway must agree with the file; a disagreement is reported naming the
key. The training side (loading the weights, E0, new elements, freezing) is
:mod:`equiforce.train.finetune`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)

from equiforce.models.checkpoint import CheckpointError, load_checkpoint
from equiforce.models.registry import MODELS, PRESETS, PRETRAINED, pretrained_path


class FineTuneOptions(BaseModel):
    """``model.init_from``, ``freeze``, ``e0`` and ``add_elements`` (a mixin).

    Every model section inherits these; without ``init_from`` they must keep
    their defaults.
    """

    init_from: str | None = Field(
        None,
        description="model file (or shipped pretrained name, e.g. 'so3lr') to start "
        "from; its architecture replaces name/preset/overrides",
    )
    freeze: tuple[str, ...] = Field(
        (),
        description="parameter-name globs kept fixed, e.g. ['embedding.*', 'layers.0.*']",
    )
    e0: Literal["keep", "refit"] = Field(
        "refit",
        description="keep the file's per-element reference energies, or refit them "
        "by least squares to the training energies minus the model's prediction",
    )
    add_elements: bool = Field(
        False,
        description="allow training elements the file was not trained on (their "
        "per-element rows start as in a freshly built model)",
    )

    @model_serializer(mode="wrap")
    def _only_when_fine_tuning(self, handler) -> dict[str, Any]:
        """Leave these keys out of a section without ``init_from`` (saved configs)."""
        data = handler(self)
        if self.init_from is None and isinstance(data, dict):
            for key in FineTuneOptions.model_fields:
                data.pop(key, None)
        return data

    @model_validator(mode="after")
    def _needs_init_from(self) -> FineTuneOptions:
        if self.init_from is None:
            for key, used in (
                ("freeze", bool(self.freeze)),
                ("e0", self.e0 != "refit"),
                ("add_elements", self.add_elements),
            ):
                if used:
                    raise ValueError(
                        f"model.{key} applies to fine-tuning: it needs model.init_from"
                    )
        return self


def locate_model(ref: str, base: Path) -> Path:
    """The file ``ref`` names: relative to ``base``, or a shipped pretrained model."""
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = base / path
    if ref in PRETRAINED and not path.exists():
        return pretrained_path(ref)
    return path.resolve()


def resolve_init_from(raw: dict, base: Path, source: str) -> list[str]:
    """Put the architecture of ``raw['model']['init_from']`` into the section.

    Changes ``raw`` in place (``name``, ``preset: None``, the file's complete
    model config as ``overrides``, ``init_from`` as an absolute path or the
    pretrained name). Nothing happens without ``init_from``.

    Args:
        raw: the config as read from YAML (after ``--set`` overrides).
        base: folder a relative ``init_from`` is relative to.
        source: file name for the messages.

    Returns:
        Error lines ``source: model.key: message``; empty when all is well.
    """
    section = raw.get("model")
    if not isinstance(section, dict) or section.get("init_from") is None:
        return []
    ref = section["init_from"]
    where = f"{source}: model.init_from"
    if not isinstance(ref, str):
        return [f"{where}: expected a model file or a pretrained name, got {ref!r}"]
    path = locate_model(ref, base)
    try:
        payload = load_checkpoint(path)
    except CheckpointError as err:
        return [f"{where}: {err}"]
    name = payload["model_name"]
    if name not in MODELS:
        return [f"{where}: {path} holds a {name!r} model, unknown to this equiforce"]
    given_name = section.get("name")
    if given_name is not None and given_name != name:
        return [
            f"{source}: model.name: {given_name!r}, but model.init_from {ref} holds "
            f"a {name!r} model; remove model.name or set it to {name!r}"
        ]
    config_cls = MODELS[name][0]
    try:
        reference = config_cls.model_validate(payload["model_config"])
    except ValidationError as err:
        return [f"{where}: {path}: model_config: {err}"]
    errors = _disagreements(section, name, reference, ref, source)
    if errors:
        return errors
    stored = ref if ref in PRETRAINED and path == pretrained_path(ref) else str(path)
    raw["model"] = section | {
        "name": name,
        "preset": None,
        "overrides": reference.model_dump(mode="json"),
        "init_from": stored,
    }
    return []


def _disagreements(
    section: dict, name: str, reference: BaseModel, ref: str, source: str
) -> list[str]:
    """One line per preset or override value that differs from the file's."""
    given: dict[str, Any] = {}
    preset = section.get("preset")
    if preset is not None:
        if preset not in PRESETS.get(name, {}):
            return [f"{source}: model.preset: {preset!r} is not a preset of {name}"]
        given.update(PRESETS[name][preset])
    overrides = section.get("overrides") or {}
    if not isinstance(overrides, dict):
        return [f"{source}: model.overrides: expected a mapping, got {overrides!r}"]
    given.update(overrides)
    want = reference.model_dump(mode="json")
    errors = []
    for key, value in given.items():
        if key not in want:
            errors.append(f"{source}: model.overrides.{key}: not a field of {name}")
            continue
        try:  # compare validated values (YAML lists vs tuples, ints vs floats)
            mine = type(reference).model_validate(want | {key: value})
            value = mine.model_dump(mode="json")[key]
        except ValidationError:
            pass
        if value != want[key]:
            errors.append(
                f"{source}: model.overrides.{key}: {value!r} here, but model.init_from "
                f"{ref} has {want[key]!r}; a fine-tuned model keeps the file's "
                "architecture: remove the key or give the file's value"
            )
    return errors
