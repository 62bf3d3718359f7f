"""Collapsed stacks (py-spy's ``raw`` format) -> a static flame graph SVG.

py-spy writes one flame graph per recording; the profiler records once in
the raw format (for its text summary) and draws the SVG from the same
samples here, so the two never disagree. No scripts in the SVG: it opens
in any browser or image viewer, and each box has a ``<title>`` tooltip.
"""

from __future__ import annotations

import html
import zlib
from pathlib import Path

WIDTH = 1200
ROW = 16
FONT = 11
MIN_WIDTH = 0.5  # px: narrower boxes are not drawn (their parent still counts them)


class _Node:
    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, _Node] = {}


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """``frame;frame;... count`` lines -> (frames, count)."""
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def _colour(name: str) -> str:
    h = zlib.crc32(name.encode())
    if ".py:" in name or ".py)" in name:  # Python: warm
        return f"rgb({205 + h % 50},{80 + (h >> 8) % 120},{40 + (h >> 16) % 40})"
    return f"rgb({90 + h % 40},{150 + (h >> 8) % 60},{190 + (h >> 16) % 60})"  # native: cool


def render(stacks: list[tuple[list[str], int]], title: str, out: Path) -> None:
    """Write the flame graph of ``stacks`` (root at the bottom) to ``out``."""
    root = _Node()
    for frames, n in stacks:
        root.count += n
        node = root
        for f in frames:
            node = node.children.setdefault(f, _Node())
            node.count += n
    depth = _depth(root)
    height = (depth + 3) * ROW
    total = max(root.count, 1)
    scale = WIDTH / total
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="{FONT}">',
        f'<rect width="{WIDTH}" height="{height}" fill="#f8f8f8"/>',
        f'<text x="4" y="{ROW - 3}" font-size="{FONT + 2}">{html.escape(title)} '
        f"({root.count} samples)</text>",
    ]

    def draw(node: _Node, name: str, x: float, level: int) -> None:
        w = node.count * scale
        if w < MIN_WIDTH:
            return
        y = height - (level + 1) * ROW
        share = 100.0 * node.count / total
        label = html.escape(name)
        parts.append(
            f"<g><title>{label} ({node.count} samples, {share:.1f}%)</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 1}" '
            f'fill="{_colour(name)}"/>'
        )
        chars = int(w / (FONT * 0.6))
        if chars >= 4:
            text = name if len(name) <= chars else name[: chars - 2] + ".."
            parts.append(f'<text x="{x + 2:.1f}" y="{y + ROW - 4}">{html.escape(text)}</text>')
        parts.append("</g>")
        cx = x
        for child_name, child in sorted(node.children.items()):
            draw(child, child_name, cx, level + 1)
            cx += child.count * scale

    cx = 0.0
    for name, child in sorted(root.children.items()):
        draw(child, name, cx, 0)
        cx += child.count * scale
    parts.append("</svg>")
    out.write_text("\n".join(parts))


def _depth(node: _Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)
