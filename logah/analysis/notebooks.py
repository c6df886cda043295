"""What the notebooks in ``analysis/`` share: which study they read, and figures that show
everywhere.

    STUDY_DIR = None                                 # the papermill ``parameters`` cell
    study_dir = notebook_studies(STUDY_DIR, "STUDY_DIR", "LOGAH_STUDY")[0]
    show_static_images()

A notebook's study comes from its ``parameters`` cell (``papermill -p STUDY_DIR PATH``), else
from an environment variable (``LOGAH_STUDY``, or ``LOGAH_STUDIES`` with several folders
separated by ``os.pathsep``), else it is the newest study that ``make demo`` wrote
(``runs/studies/rank_sweep-demo-YYYYmmdd-HHMMSS`` in the repository), so that a notebook opened
right after ``make demo`` runs as it is. Plotly figures carry only their own MIME type by
default, which a static viewer (GitHub, nbviewer, an HTML export) cannot draw;
``show_static_images`` adds a PNG beside every figure.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from logah.analysis.tables import STUDY_FILE
from logah.errors import LogahError

DEMO_NAME = re.compile(r"rank_sweep-demo-\d{8}-\d{6}")   # the Makefile's demo target names it
STATIC_RENDERER = "plotly_mimetype+png"
PNG_WIDTH = 1000


def repository_root() -> Path:
    """The checkout this ``logah`` is installed from (``pip install -e``, as ``make setup``
    does): where ``make demo`` writes ``runs/studies``, whatever the notebook's working folder."""
    import logah

    return Path(logah.__file__).resolve().parents[1]


def demo_storage() -> Path:
    return repository_root() / "runs" / "studies"


def newest_demo_study(storage: str | Path | None = None, parameter: str = "STUDY_DIR",
                      variable: str = "LOGAH_STUDY") -> Path:
    """The newest ``rank_sweep-demo-YYYYmmdd-HHMMSS`` study folder in ``storage`` (default: the
    repository's ``runs/studies``, where ``make demo`` writes). The names sort by time. None
    there is a ``LogahError`` that says how to get one (naming the notebook's ``parameter``
    and environment ``variable``)."""
    storage = Path(storage) if storage is not None else demo_storage()
    found = sorted(p for p in storage.glob("rank_sweep-demo-*")
                   if DEMO_NAME.fullmatch(p.name) and (p / STUDY_FILE).is_file()) \
        if storage.is_dir() else []
    if not found:
        raise LogahError(f"no study given and no `make demo` study (rank_sweep-demo-*) in {storage}: "
                         f"run `make demo`, or pass a study folder as the notebook's parameter "
                         f"(papermill -p {parameter} PATH) or in the environment ({variable})")
    return found[-1]


def notebook_studies(given: str | Path | list | tuple | None, parameter: str, variable: str,
                     storage: str | Path | None = None) -> list[Path]:
    """The study folders a notebook reads: ``given``, the value of its ``parameter`` (one
    folder, or a list; a string may hold several separated by ``os.pathsep``), else the
    environment ``variable`` (same format), else the newest ``make demo`` study
    (``newest_demo_study``)."""
    if given is None or (isinstance(given, str) and not given.strip()):
        given = os.environ.get(variable, "").strip() or None
    if given is None:
        return [newest_demo_study(storage, parameter, variable)]
    items = list(given) if isinstance(given, (list, tuple)) else [given]
    folders = [Path(part) for item in items for part in str(item).split(os.pathsep) if part.strip()]
    if not folders:
        raise LogahError(f"no study folder in {given!r}")
    return folders


def show_static_images(width: int = PNG_WIDTH) -> bool:
    """Make every plotly figure shown in this kernel carry a PNG beside the interactive figure
    (renderer ``plotly_mimetype+png``), so a saved notebook shows its figures in a static viewer.
    The PNG is drawn by kaleido in a headless Chrome or Chromium (Debian's ``chromium``, which
    ``make setup`` installs; kaleido finds it on the PATH). Without either browser the figures
    stay interactive only, and this says so; returns whether PNGs are on."""
    import plotly.io as pio

    if not _browser():
        print("note: no Chrome or Chromium found, so figures are interactive only (no PNG for "
              "static viewers); install Debian's chromium to get both")
        pio.renderers.default = "plotly_mimetype"
        return False
    pio.renderers["png"].width = width
    pio.renderers.default = STATIC_RENDERER
    return True


def _browser() -> str | None:
    """The browser kaleido will use (its own search: ``BROWSER_PATH``, then Chrome, Chromium,
    Edge, ... on the PATH and in their usual places), or None (kaleido missing too)."""
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:   # kaleido (and its choreographer) not installed: no PNG either way
        return None
    return Chromium.find_browser(skip_local=False)
