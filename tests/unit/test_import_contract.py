"""The architecture as tests: imports flow streams -> adapters -> models, `adapters` and `models`
never touch Kafka, and the classify worker's runtime does not pull in torch, transformers or
peft."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
KAFKA = {"faust", "aiokafka", "mode"}
TRAINING = {"torch", "transformers", "peft"}
SLIM_RUNTIME = [
    "models/scorer.py",
    "streams/service/classify.py",
    "streams/service/app.py",
    "streams/service/worker.py",
]


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_lint_imports_passes_with_the_project_config() -> None:
    done = _lint_imports()
    assert done.returncode == 0, done.stdout + done.stderr


# --- the same rules, read from the source with ast -----------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(
    path: Path, *, top_level_only: bool = False, module: str | None = None
) -> Iterator[str]:
    """Every module a file imports (absolute names; relative imports resolved against its
    module name, or ``module``). With ``top_level_only``, imports inside functions and classes
    are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = (module or _module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]

    def visit(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child
            elif top_level_only and isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
            ):
                continue
            yield from visit(child)

    for node in visit(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif node.level:
            base = package[: len(package) - (node.level - 1)]
            yield ".".join([*base, node.module] if node.module else base)
        elif node.module:
            yield node.module


def _root(module: str) -> str:
    return module.split(".")[0]


def _sources(package: str) -> list[Path]:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    return files


@pytest.mark.parametrize("package", ["models", "adapters"])
def test_models_and_adapters_never_import_kafka_or_streams(package: str) -> None:
    offending = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in _sources(package)
        for module in _imports(path)
        if _root(module) in KAFKA | {"streams"}
    ]
    assert offending == []


def test_models_never_import_adapters() -> None:
    offending = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in _sources("models")
        for module in _imports(path)
        if _root(module) == "adapters"
    ]
    assert offending == []


@pytest.mark.parametrize("source", SLIM_RUNTIME)
def test_worker_runtime_modules_do_not_import_training_libraries(source: str) -> None:
    path = REPO / source
    assert path.is_file(), source
    offending = [m for m in _imports(path, top_level_only=True) if _root(m) in TRAINING]
    assert offending == []


def test_importing_the_worker_loads_no_training_library() -> None:
    """Transitively: everything `streams.service.worker` pulls in stays free of torch & co."""
    code = (
        "import sys, streams.service.worker, streams.service.classify, streams.service.app\n"
        "import models.scorer\n"
        f"print(sorted(m for m in {sorted(TRAINING)!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_ast_reader_sees_imports(tmp_path: Path) -> None:
    """The checks above are only as good as `_imports`: it must see what they look for, in a
    module written here (a product module's imports change as the product does)."""
    sample = tmp_path / "main.py"
    sample.write_text(
        "import argparse, os.path\n"
        "from streams.wire.settings import Settings\n"
        "from . import parser\n"
        "from ..service import worker as w\n"
        "if True:\n"
        "    import redis\n"
        "def run() -> None:\n"
        "    import streams.service.worker\n"
        "    from adapters.adapt import bootstrap\n"
        "class Lazy:\n"
        "    def load(self) -> None:\n"
        "        from ...models import scorer\n"
    )
    found = set(_imports(sample, module="streams.cli.main"))
    assert found == {
        "argparse",
        "os.path",
        "streams.wire.settings",
        "streams.cli",
        "streams.service",
        "redis",
        "streams.service.worker",
        "adapters.adapt",
        "models",
    }
    top = set(_imports(sample, top_level_only=True, module="streams.cli.main"))
    assert top == {
        "argparse",
        "os.path",
        "streams.wire.settings",
        "streams.cli",
        "streams.service",
        "redis",
    }


# --- the contracts can fail ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("streams/service/app.py", "import streams.demo.run", "streams.service is not allowed"),
        ("adapters/review/routing.py", "import redis", "adapters.review"),
        ("adapters/adapt/gate.py", "import torch", "adapters.adapt.gate"),
        ("models/base.py", "import adapters.labels.agreement", "models"),
        ("streams/wire/topics.py", "import streams.service.app", "streams.wire"),
        ("adapters/labels/consensus.py", "import adapters.labels.store", "No circles"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    module: str, line: str, broken: str, tmp_path: Path
) -> None:
    """Each contract is checked against a copy of the packages with one forbidden import added:
    lint-imports must fail and name what broke."""
    import shutil

    for package in ("streams", "adapters", "models"):
        shutil.copytree(REPO / package, tmp_path / package)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, done.stdout
    assert broken in done.stdout
