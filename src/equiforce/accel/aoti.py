"""Energy+forces compiled ahead of time (AOTInductor) for CPU inference.

The ``torch.compile`` path (:class:`~equiforce.accel.compiled.CompiledPotential`)
pays at every call for Dynamo's guards, the AOTAutograd runtime wrappers and
weights passed as graph inputs. Here the same function (forces from
``torch.func.grad_and_value``) is traced once into an ATen graph with symbolic
atom, edge and structure counts (``make_fx``), exported, and compiled by
AOTInductor into a shared library with the weights, filter tables and node
projections inside as constants. A call is then one C++ function call. Ethanol,
default So3krates, 2 threads, alternating in one process: 1.48x faster than the
``torch.compile`` path (``benchmarks/so3krates_ablations.py backends``).

Costs and rules:

* Building takes ~1 minute (C++ compilation of the kernels and the wrapper)
  against ~10-20 s for ``torch.compile``. Built libraries are kept on disk
  (:func:`cache_dir`) under a hash of the traced graph, its constants and the
  software versions, so a second process with the same model loads it in seconds
  (4.3 s with tracing, docs/benchmarks.md section 8, "AOTInductor instead of torch.compile"). ``EQUIFORCE_AOTI_CACHE=0`` keeps nothing on disk.
* The weights are constants: when any parameter or buffer changes (version
  counter, storage, dtype or device) or :meth:`clear_inference_caches` runs, the
  next call rebuilds. For MD and evaluation they do not change.
* One library serves every atom, edge and structure count (at least 2 atoms and
  4 edges; smaller graphs take the ``torch.compile`` path).
* ``make_fx`` and AOTInductor are PyTorch's own tools, but ``make_fx`` is called
  with a private flag (``_allow_non_fake_inputs``, to keep the constants real);
  any failure to build or load falls back to ``torch.compile`` with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from equiforce.accel.weights import weight_state_key
from equiforce.atomic import atomic_path

#: Bump when the traced function changes in a way the graph hash cannot see.
FORMAT_VERSION = 1

#: Inductor options of the AOTInductor build (its loops on one thread, as for
#: the ``torch.compile`` path: :data:`equiforce.accel.runtime.INDUCTOR_CPU_OPTIONS`).
AOTI_OPTIONS: dict[str, object] = {"cpp.threads": 1}

#: Libraries a wrapper builds before it gives up on them: weights that keep changing
#: (a calculator called between optimizer steps) are better served by
#: ``torch.compile``, whose weights are inputs.
MAX_BUILDS = 3

#: Libraries kept in :func:`cache_dir` (~11 MB each for the default So3krates); the
#: least recently used beyond this are deleted after a build.
CACHE_KEEP = 20

#: Fewest atoms and edges the library accepts: export specialises sizes 0 and 1,
#: and paired edges give n_edges / 2 pairs.
MIN_ATOMS = 2
MIN_EDGES = 4


def cache_dir() -> Path | None:
    """Where built libraries are kept across processes; None when disabled.

    ``EQUIFORCE_AOTI_CACHE``: ``0`` disables the cache, any other value is the
    folder; default ``$XDG_CACHE_HOME/equiforce/aoti`` (``~/.cache/...``).
    """
    value = os.environ.get("EQUIFORCE_AOTI_CACHE")
    if value == "0":
        return None
    if value:
        return Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "equiforce" / "aoti"


def graph_hash(gm: torch.fx.GraphModule, example: Sequence[torch.Tensor]) -> str:
    """SHA-256 of a traced graph's code, constants, example dtypes and versions."""
    h = hashlib.sha256()
    meta = (
        FORMAT_VERSION,
        torch.__version__,
        sys.version,
        platform.machine(),
        sorted(AOTI_OPTIONS.items()),
        [(str(t.dtype), t.dim(), t.device.type) for t in example],
    )
    h.update(repr(meta).encode())
    h.update(gm.code.encode())
    for name, value in sorted(_constants(gm).items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _constants(gm: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """Every tensor attribute the graph reads (``get_attr`` nodes)."""
    out = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = gm
            for part in str(node.target).split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                out[str(node.target)] = value
    return out


def trace(
    fn: Callable[..., tuple[torch.Tensor, ...]], example: Sequence[torch.Tensor]
) -> torch.fx.GraphModule:
    """ATen graph of ``fn`` (forward and its gradient) with symbolic sizes.

    Tensors ``fn`` reads from outside its arguments (weights, tables) become
    constants of the graph.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(fn, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)


def export(
    gm: torch.fx.GraphModule, example: Sequence[torch.Tensor], dims: Sequence[int]
) -> torch.export.ExportedProgram:
    """``gm`` exported with the size of dimension ``dims[k]`` of input k dynamic.

    What :func:`build` compiles; ``.module()`` runs it in Python (tests compare
    it with eager without the minutes of a C++ build).
    """
    dynamic = torch.export.Dim.DYNAMIC
    shapes = tuple({d: dynamic} for d in dims)
    return torch.export.export(gm, tuple(example), dynamic_shapes=shapes, strict=False)


def build(
    gm: torch.fx.GraphModule,
    example: Sequence[torch.Tensor],
    dims: Sequence[int],
    path: Path,
    extra_options: dict[str, object] | None = None,
) -> None:
    """Export ``gm`` with dynamic sizes and compile it with AOTInductor to ``path``.

    Args:
        gm: the traced graph.
        example: its inputs.
        dims: per input, the dimension whose size varies between calls.
        path: the package to write; it appears atomically (built under a
            temporary name, then renamed).
        extra_options: Inductor options added to :data:`AOTI_OPTIONS` (e.g. the
            package's ``aot_inductor.metadata``).
    """
    program = export(gm, example, dims)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch._inductor.aoti_compile_and_package(
            program,
            package_path=str(tmp),
            inductor_configs={**AOTI_OPTIONS, **(extra_options or {})},
        )


def load(path: Path) -> Callable[..., Sequence[torch.Tensor]]:
    """The callable of a package written by :func:`build`.

    The package's own ``__call__`` parses its input and output tree specs (JSON)
    and flattens the arguments at every call: 75 µs of a 0.7 ms SO3LR ethanol
    call. A function of flat tensors returning a flat tuple needs none of it, so
    its loader's ``boxed_run`` is called directly (the same outputs).
    """
    import torch.utils._pytree as pytree

    package = torch._inductor.aoti_load_package(str(path))
    loader = getattr(package, "loader", None)
    if loader is None or not hasattr(loader, "boxed_run"):
        return package
    out_spec = pytree.treespec_loads(loader.get_call_spec()[1])
    flat = out_spec.type is tuple and all(c.is_leaf() for c in out_spec.children())
    if not flat:
        return package

    def run(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(loader.boxed_run(list(args)))  # boxed_run empties its list

    return run


class TooManyBuildsError(RuntimeError):
    """The weights changed more often than :data:`MAX_BUILDS` allows."""


def prune(folder: Path, keep: int = CACHE_KEEP) -> None:
    """Delete all but the ``keep`` most recently used libraries in ``folder``."""
    libs = sorted(folder.glob("*.pt2"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in libs[keep:]:
        old.unlink(missing_ok=True)


class AOTIFunction:
    """A traced energy+forces function, compiled ahead of time and reloaded as needed.

    Args:
        fn: ``(positions, atomic_numbers, graph_index, edge_index, edge_shifts,
            cell, pbc, n_atoms) -> (atomic_energies, forces)``; it reads the
            model's weights, which become constants.
        state: tensors whose change invalidates the library (the model's
            parameters and buffers), or a callable returning them at every call
            (where a tensor may be replaced by another: a refitted scorer's
            buffers); their version counters and storage are compared at every
            call.
        generation: callable returning a counter that changes when caches must be
            dropped for reasons ``state`` cannot see (``.data`` writes).
        dims: per argument of ``fn``, the dimension whose size varies (atoms,
            edges or structures).
        trace_context: entered while tracing (e.g. the model's inference caches,
            which the traced function reads).

    Attributes:
        build_seconds: wall time of the last trace + build (or load) step.
        loaded_from_cache: whether the last library came from :func:`cache_dir`.
        n_builds: libraries made (traced) by this object.
    """

    def __init__(
        self,
        fn: Callable[..., tuple[torch.Tensor, ...]],
        state: Sequence[torch.Tensor] | Callable[[], Sequence[torch.Tensor]],
        generation: Callable[[], object],
        dims: Sequence[int],
        trace_context: Callable[[], contextlib.AbstractContextManager] = (
            contextlib.nullcontext
        ),
    ) -> None:
        self.fn, self.generation = fn, generation
        self.state = state if callable(state) else list(state)
        self.dims, self.trace_context = tuple(dims), trace_context
        self._runner: Callable[..., Sequence[torch.Tensor]] | None = None
        self._key: tuple | None = None
        self.build_seconds: float | None = None
        self.loaded_from_cache = False
        self.n_builds = 0
        self._workdir: tempfile.TemporaryDirectory | None = None

    def _state_key(self) -> tuple:
        state = self.state() if callable(self.state) else self.state
        return (self.generation(), *weight_state_key(list(state)))

    @staticmethod
    def accepts(n_atoms: int, n_edges: int) -> bool:
        """Whether a graph of this size can run in the library."""
        return n_atoms >= MIN_ATOMS and n_edges >= MIN_EDGES

    def __call__(self, example: Callable[[], Sequence[torch.Tensor]], args) -> tuple:
        """Run the library on ``args``, (re)building it from ``example()`` first if stale.

        ``example`` gives the tracing inputs (at least two structures, so that the
        structure count stays symbolic); it is only called when a build is needed.
        """
        key = self._state_key()
        if self._runner is None or key != self._key:
            self._load(example())
            self._key = key
        return self._runner(*args)

    def _load(self, example: Sequence[torch.Tensor]) -> None:
        if self.n_builds >= MAX_BUILDS:
            raise TooManyBuildsError(
                f"the weights changed after {self.n_builds} builds of the library"
            )
        start = time.perf_counter()
        with self.trace_context():
            gm = trace(self.fn, example)
        self.n_builds += 1
        digest = graph_hash(gm, example)
        folder = cache_dir()
        if folder is None:
            if self._workdir is None:
                self._workdir = tempfile.TemporaryDirectory(prefix="equiforce-aoti-")
            folder = Path(self._workdir.name)
        path = folder / f"{digest}.pt2"
        self.loaded_from_cache = path.exists()
        if self.loaded_from_cache:
            path.touch()  # recently used: kept by prune()
        else:
            if sys.stderr.isatty():  # a user waiting at a terminal sees why
                print(
                    "equiforce: compiling the model into a library (AOTInductor, "
                    f"about a minute on a CPU; kept in {folder})",
                    file=sys.stderr,
                    flush=True,
                )
            build(gm, example, self.dims, path)
            prune(folder)
        self._runner = load(path)
        self.build_seconds = time.perf_counter() - start
