"""The layers, checked on the code itself.

- ``core`` (schema, settings and their parts, errors, atomic writer, streaming Parquet opener, version,
  runtime) imports no other package of RankLoop: each of its modules, imported alone in a fresh
  interpreter, loads none.
  Settings are data: loading them pulls in neither MLflow nor Prefect.
- Among the packages, every import (top-level, inside functions, under TYPE_CHECKING) points to a
  lower layer or sideways without a cycle; a cycle fails the test with the modules that make it.
"""

from __future__ import annotations

import ast
import graphlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. A package may import packages of a lower layer, and of its own layer without a cycle.
LAYERS: list[set[str]] = [
    {"core"},
    {"sources", "features", "models", "data_contracts", "serving"},
    {"registry"},
    {"rankloop"},
    {"flows"},
    {"cli"},
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
PACKAGES = set(RANK)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, wherever the import statement sits."""
    module = _module_name(path)
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from pkg import mod`` imports the submodule when there is one.
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    return found


def _module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            graph[_module_name(path)] = _imports(path)
    return graph


def _package_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) -> the module imports behind it."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, targets in graph.items():
        for target in targets:
            a, b = module.split(".")[0], target.split(".")[0]
            if a != b:
                edges[(a, b)].append(f"{module} -> {target}")
    return edges


def test_the_scan_sees_the_known_dependencies():
    """Guards the scanner itself: a scan that found nothing would pass every check below."""
    edges = _package_edges(_module_graph())
    assert ("flows", "rankloop") in edges
    assert ("registry", "core") in edges
    assert ("cli", "flows") in edges
    assert len(_module_graph()) > 100


def test_no_package_imports_a_higher_layer():
    upward = [
        f"{a} (layer {RANK[a]}) imports {b} (layer {RANK[b]}): {', '.join(sorted(why)[:3])}"
        for (a, b), why in _package_edges(_module_graph()).items()
        if RANK[b] > RANK[a]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle_among_packages():
    edges = _package_edges(_module_graph())
    sorter = graphlib.TopologicalSorter({p: set() for p in PACKAGES})
    for a, b in edges:
        sorter.add(a, b)
    try:
        sorter.prepare()
    except graphlib.CycleError as cycle:
        ring = cycle.args[1]
        detail = [f"{a} -> {b}: {edges[(a, b)][0]}" for a, b in zip(ring, ring[1:], strict=False)]
        pytest.fail("import cycle among packages: " + " | ".join(detail))


def test_no_import_cycle_among_modules():
    """Within a package too: a module cycle works only by the accident of import order."""
    graph = _module_graph()
    sorter = graphlib.TopologicalSorter()
    for module, targets in graph.items():
        # ``from pkg import name`` also names ``pkg``; a package's own __init__ is not a dependency cycle
        # of its submodules unless the __init__ imports them back, which the graph records as such.
        sorter.add(module, *(t for t in targets if t in graph and t != module and not module.startswith(t + ".")))
    try:
        sorter.prepare()
    except graphlib.CycleError as cycle:
        pytest.fail("import cycle among modules: " + " -> ".join(cycle.args[1]))


BASE_MODULES = sorted(
    _module_name(path) for path in (ROOT / "core").rglob("*.py")
)


@pytest.mark.parametrize("module", BASE_MODULES)
def test_base_module_loads_nothing_above_it(module):
    code = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    ours_above = sorted(name for name in loaded if name.split(".")[0] in PACKAGES - {"core"})
    assert ours_above == [], f"{module} loads {ours_above}"
    assert module in loaded


def test_settings_are_data_loading_them_starts_neither_mlflow_nor_prefect(tmp_path):
    code = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "from core.settings import load_settings\n"
        "settings = load_settings()\n"
        "settings.config_hash()\n"
        "print(json.dumps({'mlflow': 'mlflow' in sys.modules, 'prefect': 'prefect' in sys.modules,\n"
        "                  'env_changed': dict(os.environ) != before}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "RANKLOOP_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"mlflow": False, "prefect": False,
                                                                "env_changed": False}
    assert not (tmp_path / "home").exists(), "reading settings must not create the data home"


def _runtime_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it runs: every import but those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    return {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and id(node) not in typing_only} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) and id(node) not in typing_only
        for alias in node.names}


def test_the_registry_reads_its_small_config_not_the_settings():
    """``registry`` takes ``core.config.registry.RegistryConfig`` (``Settings.registry``); only
    ``registry.config`` turns settings into it. Guarded both ways: the scan finds the config's import."""
    users = {path.name: _runtime_imports(path) for path in sorted((ROOT / "registry").glob("*.py"))}
    assert "core.settings" in users["config.py"] and "core.config.registry" in users["store.py"]
    reading = sorted(name for name, imported in users.items() if "core.settings" in imported and name != "config.py")
    assert reading == [], f"registry modules importing core.settings at run time: {reading}"


def test_making_a_registry_client_leaves_mlflows_globals_alone(tmp_path):
    code = (
        "import json, os\n"
        "import mlflow\n"
        "from core.settings import Settings\n"
        "from registry.store import make_client\n"
        "before = mlflow.get_tracking_uri()\n"
        f"client = make_client(Settings(home={str(tmp_path / 'home')!r}).registry)\n"
        "print(json.dumps({'client': client.tracking_uri, 'env': os.environ.get('MLFLOW_TRACKING_URI'),\n"
        "                  'global': mlflow.get_tracking_uri(), 'before': before}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env | {"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["client"] == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert seen["env"] is None
    assert seen["global"] == seen["before"] != seen["client"]  # MLflow's own default, not the home's store
