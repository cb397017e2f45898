"""Reports: markdown + PNG figures + JSON, written atomically into one folder.

A :class:`Report` collects headed sections of text, tables and figures; ``write``
puts ``report.md``, ``report.json`` and the PNGs into a folder. The CLI's
``demo``, ``certify`` and ``sweep`` all write this same format.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import atomic_path, atomic_write, atomic_write_json


@dataclass
class Report:
    """A report under construction.

    Example:
        >>> rep = Report("jaxsae certificate")
        >>> rep.section("Codes", "All points certified.")
        >>> rep.table([("objective", 0.41)], header=("quantity", "value"))
        >>> rep.write("out/")
    """

    title: str
    blocks: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    figures: list[tuple[str, object, str]] = field(default_factory=list)

    def section(self, heading: str, text: str = "") -> None:
        self.blocks.append(f"## {heading}\n\n{text}".rstrip() + "\n")

    def text(self, text: str) -> None:
        self.blocks.append(text.rstrip() + "\n")

    def table(self, rows, header=("quantity", "value")) -> None:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
        self.blocks.append("\n".join(lines) + "\n")

    def figure(self, name: str, fig, caption: str) -> None:
        """Add a matplotlib figure, saved as ``NAME.png`` when the report is written."""
        self.figures.append((name, fig, caption))
        self.blocks.append(f"![{caption}]({name}.png)\n\n*{caption}*\n")

    def record(self, key: str, value) -> None:
        """Store a machine-readable value in ``report.json``."""
        self.data[key] = value

    def markdown(self) -> str:
        return f"# {self.title}\n\n" + "\n".join(self.blocks)

    def write(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        import matplotlib.pyplot as plt

        for name, fig, _ in self.figures:
            with atomic_path(folder / f"{name}.png") as tmp:
                fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
        atomic_write_json(folder / "report.json", {"title": self.title, **self.data})
        text = self.markdown()
        atomic_write(folder / "report.md", lambda fh: fh.write(text), mode="w")
        return folder / "report.md"


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == 0 or math.isnan(v) or math.isinf(v):
            return f"{v:g}"
        return f"{v:.3e}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.6g}"
    return str(v)
