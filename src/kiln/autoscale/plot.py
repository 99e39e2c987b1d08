"""Nodes, the dedicated target and chosen sample metrics over time, drawn as SVG or PNG from one layout.

The layout maps seconds to x and every series to one y scale from 0 to the highest value drawn, inside
margins (`LEFT`, `RIGHT`, `TOP`, `BOTTOM` pixels), so a test can tell where a value lands. PNG needs Pillow
(the `plot` extra), imported only when a PNG is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from kiln.autoscale.samples import PERIOD
from kiln.autoscale.simulate import Tick

LEFT, RIGHT, TOP, BOTTOM = 40, 20, 20, 30
NODES_COLOUR, TARGET_COLOUR = "#1f77b4", "#2ca02c"
#: The chosen metrics' colours, in the order they are named.
METRIC_COLOURS = ("#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
LEGEND_Y = 14


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    colour: str
    points: list[tuple[float, float]]  #: pixels


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    lines: list[Line]
    top: float  #: the value at the top of the y axis
    end: float  #: the seconds at the right end of the x axis

    def legend(self) -> list[tuple[int, Line]]:
        """Where each line's label starts, left to right above the plot."""
        placed, x = [], LEFT + 10
        for line in self.lines:
            placed.append((x, line))
            x += 7 * len(line.label) + 20
        return placed


def chart(timeline: Sequence[Tick], metrics: Sequence[str], width: int = 800, height: int = 300) -> Chart:
    """The nodes (blue), the target (green) and each metric's samples (`METRIC_COLOURS`) at every tick."""
    series = [
        ("nodes", NODES_COLOUR, [float(tick.nodes) for tick in timeline]),
        ("$TargetDedicatedNodes", TARGET_COLOUR, [float(tick.target) for tick in timeline]),
    ] + [
        (metric, colour, [tick.samples.get(metric, 0.0) for tick in timeline])
        for metric, colour in zip(metrics, METRIC_COLOURS, strict=False)
    ]
    end = max((tick.at for tick in timeline), default=0.0) or PERIOD.total_seconds()
    top = max((max(values, default=0.0) for _, _, values in series), default=0.0) or 1.0
    span_x, span_y = width - LEFT - RIGHT, height - TOP - BOTTOM
    lines = [
        Line(
            label,
            colour,
            [
                (LEFT + span_x * tick.at / end, height - BOTTOM - span_y * value / top)
                for tick, value in zip(timeline, values, strict=True)
            ],
        )
        for label, colour, values in series
    ]
    return Chart(width, height, lines, top, end)


def _number(value: float) -> str:
    return f"{value:g}"


def svg(chart: Chart) -> str:
    bottom, right = chart.height - BOTTOM, chart.width - RIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{chart.width}" height="{chart.height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{chart.width}" height="{chart.height}" fill="white"/>',
        f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="black"/>',
        f'<text x="4" y="{TOP + 4}">{_number(chart.top)}</text><text x="4" y="{bottom}">0</text>',
        f'<text x="{right - 60}" y="{chart.height - 10}">{_number(chart.end)} s</text>',
    ]
    for line in reversed(chart.lines):  # the nodes on top
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in line.points)
        parts.append(f'<polyline fill="none" stroke="{line.colour}" stroke-width="1.5" points="{points}"/>')
    parts += [f'<text x="{x}" y="{LEGEND_Y}" fill="{line.colour}">{line.label}</text>' for x, line in chart.legend()]
    return "".join(parts) + "</svg>\n"


def png(chart: Chart) -> bytes:
    from PIL import Image, ImageDraw  # only a PNG plot needs Pillow

    image = Image.new("RGB", (chart.width, chart.height), "white")
    draw = ImageDraw.Draw(image)
    bottom, right = chart.height - BOTTOM, chart.width - RIGHT
    draw.line([(LEFT, TOP), (LEFT, bottom), (right, bottom)], fill="black")
    draw.text((4, TOP - 6), _number(chart.top), fill="black")
    draw.text((4, bottom - 12), "0", fill="black")
    draw.text((right - 60, chart.height - 22), f"{_number(chart.end)} s", fill="black")
    for line in reversed(chart.lines):  # the nodes on top
        if len(line.points) > 1:
            draw.line(line.points, fill=line.colour, width=2)
        else:
            draw.point(line.points, fill=line.colour)
    for x, line in chart.legend():
        draw.text((x, LEGEND_Y - 12), line.label, fill=line.colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
