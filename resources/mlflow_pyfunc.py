"""Logging the surrogate's MLflow pyfunc so that it serves on its own (``mlflow models serve``).

The wrapper (``surrogate_pyfunc.py``) is logged as code ("models from code") together with the part of
the ``codon_assets`` package it imports, as the model's ``code_paths``: the model folder holds
``code/codon_assets/`` (``__init__.py``, the ``core`` modules the wrapper reaches, the package data), and
MLflow puts ``code/`` first on ``sys.path`` when it loads the model. So the serving environment needs no
``codon-assets`` distribution (which is not published on PyPI), only the third-party distributions those
modules import, pinned at the versions installed here.

Which modules and distributions that is, is read from the source: every ``import`` of the wrapper and,
transitively, of the ``codon_assets`` modules it imports (also those inside functions; not those under
``if TYPE_CHECKING:``). No Dagster: the ``core`` modules never import it, and ``pyfunc_dependencies``
refuses a closure that does.

Imports nothing heavy at module level (no mlflow, no dagster).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# The pyfunc wrapper, logged as code (MLflow "models from code"), not as a pickled object.
PYFUNC_CODE = Path(__file__).with_name("surrogate_pyfunc.py")
PACKAGE = "codon_assets"
PACKAGE_DATA = ("data",)  # folders of package data (tRNA tables, read through importlib.resources)
FORBIDDEN = ("dagster", "codon-assets")  # distributions (and their dagster-* kin) a served model never needs


def pinned_requirements(*distributions: str) -> list[str]:
    """``name==installed version`` for each distribution. Logged models name their requirements
    explicitly: MLflow's inference would import the model in a subprocess per logged model (~1 s each)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in distributions]


