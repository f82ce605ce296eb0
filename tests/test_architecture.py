"""The package's architecture: subpackages by concept, no import cycle, short modules, imports at
the top, and inference that never imports the training code."""

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sgpn"
MAX_LINES = 500
#: Function-level imports that are allowed: optional heavy dependencies, imported only where
#: they are used (each also says so in a comment beside the import).
OPTIONAL_HEAVY = {"dlib", "facenet_pytorch", "playwright"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> list[tuple[str, ast.AST, bool]]:
    """``(target module, node, inside a function)`` for every ``sgpn`` import of a module,
    function-level imports included."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inside = {id(sub) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              for sub in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target.split(".")[0] == "sgpn" and target != name:
                found.append((target, node, id(node) in inside))
    return found


def import_graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: {target for target, _, _ in imported(name, path, known)} for name, path in modules().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if not state.get(nxt) and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if not state.get(start) and (cycle := visit(start, [start])):
            return cycle
    return None


def room(name: str) -> str:
    """A module's subpackage (``sgpn.nets``), or the module itself at the top level."""
    return ".".join(name.split(".")[:2])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_round_about():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_subpackage_imports_itself_round_about():
    rooms: dict[str, set[str]] = defaultdict(set)
    for source, targets in import_graph().items():
        rooms[room(source)] |= {room(t) for t in targets if room(t) != room(source)}
    cycle = find_cycle(rooms)
    assert cycle is None, " -> ".join(cycle)


#: The rooms from the bottom up, as the README lists them: each imports only rooms before it.
LAYERS = [{"sgpn.images", "sgpn.paths", "sgpn.weights"}, {"sgpn.face3d"}, {"sgpn.nets"}, {"sgpn.data"},
          {"sgpn.photo"}, {"sgpn.checkpoints"}, {"sgpn.evaluation"}, {"sgpn.retouch"}, {"sgpn.training"},
          {"sgpn.app"}, {"sgpn.figures", "sgpn.bench"}, {"sgpn.cli"}]


def test_each_room_imports_only_the_rooms_below_it():
    level = {name: index for index, names in enumerate(LAYERS) for name in names}
    upward = sorted(f"{source} imports {target}" for source, targets in import_graph().items() for target in targets
                    if room(source) != "sgpn" and level[room(target)] >= level[room(source)]
                    and room(target) != room(source))
    assert not upward, "\n".join(upward)


def test_the_package_is_in_rooms():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top == {"__init__", "bench", "checkpoints", "cli", "figures", "images", "paths", "weights"}
    rooms = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert rooms == {"app", "data", "evaluation", "face3d", "nets", "photo", "retouch", "training"}


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_short(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_imports_sit_at_the_top_of_modules():
    late = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    root = (sub.module if isinstance(sub, ast.ImportFrom) else sub.names[0].name) or ""
                    if getattr(sub, "level", 0) or root.split(".")[0] not in OPTIONAL_HEAVY:
                        late.append(f"{name}:{sub.lineno} imports {root or '.'}")
    assert not late, "\n".join(late)


def test_inference_does_not_import_the_training_code():
    """Restoring photos, the app and the release's pipeline load without Lightning's trainer or
    the training subpackage (a fresh interpreter, so nothing else imported them first)."""
    code = ("import sys, sgpn, sgpn.photo.restore, sgpn.photo.official, sgpn.app.page, sgpn.app.widgets, "
            "sgpn.app.visualize\n"
            "bad = sorted(m for m in sys.modules if m == 'lightning' or m.startswith(('lightning.', "
            "'pytorch_lightning', 'sgpn.training')))\n"
            "print(bad)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_the_readme_lists_every_module():
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme[readme.index("## The package"):readme.index("## Benchmarks")]
    missing = [name for name, path in modules().items() if path.name != "__init__.py" and f"`{name}`" not in table]
    assert not missing, missing


def test_importing_the_package_leaves_the_notebook_s_plotting_backend_alone():
    """The command line imports every room; in a notebook, Jupyter's inline backend must stay,
    or the notebooks that call ``sgpn.cli`` lose their pictures."""
    inline = "module://matplotlib_inline.backend_inline"
    code = "import matplotlib, sgpn.cli, sgpn.bench, sgpn.figures; print(matplotlib.get_backend())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MPLBACKEND": inline})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(inline), result.stdout
