"""The import contract: packages stand on floors, a module imports only downward, and nothing circles.

Read from the source (no module is imported), so it also sees imports inside functions. The floors:

    0  errors constants seeding
    1  config resources patches
    2  video          3  data          4  model          5  io
    6  difference, detect (never each other)
    7  masking, objectives (never each other)
    8  viz, eval (never each other)
    9  train          10 bench (the research harness: the core never imports it)
    11 commands       12 cli          13 __main__

A module may import modules of its own package and of lower floors. An import inside a function needs a
comment on its line or the line above saying why it is not at the top (a slow or optional dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "videomask"

FLOORS: dict[str, int] = {
    "errors": 0,
    "constants": 0,
    "seeding": 0,
    "config": 1,
    "resources": 1,
    "patches": 1,
    "video": 2,
    "data": 3,
    "model": 4,
    "io": 5,
    "difference": 6,
    "detect": 6,
    "masking": 7,
    "objectives": 7,
    "viz": 8,
    "eval": 8,
    "train": 9,
    "bench": 10,
    "commands": 11,
    "cli": 12,
    "__main__": 13,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The videomask module an import of ``name`` runs (a module, or the package that defines the name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported videomask module, line, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - child.level + 1], base]).strip(".")
                names = [f"{base}.{alias.name}" for alias in child.names]
            else:
                visit(child, nested)
                continue
            for name in names:
                if name.split(".")[0] == "videomask":
                    target = _resolve(name)
                    if target and target != here:
                        found.append((target, child.lineno, in_function))
                elif in_function:
                    found.append((name, child.lineno, in_function))

    visit(tree, False)
    return sorted(set(found), key=lambda item: (item[1], item[0]))


def _floor(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, FLOORS.get(top, -1)


def test_every_module_has_a_floor() -> None:
    missing = sorted({_floor(m)[0] for m in MODULES if m != "videomask" and _floor(m)[1] < 0})
    assert not missing, f"give these top-level modules a floor in FLOORS: {missing}"


def test_imports_only_go_down() -> None:
    upward = []
    for module in sorted(m for m in MODULES if m != "videomask"):
        top, floor = _floor(module)
        for target, line, _ in _imports(MODULES[module]):
            other, other_floor = _floor(target)
            if not target.startswith("videomask.") or other == top:
                continue
            if other_floor >= floor:
                upward.append(f"{module} line {line}: {target} (floor {other_floor} from floor {floor})")
    assert not upward, "imports upward or sideways: " + "; ".join(upward)


def test_no_import_circle() -> None:
    graph = {m: sorted({t for t, _, _ in _imports(p) if t in MODULES}) for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (circle := walk(nxt)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for module in graph:
        if module not in state:
            circle = walk(module)
            assert circle is None, "import circle: " + " -> ".join(circle)


def test_core_never_imports_the_harness() -> None:
    core = [m for m in MODULES if _floor(m)[1] < FLOORS["bench"]]
    offenders = [
        f"{m} line {line}" for m in core for t, line, _ in _imports(MODULES[m]) if t.startswith("videomask.bench")
    ]
    assert not offenders, offenders


def test_function_local_imports_say_why() -> None:
    silent = []
    for module in sorted(MODULES):
        lines = MODULES[module].read_text().splitlines()
        for _, line, in_function in _imports(MODULES[module]):
            if not in_function:
                continue
            text, above = lines[line - 1], line - 2
            while above >= 0 and lines[above].strip().startswith(("from ", "import ", ")")):
                above -= 1  # a block of imports shares the comment above it
            if "#" not in text and not (above >= 0 and lines[above].strip().startswith("#")):
                silent.append(f"{module} line {line}: {text.strip()}")
    assert not silent, "imports inside functions need a comment saying why: " + "; ".join(silent)


IMPORT_EVERYTHING = """
import atexit, ctypes, importlib, os, threading
# third-party libraries first: their own import-time hooks are not videomask's
import av, cv2, einops, numpy, PIL.Image, safetensors.torch, timm, torch, torchvision, tqdm.auto, yaml
import torch.distributed.checkpoint, torch.distributed.fsdp  # FSDP2 and DCP (videomask.train.fsdp)
calls = []
os.register_at_fork = lambda *a, **k: calls.append("os.register_at_fork")
atexit.register = lambda *a, **k: calls.append("atexit.register")
ctypes.CDLL = lambda *a, **k: calls.append("ctypes.CDLL " + str(a[:1]))
threading.Thread.start = lambda self: calls.append("thread " + self.name)
for name in MODULES:
    importlib.import_module(name)
print(calls)
"""


def test_importing_the_library_changes_nothing_in_the_process() -> None:
    import subprocess
    import sys

    names = sorted(m for m in MODULES if not m.endswith("__main__"))
    code = f"MODULES = {names!r}\n" + IMPORT_EVERYTHING
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:]
