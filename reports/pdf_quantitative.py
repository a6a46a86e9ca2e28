"""The weight-free quantitative CT in the PDF: the page-1 findings block and the zone table.

On a fresh install these are the findings a radiologist reads, so page 1 gives the headline
numbers of both lungs each next to its reference point: the well-aerated share beside Colombi's
published cut-off (in words that say what it is and is not), the weight-free density-based zone
score beside its 0-30 range and the per-zone scores (never called the CT severity score), the
emphysema measures, the density bands, the change since the patient's prior CT (or why there is
no comparison) and the acquisition caveats that bias these numbers, next to them.  The zone
table on a later page gives every zone region (six zones, core and rind) with its bands, and
the definitions (``Densitometry.methods``) verbatim, so that every number can be traced to how
it was computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import KeepTogether, Paragraph, Table, TableStyle

from models.findings import (
    DENSITY_BAND_RANGES_HU,
    DENSITY_BANDS,
    HEADLINE_KEYS,
    LOBE_NAMES,
    REGION_LABELS,
    ZONE_REGIONS,
    Densitometry,
    Findings,
    FollowUp,
    RegionMeasurements,
    ZoneScore,
)
from reports.pdf_layout import GRID, NOT_AVAILABLE, Text, dicom_date, fmt, region_label
from reports.precision import HEADLINE_WORDS, headline_change, headline_value

__all__ = ["findings_block", "zone_table"]

#: The bands in a few words, for a sentence (their full labels are DENSITY_BAND_LABELS).
_BAND_WORDS: Mapping[str, str] = {
    "emphysema": "emphysema-like",
    "well_aerated": "well aerated",
    "poorly_aerated": "poorly aerated",
    "non_aerated": "non-aerated",
    "other": "above +100 HU",
}
assert set(DENSITY_BANDS) == set(_BAND_WORDS)


def _band_heading(band: str) -> str:
    """A band's HU range for a column heading (e.g. "-950 to -700"), from ``DENSITY_BAND_RANGES_HU``."""
    low, high = DENSITY_BAND_RANGES_HU[band]
    if low is None:
        return f"< {high:g}"
    if high is None:
        return f">= {low:+g}"
    return f"{low:g} to {high:+g}"


def _value(key: str, value: float | None) -> str:
    return headline_value(key, value, NOT_AVAILABLE)


def _signed(key: str, value: float | None) -> str:
    return headline_change(key, value, NOT_AVAILABLE)


def _reference(findings: Findings, key: str, d: Densitometry | None) -> str:
    """The reference point a headline number is read against, in words (markup)."""
    lungs = findings.measurements.get("lungs")
    if key == "well_aerated_pct" and d is not None and d.below_well_aerated_cutoff is not None:
        side = "below" if d.below_well_aerated_cutoff else "not below"
        words = f"{side} the {d.well_aerated_cutoff_pct:g} % cut-off of Colombi et al. 2020 (see note 1)"
        return f'<font color="#C62828"><b>{words}</b></font>' if d.below_well_aerated_cutoff else words
    if key == "zone_score_total" and d is not None:
        scores = ", ".join(
            f"{REGION_LABELS[zone]} {score.score}" for zone, score in d.zone_scores.items() if score.score is not None
        )
        return f"0-30, six zones 0-5 each (Pan et al. thresholds; not the CT severity score): {scores}"
    if key == "laa950_pct" and d is not None:
        ratio, exponent = d.emphysema.upper_lower_ratio, d.emphysema.cluster_exponent_d
        return f"upper/lower zone ratio {fmt(ratio, 2)}; LAA cluster exponent D {fmt(exponent, 2)}"
    if key == "lung_volume_ml" and lungs is not None and lungs.fpv_ml is not None:
        return f"functional (-950 to -500 HU) {lungs.fpv_ml:.0f} mL"
    if key == "lung_mass_g":
        return "from the density of every lung voxel"
    return ""


def _bands_line(findings: Findings) -> str:
    lungs = findings.measurements.get("lungs")
    if lungs is None or not lungs.density_bands:
        return ""
    parts = []
    for band in DENSITY_BANDS:
        value = lungs.density_bands.get(band)
        if value is not None:
            parts.append(f"{_BAND_WORDS[band]} {value.volume_ml:.0f} mL ({fmt(value.pct, 1)} %)")
    return "Density bands of both lungs: " + "; ".join(parts) + "."


