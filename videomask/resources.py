"""The shipped data (the demo's configs and clips), found the same way from a wheel, an editable install or a clone.

The repository keeps the files in ``configs/`` and ``assets/`` at its root. ``pyproject.toml`` maps these
folders onto two data packages, ``videomask._configs`` and ``videomask._assets`` (setuptools
``package-dir``), so a wheel carries them inside ``videomask/`` (``videomask/_assets/target/*.mp4``).
:func:`data_dir` finds them with :mod:`importlib.resources`. When the data packages cannot be imported,
it uses the folders beside the ``videomask`` package: that is the case of an editable install
(setuptools' editable finder does not serve a namespace package nested in a regular one, although it
records the mapping) and of a clone used through ``PYTHONPATH``; both have ``configs/`` and
``assets/`` next to ``videomask/``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from videomask.errors import VideomaskError

DATA_PACKAGES = {"assets": "videomask._assets", "configs": "videomask._configs"}


def _as_path(root: object) -> Path | None:
    """A concrete folder for a ``files()`` result (a namespace package gives a MultiplexedPath)."""
    if isinstance(root, Path):
        return root if root.is_dir() else None
    try:
        child = next(iter(root.iterdir()))  # type: ignore[attr-defined]
    except (StopIteration, FileNotFoundError, NotADirectoryError, AttributeError):
        return None
    return Path(str(child)).parent if isinstance(child, Path) else None


def data_dir(name: str) -> Path:
    """The folder of shipped data ``name`` (``assets`` or ``configs``) as a filesystem path."""
    if name not in DATA_PACKAGES:
        raise VideomaskError(f"unknown data folder {name!r} (known: {', '.join(DATA_PACKAGES)})")
    try:
        found = _as_path(importlib.resources.files(DATA_PACKAGES[name]))
    except ModuleNotFoundError:
        found = None
    if found is not None:
        return found
    beside = Path(__file__).resolve().parents[1] / name  # a clone used through PYTHONPATH
    if beside.is_dir():
        return beside
    raise VideomaskError(
        f"the shipped {name}/ folder was not found (package {DATA_PACKAGES[name]} is missing: reinstall videomask)"
    )


def data_file(name: str, relative: str) -> Path:
    """A shipped file, e.g. ``data_file("configs", "demo.yaml")``; a one-line error when it is missing."""
    path = data_dir(name) / relative
    if not path.exists():
        raise VideomaskError(f"shipped file {name}/{relative} not found in {data_dir(name)} (reinstall videomask)")
    return path
