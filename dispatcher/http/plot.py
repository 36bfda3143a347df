"""The console's throughput plot: bars of a server-rendered SVG (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

PLOT_WIDTH = 720
PLOT_HEIGHT = 160
BAR_GAP = 2


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str


@dataclass(frozen=True, slots=True)
class Plot:
    width: int
    height: int
    peak: int
    bars: list[Bar]


def bar_plot(
    values: list[int], first_minute: int, width: int = PLOT_WIDTH, height: int = PLOT_HEIGHT
) -> Plot:
    """One bar a minute, scaled to the highest; an empty hour has no bars but keeps its axis."""
    peak = max(values, default=0)
    slot = width / max(len(values), 1)
    bars = []
    for index, value in enumerate(values):
        if value <= 0:
            continue
        tall = height * value / peak
        minute = datetime.fromtimestamp((first_minute + index) * 60, UTC)
        bars.append(
            Bar(
                x=round(index * slot, 2),
                y=round(height - tall, 2),
                width=round(max(slot - BAR_GAP, 1), 2),
                height=round(tall, 2),
                value=value,
                label=minute.strftime("%H:%M UTC"),
            )
        )
    return Plot(width=width, height=height, peak=peak, bars=bars)