def _followup_lines(followup: FollowUp | None, text: Text) -> list[str]:
    """The follow-up in markup lines: the prior and every change, or why there is no comparison."""
    if followup is None:
        return []
    prior = followup.prior
    if not followup.comparable:
        named = f" (latest prior: study of {dicom_date(prior.study_date) or 'unknown date'})" if prior else ""
        return [f"<b>Follow-up</b>: no comparison{named}: {text.markup('; '.join(followup.reasons))}."]
    assert prior is not None
    interval = f", {followup.interval_days} days earlier" if followup.interval_days is not None else ""
    accession = f", accession {text.markup(prior.accession_number)}" if prior.accession_number else ""
    lines = [
        f"<b>Follow-up</b> against the prior chest CT of {text.markup(dicom_date(prior.study_date) or 'unknown date')}"
        f"{interval}{accession}; the table gives each prior value and its change (current minus prior)."
    ]
    lines += [f'<font color="#8D5A00">Caveat: {text.markup(c)}</font>' for c in followup.caveats]
    lines.append(f"<i>Comparability: {text.markup(followup.criteria)}.</i>")
    return lines


def findings_block(findings: Findings, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """Page 1: the headline numbers of both lungs with their reference points, follow-up and caveats.

    Empty without a weight-free headline (no lung measurement): the results table then says why.
    """
    headline = findings.headline()
    run = findings.mask_run("lungs")
    if headline is None or run is None:
        return []
    d = findings.densitometry
    followup = findings.followup if findings.followup is not None and findings.followup.comparable else None
    header = ["Measurement", "Value"]
    widths = [56 * mm, 20 * mm]
    if followup is not None:
        assert followup.prior is not None
        header += [f"Prior ({dicom_date(followup.prior.study_date) or 'date unknown'})", "Change"]
        widths += [24 * mm, 26 * mm]
    header.append("Reference point")
    widths.append(180 * mm - sum(widths))
    data: list[list[Any]] = [[Paragraph(f"<b>{text.markup(h)}</b>", styles["small"]) for h in header]]
    for key in HEADLINE_KEYS:
        row = [
            Paragraph(HEADLINE_WORDS[key][0], styles["small"]),
            Paragraph(f"<b>{_value(key, headline[key])}</b>", styles["small"]),
        ]
        if followup is not None:
            change = followup.changes[key]
            row += [
                Paragraph(_value(key, change.prior), styles["small"]),
                Paragraph(_signed(key, change.delta), styles["small"]),
            ]
        data.append([*row, Paragraph(_reference(findings, key, d), styles["small"])])
    table = Table(data, colWidths=widths)
    table.setStyle(GRID)
    table.setStyle(TableStyle([("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)]))
    heading = (
        f"Quantitative CT of both lungs: {text.markup(run.provenance_words)}, {text.markup(run.name)} "
        f"{text.markup(run.version)}"
    )
    flow: list[Any] = [Paragraph(heading, styles["h2"]), table]
    notes: list[str] = []
    bands = _bands_line(findings)
    if bands:
        notes.append(text.markup(bands))
    acquisition = findings.acquisition
    if acquisition is not None:
        sharp = {True: "sharp", False: "soft", None: "unclassified"}[acquisition.sharp_kernel]
        kernel = f"kernel {acquisition.kernel} ({sharp})" if acquisition.kernel else "kernel not recorded"
        contrast = {True: "with contrast", False: "without contrast", None: "contrast unknown"}[acquisition.contrast]
        notes.append(
            text.markup(
                f"Acquisition: slice thickness {fmt(acquisition.slice_thickness_mm, 1)} mm, {kernel}, {contrast}."
            )
        )
        notes += [f'<font color="#8D5A00"><b>Caveat</b>: {text.markup(c)}</font>' for c in acquisition.caveats]
    notes += _followup_lines(findings.followup, text)
    if d is not None:
        notes.append(f"Note 1: {text.markup(d.methods.get('well_aerated_reference', ''))}")
        notes += [f'<font color="#8D5A00">{text.markup(n)}</font>' for n in d.notes]
    flow += [Paragraph(line, styles["small"]) for line in notes]
    return [KeepTogether(flow)]


def _band_row(
    name: str, m: RegionMeasurements, score: ZoneScore | None, text: Text, style: ParagraphStyle
) -> list[Any]:
    """One row of a density-band table: region, volume, each band's %, Perc15, mass, involvement, score."""
    bands = [fmt(m.density_bands[b].pct, 1) if b in m.density_bands else NOT_AVAILABLE for b in DENSITY_BANDS]
    involvement = fmt(score.involvement_pct, 1) if score is not None else ""
    points = "" if score is None else NOT_AVAILABLE if score.score is None else str(score.score)
    return [
        Paragraph(text.markup(region_label(name)), style),
        fmt(m.volume_ml, 0),
        *bands,
        fmt(m.perc15_hu, 0),
        fmt(m.mass_g, 0),
        involvement,
        points,
    ]


def _band_table(rows: list[list[Any]], styles: dict[str, ParagraphStyle]) -> Table:
    header = [
        "Region",
        "Volume (mL)",
        *(f"{_band_heading(b)} HU (%)" for b in DENSITY_BANDS),
        "Perc15 (HU)",
        "Mass (g)",
        "Inv. (%)",
        "Score (0-5)",
    ]
    data: list[list[Any]] = [[Paragraph(f"<b>{h}</b>", styles["heading_cell"]) for h in header], *rows]
    widths = [34 * mm, 15 * mm, 15 * mm, 15 * mm, 15 * mm, 15 * mm, 14 * mm, 14 * mm, 13 * mm, 14 * mm, 16 * mm]
    table = Table(data, colWidths=widths, repeatRows=1)
    table.setStyle(GRID)
    table.setStyle(TableStyle([("ALIGN", (1, 1), (-1, -1), "RIGHT"), ("FONTSIZE", (1, 1), (-1, -1), 7.5)]))
    return table


def zone_table(findings: Findings, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """Every zone region with its volume, density bands (% of the region), Perc15, mass and score;
    then the same per lobe when a learned lobe mask ran, under its model and provenance."""
    d = findings.densitometry
    if d is None:
        return []
    rows = [
        _band_row(name, d.regions[name], d.zone_scores.get(name), text, styles["small"])
        for name in ZONE_REGIONS
        if name in d.regions
    ]
    total = NOT_AVAILABLE if d.zone_score_total is None else f"{d.zone_score_total} / 30"
    rows.append([Paragraph("<b>Zone score, total</b>", styles["small"]), *[""] * 9, total])
    run = findings.models[d.source]
    flow: list[Any] = [
        Paragraph(
            f"Zones, core and rind (weight-free, {text.markup(run.provenance_words)}; "
            "density bands as % of each region)",
            styles["h2"],
        ),
        _band_table(rows, styles),
    ]
    for key in ("zones", "rind", "density_bands", "zone_score", "upper_lower_ratio", "cluster_exponent", "mass"):
        if d.methods.get(key):
            flow.append(Paragraph(text.markup(d.methods[key]), styles["small"]))
    flow += [Paragraph(text.markup(note), styles["small"]) for note in d.emphysema.notes]
    lobes = [name for name in LOBE_NAMES if name in findings.measurements and findings.measurements[name].density_bands]
    lobe_run = findings.mask_run(lobes[0]) if lobes else None
    if lobe_run is not None:
        heading = (
            f"Density bands per lobe (learned lobe mask: model {text.markup(lobe_run.name)}, version "
            f"{text.markup(lobe_run.version)}, {text.markup(lobe_run.provenance_words)})"
        )
        flow += [Paragraph(heading, styles["h2"])]
        if lobe_run.unvalidated_statement:
            statement = text.markup(lobe_run.unvalidated_statement)
            flow.append(Paragraph(f'<font color="#C62828"><b>{statement}</b></font>', styles["small"]))
        lobe_rows = [_band_row(n, findings.measurements[n], None, text, styles["small"]) for n in lobes]
        flow.append(_band_table(lobe_rows, styles))
    return flow
