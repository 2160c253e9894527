"""Rewrite a LAMMPS input whose pair style is ``equiforce`` for the fix-external route.

An input names the model the way LAMMPS pair styles do::

    pair_style  equiforce [device cpu] [dtype float64] [skin 0.5]
    pair_coeff  * * model.pt O H        # one element symbol per atom type

:func:`parse_input` finds those two commands; :meth:`InputPlan.head` and
:meth:`InputPlan.tail` are the input before and after the ``pair_coeff`` line
with ``pair_style equiforce`` turned into ``pair_style zero <model cutoff>`` (so
that the neighbour list and communication cutoffs stay those of the model) and
``pair_coeff`` into ``pair_coeff * *``. The runner attaches the model
(:mod:`equiforce.engines.lammps`) between the two halves. Pure text: nothing
here imports LAMMPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ase.data import atomic_numbers as _symbol_to_z

from equiforce.errors import EquiforceError

#: ``pair_style equiforce`` keywords and their converters
PAIR_STYLE_KEYWORDS = {"device": str, "dtype": str, "skin": float}


class LammpsInputError(EquiforceError):
    """An input's ``pair_style equiforce`` / ``pair_coeff`` lines cannot be used."""


@dataclass
class InputPlan:
    """An input split around its equiforce ``pair_coeff`` command.

    Attributes:
        lines: logical lines of the input (``&`` continuations joined).
        style_line: index of ``pair_style equiforce`` in ``lines``.
        coeff_line: index of the equiforce ``pair_coeff`` in ``lines``.
        model: model file named by ``pair_coeff`` (or given to :func:`parse_input`).
        elements: element symbol of each atom type, type 1 first.
        options: ``pair_style equiforce`` keywords (``device``, ``dtype``, ``skin``).
    """

    lines: list[str]
    style_line: int
    coeff_line: int
    model: str
    elements: list[str]
    options: dict[str, object] = field(default_factory=dict)

    def head(self, cutoff: float) -> str:
        """Commands up to and including the rewritten ``pair_coeff``."""
        return "\n".join(self._rewritten(cutoff)[: self.coeff_line + 1]) + "\n"

    def tail(self, cutoff: float) -> str:
        """Commands after the ``pair_coeff`` line."""
        return "\n".join(self._rewritten(cutoff)[self.coeff_line + 1 :]) + "\n"

    def _rewritten(self, cutoff: float) -> list[str]:
        out = list(self.lines)
        out[self.style_line] = f"pair_style zero {cutoff:.10g}"
        out[self.coeff_line] = "pair_coeff * *"
        return out


def logical_lines(text: str) -> list[str]:
    """Lines of a LAMMPS input with ``&`` continuations joined (comments kept)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("&"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending.rstrip())
    return out


def _words(line: str) -> list[str]:
    """Words of one command, without its ``#`` comment."""
    return line.split("#", 1)[0].split()


def parse_input(
    text: str, model: str | Path | None = None, source: str = "input"
) -> InputPlan:
    """Find the equiforce pair style of a LAMMPS input.

    Args:
        text: the input script.
        model: model file replacing the one named in ``pair_coeff`` (then
            ``pair_coeff * * O H`` without a model is accepted too).
        source: name of the input in error messages.

    Raises:
        LammpsInputError: no or several ``pair_style equiforce``, a missing or
            malformed ``pair_coeff``, an unknown keyword or element symbol.
    """
    lines = logical_lines(text)
    styles = [
        i for i, ln in enumerate(lines) if _words(ln)[:2] == ["pair_style", "equiforce"]
    ]
    if len(styles) != 1:
        raise LammpsInputError(
            f"{source}: expected one 'pair_style equiforce' line, found {len(styles)}"
        )
    style = styles[0]
    options = _style_options(_words(lines[style])[2:], f"{source}:{style + 1}")
    coeffs = [
        i
        for i, ln in enumerate(lines)
        if _words(ln)[:1] == ["pair_coeff"] and i > style
    ]
    if len(coeffs) != 1:
        raise LammpsInputError(
            f"{source}: expected one 'pair_coeff * * MODEL ELEMENT...' after "
            f"'pair_style equiforce', found {len(coeffs)}"
        )
    coeff = coeffs[0]
    where = f"{source}:{coeff + 1}"
    words = _words(lines[coeff])[1:]
    if words[:2] != ["*", "*"]:
        raise LammpsInputError(
            f"{where}: equiforce needs 'pair_coeff * * MODEL ELEMENT...' "
            f"(one element per atom type), got {' '.join(words)!r}"
        )
    args = words[2:]
    if model is not None and args and args[0] in _symbol_to_z:
        elements = args  # the model comes from the caller only
    else:
        if not args:
            raise LammpsInputError(f"{where}: pair_coeff names no model file")
        elements = args[1:]
        model = model if model is not None else args[0]
    if not elements:
        raise LammpsInputError(f"{where}: pair_coeff names no element per atom type")
    bad = [e for e in elements if e not in _symbol_to_z or e == "X"]
    if bad:
        raise LammpsInputError(f"{where}: unknown element symbol(s) {bad}")
    return InputPlan(lines, style, coeff, str(model), elements, options)


def _style_options(words: list[str], where: str) -> dict[str, object]:
    """``pair_style equiforce`` keyword/value pairs, converted."""
    if len(words) % 2:
        raise LammpsInputError(
            f"{where}: pair_style equiforce takes keyword/value pairs "
            f"({', '.join(PAIR_STYLE_KEYWORDS)}), got {' '.join(words)!r}"
        )
    options: dict[str, object] = {}
    for key, value in zip(words[::2], words[1::2], strict=True):
        if key not in PAIR_STYLE_KEYWORDS:
            raise LammpsInputError(
                f"{where}: unknown pair_style equiforce keyword {key!r} "
                f"(known: {', '.join(PAIR_STYLE_KEYWORDS)})"
            )
        try:
            options[key] = PAIR_STYLE_KEYWORDS[key](value)
        except ValueError:
            raise LammpsInputError(f"{where}: bad value {value!r} for {key}") from None
    return options
