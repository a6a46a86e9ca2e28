"""Bar chart of the I3Dr lung-function estimates for the PDF (reportlab graphics).

After thesis figure 2.4 (seeds/000, chapter 2): for every estimated quantity, the
patient-level estimate is a grey bar and, next to it, the lobar estimates are stacked in the
lobe colours of the key images (:data:`reports.keyimages.LEGEND_COLOURS`), so that the
reader sees both the whole-lung value and how the lobes contribute to it.  Volumes and
spirometry (PV, FPV, FEV1, FVC, in L) share one panel and axis; DLCO (mL/min/mmHg) has its
own panel.  Every bar carries its value; a negative estimate is drawn as an empty bar at zero
with its value printed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from reportlab.graphics.shapes import Drawing, Line, Rect, String
from reportlab.lib import colors
from reportlab.pdfbase.pdfmetrics import stringWidth

from models.findings import LOBE_NAMES, I3drResult
from reports import codes
from reports.keyimages import LEGEND_COLOURS, LEGEND_LABELS
from reports.pdf_layout import FONT, FONT_BOLD, register_fonts

__all__ = ["PATIENT_BAR_COLOUR", "PATIENT_LABEL", "lung_function_chart", "nice_ticks"]

#: Colour of the patient-level bars (grey, as the measured values of figure 2.4).
PATIENT_BAR_COLOUR = colors.HexColor("#9E9E9E")
#: Legend label of the patient-level bars.
PATIENT_LABEL = "Patient-level estimate"

_FONT_SIZE = 6.5
_TITLE_SIZE = 7.5
_AXIS_WIDTH = 26.0
_BOTTOM = 14.0
_TOP = 16.0
_LEGEND_ROW = 11.0


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Round axis ticks from 0 to at least ``maximum``, about ``count`` intervals.

    The step is 1, 2, 2.5 or 5 times a power of ten.
    """
    if not math.isfinite(maximum) or maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw)
    steps = math.ceil(maximum / step - 1e-9)
    return [round(i * step, 10) for i in range(steps + 1)]


