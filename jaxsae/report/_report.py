"""Reports: markdown + PNG figures + JSON, written atomically into one folder.

A :class:`Report` collects headed sections of text, tables and figures; ``write``
puts ``report.md``, ``report.json``, the PNGs and a self-contained ``report.html``
(figures embedded) into a folder. The CLI's ``demo``, ``diagnose`` and ``sweep``
all write this same format.
"""

from __future__ import annotations

import base64
import html
import io
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

        images = {}
        for name, fig, _ in self.figures:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            images[f"{name}.png"] = buf.getvalue()
            with atomic_path(folder / f"{name}.png") as tmp:
                tmp.write_bytes(images[f"{name}.png"])
        atomic_write_json(folder / "report.json", {"title": self.title, **self.data})
        text = self.markdown()
        atomic_write(folder / "report.md", lambda fh: fh.write(text), mode="w")
        page = self.html(images)
        atomic_write(folder / "report.html", lambda fh: fh.write(page), mode="w")
        return folder / "report.md"

    def html(self, images: dict[str, bytes]) -> str:
        """One self-contained page: the markdown's headings, paragraphs, lists and
        tables as HTML, each figure embedded as a base64 PNG."""
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            body.append(_block_html(block, images))
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.45}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
            "img{max-width:100%}code{background:#f4f4f4}"
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
        )


def _block_html(block: str, images: dict[str, bytes]) -> str:
    """The HTML of one markdown block written by :class:`Report` (a small, fixed subset)."""
    out, rows, items = [], [], []

    def flush():
        if rows:
            head, *rest = rows
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest
            )
            out.append(f"<table><tr>{cells}</tr>{body}</table>")
            rows.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in block.splitlines():
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                rows.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("![") and "](" in line:
            caption, name = line[2:].split("](", 1)
            data = base64.b64encode(images.get(name.rstrip(")"), b"")).decode()
            out.append(f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>")
        elif line.startswith("*") and line.endswith("*") and len(line) > 2:
            out.append(f"<p><em>{html.escape(line.strip('*'))}</em></p>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "".join(out)


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
