"""The figure-2.4 bar chart of I3Dr estimates: bars, colours, values, panels."""

from __future__ import annotations

import pytest
from reportlab.graphics.shapes import Drawing, Rect, String
from reportlab.lib import colors

from models.findings import I3drResult
from reports.charts import PATIENT_BAR_COLOUR, PATIENT_LABEL, lung_function_chart, nice_ticks
from reports.keyimages import LEGEND_COLOURS


def _shapes(drawing: Drawing) -> tuple[list[Rect], list[str]]:
    """Bars (every rectangle but the 7 pt legend swatches) and texts of a chart."""
    rects = [shape for shape in drawing.contents if isinstance(shape, Rect) and (shape.width, shape.height) != (7, 7)]
    strings = [shape.text for shape in drawing.contents if isinstance(shape, String)]
    return rects, strings


def _lobe_colour(lobe: str) -> colors.Color:
    return colors.Color(*(c / 255 for c in LEGEND_COLOURS[lobe]))


@pytest.mark.parametrize(
    ("maximum", "ticks"),
    [(5.6, [0, 2, 4, 6]), (21.4, [0, 5, 10, 15, 20, 25]), (0.9, [0, 0.2, 0.4, 0.6, 0.8, 1.0]), (0.0, [0, 1])],
)
def test_nice_ticks(maximum: float, ticks: list[float]) -> None:
    assert nice_ticks(maximum) == pytest.approx(ticks)


def test_patient_bar_next_to_stacked_lobes() -> None:
    i3dr = I3drResult(
        patient={"fev1_pre_l": 3.0, "dlco": 20.0},
        lobes={"LUL": {"fev1_pre_l": 1.0, "dlco": 8.0}, "RLL": {"fev1_pre_l": 2.0, "dlco": 12.0}},
    )
    drawing = lung_function_chart(i3dr, 500, 180)
    assert drawing is not None
    rects, strings = _shapes(drawing)
    patient = [r for r in rects if r.fillColor == PATIENT_BAR_COLOUR and r.height > 0]
    lul = [r for r in rects if r.fillColor == _lobe_colour("LUL") and r.height > 0]
    rll = [r for r in rects if r.fillColor == _lobe_colour("RLL") and r.height > 0]
    assert len(patient) == len(lul) == len(rll) == 2  # FEV1 and DLCO
    fev1_patient = min(patient, key=lambda r: r.x)
    fev1_lul = min(lul, key=lambda r: r.x)
    fev1_rll = min(rll, key=lambda r: r.x)
    assert fev1_lul.x > fev1_patient.x and fev1_lul.x == fev1_rll.x
    assert fev1_rll.y == pytest.approx(fev1_lul.y + fev1_lul.height)  # stacked
    assert fev1_lul.height + fev1_rll.height == pytest.approx(fev1_patient.height)  # lobes sum to the patient
    assert {"FEV1 pre", "DLCO", "3.00", "20.0", PATIENT_LABEL, "Left upper lobe (LUL)"} <= set(strings)
    assert "Volumes and spirometry (L)" in strings and "DLCO (mL/min/mmHg)" in strings
    assert "Right middle lobe (RML)" not in strings


def test_chart_of_nothing_is_none_and_negative_values_print() -> None:
    assert lung_function_chart(I3drResult(patient={}, lobes={}), 400, 150) is None
    drawing = lung_function_chart(I3drResult(patient={"fvc_pre_l": -0.05}, lobes={}), 400, 150)
    assert drawing is not None
    rects, strings = _shapes(drawing)
    assert "-0.05" in strings
    assert all(r.height >= 0 for r in rects)
    assert "DLCO (mL/min/mmHg)" not in strings