@dataclass(frozen=True)
class PyfuncDependencies:
    modules: tuple[str, ...]  # codon_assets modules the wrapper imports, transitively (dotted names)
    distributions: tuple[str, ...]  # third-party distributions those files import, sorted


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(path: Path, package: str | None) -> set[str]:
    """Dotted names every import statement of ``path`` names (``from a import b``: ``a`` and ``a.b``),
    relative imports resolved against ``package``; imports under ``if TYPE_CHECKING:`` left out."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = (package or "").split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            if module and module != "__future__":
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return names


def _package_root() -> Path:
    """The folder of the ``codon_assets`` package (found without importing it)."""
    return Path(importlib.util.find_spec(PACKAGE).origin).parent


def _module_file(name: str) -> Path | None:
    """The source file of a ``codon_assets`` module or package, found without importing anything; None
    for a name that is no module (``from codon_assets.core.surrogate import SurrogateModel``'s class)."""
    folder = _package_root().joinpath(*name.split(".")[1:])
    for candidate in (folder / "__init__.py", folder.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _forbidden(distribution: str) -> bool:
    name = distribution.lower().replace("_", "-")
    return any(name == f or name.startswith(f"{f}-") for f in FORBIDDEN)


def _providers(module: str, distributions: list[str]) -> list[str]:
    """The distribution(s) to require for a top-level module: the one named like the module where several
    provide it (``mlflow``, not also ``mlflow-skinny`` and ``mlflow-tracing``), else all of them."""
    same = [d for d in distributions if d.lower().replace("_", "-") == module.lower().replace("_", "-")]
    return same or sorted(set(distributions))


@functools.cache  # the installed code and distributions do not change within a process; reading them costs ~1 s
def pyfunc_dependencies(entry: Path = PYFUNC_CODE) -> PyfuncDependencies:
    """The ``codon_assets`` modules and third-party distributions ``entry`` needs, from its imports."""
    from importlib.metadata import packages_distributions

    modules: dict[str, Path] = {}
    third_party: set[str] = set()
    pending: list[tuple[Path, str | None]] = [(entry, None)]
    while pending:
        path, package = pending.pop()
        for name in sorted(_imported_names(path, package)):
            top = name.partition(".")[0]
            if top == PACKAGE:
                # The module and every package above it (their __init__ runs on import).
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    dotted = ".".join(parts[:i])
                    if dotted in modules:
                        continue
                    found = _module_file(dotted)
                    if found is None:
                        continue
                    modules[dotted] = found
                    is_package = found.name == "__init__.py"
                    pending.append((found, dotted if is_package else dotted.rpartition(".")[0]))
            elif top not in sys.stdlib_module_names and top not in sys.builtin_module_names:
                third_party.add(top)
    providers = packages_distributions()
    missing = sorted(t for t in third_party if t not in providers)
    if missing:
        raise LookupError(f"no installed distribution provides {', '.join(missing)} (imported by the pyfunc's code)")
    distributions = sorted({d for t in third_party for d in _providers(t, providers[t])}, key=str.lower)
    forbidden = [d for d in distributions if _forbidden(d)]
    if forbidden:
        raise ValueError(f"the served model's code must not import {', '.join(forbidden)}")
    return PyfuncDependencies(tuple(sorted(modules)), tuple(distributions))


def stage_code(folder: Path, dependencies: PyfuncDependencies) -> Path:
    """A copy of the ``codon_assets`` package reduced to ``dependencies.modules`` and the package data,
    as ``folder``/codon_assets (the path given to MLflow as a code path)."""
    root = _package_root()
    target = folder / PACKAGE
    for name in dependencies.modules:
        source = _module_file(name)
        relative = source.relative_to(root)
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / relative)
    for data in PACKAGE_DATA:
        if (root / data).is_dir():
            shutil.copytree(root / data, target / data, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def pyfunc_signature():
    """Input and output columns of the pyfunc wrapper (built on use: importing mlflow is slow).

    ``sequence`` and ``host`` are required. ``protein_id`` is accepted and ignored (answers come in the
    order of the records); ``seq_sha256`` may be left out, the wrapper then hashes the sequence as given
    (what conversion stores for a cleaned CDS); the evo2 feature columns are needed only by a model trained
    on a backend other than markov."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from codon_assets.core.surrogate_features import EVO2_COLUMNS

    inputs = [ColSpec("string", "protein_id", required=False), ColSpec("string", "sequence"),
              ColSpec("string", "seq_sha256", required=False), ColSpec("string", "host")]
    inputs += [ColSpec("double", name, required=False) for name in EVO2_COLUMNS]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "mu"), ColSpec("double", "sigma")]))


def input_example(data, records: int = 2):
    """The first ``records`` training records as the served model's input example (protein_id, sequence,
    host: what a caller of a markov-feature model sends)."""
    import pandas as pd

    n = min(records, len(data.host))
    return pd.DataFrame({"protein_id": data.protein_id[:n].to_pylist(), "sequence": data.sequences[:n].to_pylist(),
                         "host": data.host[:n].tolist()})


def log_surrogate_pyfunc(model, data, folder: Path, model_name: str):
    """Log ``model`` (a SurrogateModel, ``data`` its TrainingSet) as the pyfunc ``surrogate`` of the active
    run, registered as a new version of ``model_name``; ``folder``: an empty scratch folder. Returns MLflow's
    ModelInfo."""
    import mlflow

    dependencies = pyfunc_dependencies()
    code = stage_code(folder / "code", dependencies)
    # A markov model computes its features itself: its example is what a caller sends (MLflow checks it by
    # loading the logged model and predicting it).
    example = input_example(data) if model.backend == "markov" and model.markov_models else None
    saved = list(sys.path)  # that check puts the model's (temporary) code folder on sys.path
    try:
        return mlflow.pyfunc.log_model(name="surrogate", python_model=str(PYFUNC_CODE),
                                       artifacts={"surrogate": str(model.save(folder / "model"))},
                                       code_paths=[str(code)],
                                       signature=pyfunc_signature(),
                                       input_example=example,
                                       pip_requirements=pinned_requirements(*dependencies.distributions),
                                       registered_model_name=model_name)
    finally:
        sys.path[:] = saved
