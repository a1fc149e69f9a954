"""What the benchmarks share: writing their section of docs/benchmarks.md (keeping the other
sections) and naming the machine.

Scripts here run as ``python benchmarks/NAME.py`` (so this folder is on ``sys.path``) and import it as
``from _docs import DOC, write_section``.
"""

from __future__ import annotations

import platform
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(text: str, doc: Path = DOC) -> None:
    """Replace the section of ``doc`` whose heading is the first line of ``text`` (up to the next "## "),
    or append it; other sections are kept byte for byte. Written atomically."""
    from talkface.io.fileio import write_text_atomic

    heading = text.splitlines()[0].strip()
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + text + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    write_text_atomic(doc, new.rstrip("\n") + "\n")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
