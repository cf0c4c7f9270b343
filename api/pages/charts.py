"""Server-side SVG bar charts: no script, no library, readable without colour (each bar
carries its number) and always followed by the same data as a table."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 640
BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 220
VALUE_WIDTH = 60


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    y: int
    width: int
    text_y: int


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    bars: list[Bar]
    width: int
    height: int
    label_width: int

    @property
    def empty(self) -> bool:
        return not self.bars


def bar_chart(chart_id: str, title: str, data: list[tuple[str, int]]) -> Chart:
    """Horizontal bars, one per (label, value), scaled to the largest value."""
    top = max((v for _, v in data), default=0) or 1
    room = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    bars = []
    for row, (label, value) in enumerate(data):
        y = GAP + row * (BAR_HEIGHT + GAP)
        bars.append(
            Bar(
                label=label,
                value=value,
                y=y,
                width=max(1, round(room * value / top)) if value else 0,
                text_y=y + BAR_HEIGHT - 6,
            )
        )
    height = GAP + len(data) * (BAR_HEIGHT + GAP)
    return Chart(chart_id, title, bars, WIDTH, max(height, 40), LABEL_WIDTH)
