"""Pieces shared by the bench scripts: running an anchor script and writing a dated, committed report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def anchor_path(script: str) -> Path:
    """An anchor script from $RLOPT_ANCHORS, else ../shared/tools/anchors next to the checkout."""
    path = Path(os.environ.get("RLOPT_ANCHORS", ROOT.parent / "shared" / "tools" / "anchors")) / script
    if not path.is_file():
        sys.exit(f"anchor script {path} not found; set RLOPT_ANCHORS")
    return path


def run_anchor(script: str, *args: str) -> str:
    """stdout of an anchor script."""
    cmd = [sys.executable, str(anchor_path(script)), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def run_anchor_with_peak_memory(script: str, *args: str) -> str:
    """Like `run_anchor`, with a last line `MAXRSS_KB n`: the process's peak resident memory."""
    code = (
        "import resource, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    cmd = [sys.executable, "-c", code, str(anchor_path(script)), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def stamp() -> dict[str, str]:
    """Date and short commit of the checkout, the first fields of every report."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    return {"date": time.strftime("%Y-%m-%d"), "commit": commit.strip()}


def write_report(report: dict, out: str | Path) -> str:
    """Write `report` as indented JSON to `out` (creating its folder); returns the text."""
    text = json.dumps(report, indent=1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    return text