def _format(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _colour(rgb: tuple[int, int, int]) -> colors.Color:
    return colors.Color(*(c / 255 for c in rgb))


def _panel(
    drawing: Drawing,
    x0: float,
    base: float,
    width: float,
    height: float,
    keys: Sequence[str],
    i3dr: I3drResult,
    lobes: Sequence[str],
    title: str,
) -> None:
    """Draw one panel (axis, bars, labels) of the outputs ``keys`` into ``drawing``.

    The panel occupies ``width`` x ``height`` points from ``(x0, base)``.
    """
    patient = i3dr.patient
    sums = [sum(max(0.0, float(i3dr.lobes[lobe].get(key, 0.0))) for lobe in lobes) for key in keys]
    peak = max([max(0.0, float(patient.get(key, 0.0))) for key in keys] + sums)
    ticks = nice_ticks(peak)
    top = ticks[-1]
    plot_h = height - _BOTTOM - _TOP
    plot_x = x0 + _AXIS_WIDTH
    plot_w = width - _AXIS_WIDTH - 4
    y0 = base + _BOTTOM

    def y(value: float) -> float:
        return y0 + plot_h * max(0.0, value) / top

    drawing.add(
        String(
            x0 + width / 2,
            base + height - _TOP + 5,
            title,
            fontName=FONT_BOLD,
            fontSize=_TITLE_SIZE,
            textAnchor="middle",
        )
    )
    for tick in ticks:
        drawing.add(
            Line(plot_x, y(tick), plot_x + plot_w, y(tick), strokeColor=colors.HexColor("#E0E0E0"), strokeWidth=0.4)
        )
        drawing.add(String(plot_x - 3, y(tick) - 2, f"{tick:g}", fontName=FONT, fontSize=_FONT_SIZE, textAnchor="end"))
    drawing.add(Line(plot_x, y0, plot_x, y0 + plot_h, strokeColor=colors.black, strokeWidth=0.6))
    drawing.add(Line(plot_x, y0, plot_x + plot_w, y0, strokeColor=colors.black, strokeWidth=0.6))

    slot = plot_w / len(keys)
    bar = min(16.0, slot * 0.36)
    for index, key in enumerate(keys):
        centre = plot_x + slot * (index + 0.5)
        label = codes.I3DR_OUTPUT_LABELS[key]
        drawing.add(String(centre, y0 - 9, label, fontName=FONT, fontSize=_FONT_SIZE, textAnchor="middle"))
        if key in patient:
            value = float(patient[key])
            left = centre - bar - 1
            drawing.add(
                Rect(
                    left,
                    y0,
                    bar,
                    y(value) - y0,
                    fillColor=PATIENT_BAR_COLOUR,
                    strokeColor=colors.black,
                    strokeWidth=0.3,
                )
            )
            drawing.add(
                String(
                    left + bar / 2,
                    y(value) + 2,
                    _format(value),
                    fontName=FONT,
                    fontSize=_FONT_SIZE - 1,
                    textAnchor="middle",
                )
            )
        stacked = [(lobe, float(i3dr.lobes[lobe][key])) for lobe in lobes if key in i3dr.lobes[lobe]]
        if stacked:
            left = centre + 1
            base = 0.0
            for lobe, value in stacked:
                height_value = max(0.0, value)
                drawing.add(
                    Rect(
                        left,
                        y(base),
                        bar,
                        y(base + height_value) - y(base),
                        fillColor=_colour(LEGEND_COLOURS[lobe]),
                        strokeColor=colors.white,
                        strokeWidth=0.3,
                    )
                )
                base += height_value
            total = sum(value for _, value in stacked)
            drawing.add(
                String(
                    left + bar / 2,
                    y(base) + 2,
                    _format(total),
                    fontName=FONT,
                    fontSize=_FONT_SIZE - 1,
                    textAnchor="middle",
                )
            )


def _legend_rows(width: float, lobes: Sequence[str]) -> list[list[tuple[str, colors.Color, float]]]:
    """Legend entries (label, colour, x) laid out in rows that fit ``width``."""
    entries: list[tuple[str, colors.Color]] = [(PATIENT_LABEL, PATIENT_BAR_COLOUR)]
    entries += [(f"{LEGEND_LABELS[lobe]} ({lobe})", _colour(LEGEND_COLOURS[lobe])) for lobe in lobes]
    rows: list[list[tuple[str, colors.Color, float]]] = [[]]
    x = _AXIS_WIDTH
    for label, colour in entries:
        step = 9 + stringWidth(label, FONT, _FONT_SIZE) + 8
        if rows[-1] and x + step > width:
            rows.append([])
            x = _AXIS_WIDTH
        rows[-1].append((label, colour, x))
        x += step
    return rows


def lung_function_chart(i3dr: I3drResult, width: float, height: float) -> Drawing | None:
    """The figure-2.4 chart of ``i3dr``, or None when it holds no estimate.

    Parameters
    ----------
    i3dr : I3drResult
        Patient-level and lobar estimates (keys of :data:`reports.codes.I3DR_OUTPUT_CODES`).
    width, height : float
        Size of the drawing in points (the legend takes one line of ``height`` per row).

    Returns
    -------
    reportlab.graphics.shapes.Drawing or None
        Left panel: the outputs in litres; right panel: DLCO; legend below; text in the report's
        embedded font.
    """
    register_fonts()
    lobes = [lobe for lobe in LOBE_NAMES if i3dr.lobes.get(lobe)]
    present = [
        key for key in codes.I3DR_OUTPUT_CODES if key in i3dr.patient or any(key in i3dr.lobes[lobe] for lobe in lobes)
    ]
    if not present:
        return None
    litres = [key for key in present if key != "dlco"]
    dlco = [key for key in present if key == "dlco"]
    rows = _legend_rows(width, lobes)
    legend_h = _LEGEND_ROW * len(rows)
    drawing = Drawing(width, height)
    # The renderer starts each drawing in its default font (Helvetica, not embedded) unless told.
    drawing.initialFontName = FONT
    chart_h = height - legend_h
    if litres and dlco:
        dlco_w = max(90.0, width * 1.6 / (len(litres) + 1.6))
        _panel(drawing, 0.0, legend_h, width - dlco_w, chart_h, litres, i3dr, lobes, "Volumes and spirometry (L)")
        _panel(drawing, width - dlco_w, legend_h, dlco_w, chart_h, dlco, i3dr, lobes, "DLCO (mL/min/mmHg)")
    elif litres:
        _panel(drawing, 0.0, legend_h, width, chart_h, litres, i3dr, lobes, "Volumes and spirometry (L)")
    else:
        _panel(drawing, 0.0, legend_h, min(width, 140.0), chart_h, dlco, i3dr, lobes, "DLCO (mL/min/mmHg)")
    for number, row in enumerate(rows):
        y = legend_h - _LEGEND_ROW * (number + 1) + 3
        for label, colour, x in row:
            drawing.add(Rect(x, y, 7, 7, fillColor=colour, strokeColor=colors.black, strokeWidth=0.3))
            drawing.add(String(x + 9, y + 1.5, label, fontName=FONT, fontSize=_FONT_SIZE))
    return drawing
