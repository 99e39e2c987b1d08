"""The plot's layout, checked on the pixels of a PNG and the points of an SVG drawn from a hand-made timeline.

800 × 300 pixels, margins 40 left, 20 right, 20 top, 30 bottom: x = 40 + 740 · t / 300 s, and with the highest
value 5, y = 270 − 50 · value.
"""

from __future__ import annotations

import io

from PIL import Image

from kiln.autoscale.plot import chart, png, svg
from kiln.autoscale.simulate import Tick

NODES, TARGET, PENDING, WHITE = (0x1F, 0x77, 0xB4), (0x2C, 0xA0, 0x2C), (0xFF, 0x7F, 0x0E), (255, 255, 255)
#: Every 30 s for 300 s: 1 pending task, target 5, nodes 2 until 120 s and 4 from 150 s on.
TIMELINE = [Tick(at, {"$PendingTasks": 1.0}, 5, 2 if at <= 120 else 4) for at in range(0, 301, 30)]


def _colours_near(image: Image.Image, x: int, y: int) -> set:
    """The colours within a pixel of (x, y) vertically (a 2-pixel line may sit either side of its y)."""
    return {image.getpixel((x, y + dy)) for dy in (-1, 0, 1)}


def test_a_png_draws_each_series_where_its_values_say() -> None:
    data = png(chart(TIMELINE, ["$PendingTasks"]))
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (800, 300)
    at_60s, at_240s = 40 + 740 * 60 // 300, 40 + 740 * 240 // 300
    assert NODES in _colours_near(image, at_60s, 170) and NODES in _colours_near(image, at_240s, 70)
    assert NODES not in _colours_near(image, at_60s, 70) and NODES not in _colours_near(image, at_240s, 170)
    assert TARGET in _colours_near(image, at_60s, 20) and TARGET in _colours_near(image, at_240s, 20)
    assert PENDING in _colours_near(image, at_60s, 220) and PENDING in _colours_near(image, at_240s, 220)
    assert image.getpixel((at_60s, 120)) == WHITE  # between the lines: nothing drawn


def test_an_svg_draws_the_same_points() -> None:
    drawn = svg(chart(TIMELINE, ["$PendingTasks", "$RunningTasks"]))
    assert drawn.count("<polyline") == 4  # nodes, target and the two metrics ($RunningTasks reads 0)
    assert 'stroke="#1f77b4" stroke-width="1.5" points="40.0,170.0 114.0,170.0' in drawn
    assert "$RunningTasks</text>" in drawn
