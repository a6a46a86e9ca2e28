"""The human-readable PDF report of one lungcds analysis (reportlab).

Layout (A4).  Every page: a running header with the patient's name, Patient ID, birth date,
study date and accession number and "page x of y", so that a page separated from its printout
can be matched to its patient and study and missed pages are noticed; when any model that ran
is unvalidated, a red banner above it.  Page 1: patient and study header (the Patient and Study
attributes every DICOM object of the analysis carries, from the same header,
:func:`reports.identity.identity_source`); a boxed statement that this is decision support, not a
diagnosis, what the software is, and which measurements come from a weight-free lung mask; the
lung-mask quality gate when it failed; the weight-free findings (:mod:`reports.pdf_quantitative`);
a results table of the outputs that exist or were withheld (lung volume, CO-RADS, probabilities
of COVID-19 and of severe outcome, CT severity score, I3Dr lung function), each with its model,
version and provenance, and one line naming every model that did not run, grouped by why;
axial and coronal key images with their legends.  Then: eligibility notes, pipeline warnings,
one measurement table per mask model (the weight-free lung mask; each learned mask under a
heading naming its model and provenance, with the UNVALIDATED statement when it applies; a
withheld region saying why instead of numbers), the zone table, the model outputs with their
provenance (each withheld value as "withheld" with its reason).  Last, a "Technical details"
page: every model with status, reason, version, provenance and weights SHA-256, and how a
missing model is installed, in words.  Regions are named in words (:func:`reports.pdf_layout.region_label`).
:func:`build_not_analysable_pdf` makes the one-page report of a series that could not be analysed.

All text is set in embedded DejaVu fonts (:mod:`reports.pdf_layout`).  The encapsulated form
for PACS is made by :func:`reports.encapsulated_pdf.build_encapsulated_pdf`.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import Any
from xml.sax.saxutils import escape

from pydicom import Dataset
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Image, KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from models.findings import LOBE_NAMES, REGION_NAMES, Findings, ModelRun
from reports import codes
from reports.charts import lung_function_chart
from reports.identity import (
    STATUS_WORDS,
    ReportContext,
    banner_text,
    check_reasons,
    check_source_series,
    format_person_name,
    identity_source,
    index_source_headers,
    model_words,
    models_not_run,
    validate_findings,
)
from reports.keyimages import KeyImage, png_bytes, render_key_images
from reports.pdf_layout import (
    FONT,
    FONT_BOLD,
    GRID,
    NOT_AVAILABLE,
    RED,
    TABLE_FONT,
    Text,
    box,
    dicom_date,
    fmt,
    paragraph_styles,
    region_label,
)
from reports.pdf_quantitative import findings_block, zone_table
from reports.results_summary import (
    ResultRow,
    i3dr_digits,
    i3dr_unit,
    not_available,
    plain_reason,
    result_summary,
    validation_words,
)
from reports.severity import severity_category

__all__ = ["PDF_TITLE", "build_not_analysable_pdf", "build_pdf"]

#: Document title, also the DocumentTitle (0042,0010) of the encapsulated PDF.
PDF_TITLE = "lungcds chest CT analysis (decision support)"
_PAGE_MARGIN = 15 * mm
_BANNER_HEIGHT = 11 * mm
#: Most the patient line on top of every page may take (it wraps only for very long names).
_RUNNING_HEADER_HEIGHT = 8 * mm
#: Largest side of a key image on the page (both fit on page 1 under header and summary).
_KEY_IMAGE_SIDE = 76 * mm


def _dicom_time(value: object) -> str:
    text = str(value or "")
    return f"{text[:2]}:{text[2:4]}:{text[4:6]}" if len(text) >= 6 and text[:6].isdigit() else text


def _header_table(header: Dataset, text: Text, styles: dict[str, ParagraphStyle]) -> Table:
    """Patient, study and series of the source, as every DICOM object of the analysis carries them."""
    series = str(header.get("SeriesDescription", "") or "")
    number = header.get("SeriesNumber")
    if number is not None and str(number) != "":
        series = f"{series} (series {number})".strip()
    patient_id = str(header.get("PatientID", "") or "")
    issuer = str(header.get("IssuerOfPatientID", "") or "")
    study_date = f"{dicom_date(header.get('StudyDate'))} {_dicom_time(header.get('StudyTime'))}".strip()
    rows = [
        ("Patient name", format_person_name(header.get("PatientName"))),
        ("Patient ID", f"{patient_id} (issuer {issuer})" if issuer else patient_id),
        ("Birth date", dicom_date(header.get("PatientBirthDate"))),
        ("Sex", str(header.get("PatientSex", "") or "")),
        ("Referring physician", format_person_name(header.get("ReferringPhysicianName"))),
        ("Study date", study_date),
        ("Accession number", str(header.get("AccessionNumber", "") or "")),
        ("Study ID", str(header.get("StudyID", "") or "")),
        ("Study description", str(header.get("StudyDescription", "") or "")),
        ("Series description", series),
    ]
    cells = [
        [Paragraph(f"<b>{label}</b>", styles["small"]), Paragraph(text.markup(value) or "&nbsp;", styles["small"])]
        for label, value in rows
    ]
    half = (len(cells) + 1) // 2
    data = [cells[i] + (cells[i + half] if i + half < len(cells) else ["", ""]) for i in range(half)]
    data.append(
        [
            Paragraph("<b>Study Instance UID</b>", styles["small"]),
            Paragraph(escape(str(header.get("StudyInstanceUID", ""))), styles["small"]),
            "",
            "",
        ]
    )
    table = Table(data, colWidths=[36 * mm, 54 * mm, 36 * mm, 54 * mm])
    table.setStyle(
        TableStyle(
            [
                TABLE_FONT,
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                ("SPAN", (1, -1), (-1, -1)),
            ]
        )
    )
    return table


def _statementbox(
    styles: dict[str, ParagraphStyle], statements: Sequence[str] = (codes.WEIGHT_FREE_STATEMENT,)
) -> Table:
    """The boxed statement: decision support, not a diagnosis; what the software is; ``statements``."""
    content: list[Any] = [
        Paragraph(escape(codes.DECISION_SUPPORT_STATEMENT), styles["statement"]),
        Spacer(1, 2 * mm),
        Paragraph(escape(codes.SOFTWARE_STATEMENT), styles["body"]),
    ]
    for statement in statements:
        content += [Spacer(1, 1.5 * mm), Paragraph(escape(statement), styles["body"])]
    return box(content, colors.HexColor("#1A237E"), colors.HexColor("#FFF8E1"))


def _legend(entries: Sequence[tuple[str, tuple[int, int, int]]], styles: dict[str, ParagraphStyle]) -> Table | None:
    """The colour key of one key image: a swatch and its label per entry, two entries per row.

    Swatches are outlined so that a white or pale colour (the dotted rind line) stays visible
    on paper.
    """
    if not entries:
        return None
    rows: list[list[Any]] = []
    cells: list[tuple[Any, ...]] = []
    for index, (label, rgb) in enumerate(entries):
        row, column = divmod(index, 2)
        if column == 0:
            rows.append(["", "", "", ""])
        rows[row][2 * column + 1] = Paragraph(escape(label), styles["small"])
        swatch = (2 * column, row)
        cells.append(("BACKGROUND", swatch, swatch, colors.Color(*(c / 255 for c in rgb))))
        cells.append(("BOX", swatch, swatch, 0.5, colors.grey))
    legend = Table(rows, colWidths=[4 * mm, 39 * mm] * 2, hAlign="CENTER")
    legend.setStyle(TableStyle([TABLE_FONT, *cells, ("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))
    return legend


def _key_images(key_images: Sequence[KeyImage], styles: dict[str, ParagraphStyle]) -> list[Any]:
    """The key images two per row, each with its caption and its own colour key below it."""
    cells: list[list[Any]] = []
    for key in key_images:
        w, h = key.image.size
        width = min(_KEY_IMAGE_SIDE, _KEY_IMAGE_SIDE * w / h)
        picture = Image(io.BytesIO(png_bytes(key.image)), width=width, height=width * h / w)
        cell: list[Any] = [picture, Paragraph(escape(key.caption), styles["caption"])]
        legend = _legend(key.legend, styles)
        if legend is not None:
            cell += [Spacer(1, 1.5 * mm), legend]
        cells.append(cell)
    rows = [cells[i : i + 2] + [[]] * (2 - len(cells[i : i + 2])) for i in range(0, len(cells), 2)]
    flow: list[Any] = [Paragraph("Key images (lung window W1500/L-600)", styles["h2"])]
    for row in rows:
        grid = Table([row], colWidths=[90 * mm, 90 * mm])
        grid.setStyle(
            TableStyle([TABLE_FONT, ("VALIGN", (0, 0), (-1, -1), "TOP"), ("ALIGN", (0, 0), (-1, -1), "CENTER")])
        )
        flow.append(grid)  # one row: never split, and the heading keeps with the first
    return flow


def _measurement_rows(
    findings: Findings, names: list[str], text: Text, styles: dict[str, ParagraphStyle]
) -> tuple[list[list[Any]], list[Any], list[tuple[Any, ...]]]:
    """Table rows of ``names`` (a withheld region says why instead of numbers), notes, row styles."""
    header = [
        "Region",
        "Volume (mL)",
        "Functional volume (mL)",
        "% < -950 HU",
        "15th perc. (HU)",
        "Mean (HU)",
        "HAA (%)",
    ]
    data: list[list[Any]] = [[Paragraph(f"<b>{h}</b>", styles["small"]) for h in header]]
    notes: list[Any] = []
    spans: list[tuple[Any, ...]] = []
    for name in names:
        m = findings.measurements.get(name)
        if m is None:
            reasons = "; ".join(w.reason for w in findings.withheld_values("measurements", name))
            row = len(data)
            spans.append(("SPAN", (1, row), (-1, row)))
            data.append(
                [
                    Paragraph(text.markup(region_label(name)), styles["small"]),
                    Paragraph(f'<font color="#C62828">{text.markup(reasons)}</font>', styles["small"]),
                ]
                + [""] * 5
            )
            continue
        data.append(
            [
                Paragraph(text.markup(region_label(name)), styles["small"]),
                fmt(m.volume_ml, 1),
                fmt(m.fpv_ml, 1),
                fmt(m.laa950_pct, 1),
                fmt(m.perc15_hu, 0),
                fmt(m.mean_hu, 0),
                fmt(m.haa_pct, 1),
            ]
        )
        if m.note:
            notes.append(Paragraph(f"{text.markup(region_label(name))}: {text.markup(m.note)}", styles["small"]))
    return data, notes, spans


def _measurement_table(findings: Findings, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """One table per mask model: the weight-free lung mask, then each learned mask under a heading
    naming its model and provenance, with the UNVALIDATED statement when it applies."""
    regions = [n for n in REGION_NAMES if n in findings.measurements or findings.withheld_values("measurements", n)]
    regions += sorted(n for n in findings.measurements if n not in REGION_NAMES)
    by_model: dict[str, list[str]] = {}
    for name in regions:
        run = findings.mask_run(name)
        assert run is not None  # Findings requires a mask run for every measured region
        by_model.setdefault(run.name, []).append(name)
    if not by_model:
        return [Paragraph("Measurements", styles["h2"]), Paragraph("No region could be measured.", styles["body"])]
    flow: list[Any] = []
    for model, names in by_model.items():
        run = findings.models[model]
        if run.provenance == "weight_free":
            heading = "Measurements (weight-free lung mask)"
        else:
            heading = f"Measurements on learned masks: model {run.name} (version {run.version}), {run.provenance_words}"
        data, notes, spans = _measurement_rows(findings, names, text, styles)
        table = Table(data, colWidths=[40 * mm, 20 * mm, 26 * mm, 22 * mm, 24 * mm, 24 * mm, 24 * mm], repeatRows=1)
        table.setStyle(GRID)
        table.setStyle(TableStyle([("ALIGN", (1, 1), (-1, -1), "RIGHT"), *spans]))
        flow += [Paragraph(text.markup(heading), styles["h2"])]
        flow += _caveat(run.unvalidated_statement, styles) + [table] + notes
    return flow


def _caveat(statement: str | None, styles: dict[str, ParagraphStyle]) -> list[Any]:
    return [Paragraph(escape(statement), styles["unvalidated"])] if statement else []


def _provenance(run: ModelRun, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """ "Model <name>, version <v>, <provenance>, weights SHA-256 <sha>" and the UNVALIDATED caveat, if any."""
    parts = [f"Model: {run.name}, version {run.version}", run.provenance_words]
    if run.weights_sha256:
        parts.append(f"weights SHA-256 {run.weights_sha256}")
    if run.weights_origin:
        parts.append(run.weights_origin)
    if run.validation_statement:
        parts.append(f"validation: {run.validation_statement}")
    if run.inputs:
        parts.append(f"computed from {', '.join(run.inputs)}")
    return [Paragraph(text.markup(", ".join(parts)), styles["small"])] + _caveat(run.unvalidated_statement, styles)


def _withheld(findings: Findings, output: str, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """The reasons of the withheld values of ``output``, in red."""
    return [
        Paragraph(f'<font color="#C62828">{text.markup(w.reason)}</font>', styles["small"])
        for w in findings.withheld_values(output)
    ]


def _qualitybox(findings: Findings, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """Red-bordered box with the reasons of a failed lung-mask quality gate."""
    quality = findings.quality
    if quality is None or quality.plausible:
        return []
    content: list[Any] = [
        Paragraph(
            "<b>Lung mask quality check failed</b>: models that depend on the lung mask were skipped.", styles["body"]
        )
    ]
    content += [Paragraph(f"&bull; {text.markup(reason)}", styles["body"]) for reason in quality.reasons]
    return [Spacer(1, 3 * mm), box(content, RED, colors.HexColor("#FFEBEE"))]


def _severity_section(findings: Findings, run: ModelRun, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    severity = findings.severity
    if severity is None:
        headline = [Paragraph("<b>CT severity score</b>: not shown", styles["body"])]
        return [KeepTogether(headline + _withheld(findings, "severity", text, styles) + _provenance(run, text, styles))]
    data: list[list[Any]] = [
        [Paragraph(f"<b>{h}</b>", styles["small"]) for h in ("Lobe", "Involvement (%)", "CTSS (0-5)")]
    ]
    for lobe in LOBE_NAMES:
        if lobe in severity.lobes:
            values = severity.lobes[lobe]
            data.append([region_label(lobe), fmt(values["involvement_pct"], 1), f"{int(values['ctss'])}"])
    category = severity_category(severity.total_ctss)
    data.append(["total", "", f"{severity.total_ctss} / 25 ({category})"])
    table = Table(data, colWidths=[40 * mm, 30 * mm, 40 * mm], repeatRows=1, hAlign="LEFT")
    table.setStyle(GRID)
    table.setStyle(TableStyle([("FONTNAME", (0, -1), (-1, -1), FONT_BOLD)]))
    flow: list[Any] = [
        Paragraph(
            f"<b>CT severity score</b>: {severity.total_ctss} of 25, {category}",
            styles["body"],
        ),
        table,
        Paragraph(
            "Per lobe 0 = no involvement, 1 &lt; 5 %, 2 = 5-25 %, 3 = 26-50 %, 4 = 51-75 %, 5 = 76-100 %; "
            "total 1-5 mild, 6-14 moderate, 15-25 severe (seeds/003, after Pan et al.).",
            styles["small"],
        ),
    ]
    return [KeepTogether(flow + _provenance(run, text, styles))]


def _stoic_section(findings: Findings, run: ModelRun, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """Ensemble probabilities, then one row per configured member: its outputs or why it did not run."""
    stoic = findings.stoic
    if stoic is None:
        return []
    headline = (
        f"<b>STOIC2021 ({text.markup(stoic.config)})</b>: probability of COVID-19 "
        f"{_value_or_withheld(findings, 'stoic', '', 'p_covid', fmt(stoic.p_covid, 2))}, "
        f"probability of severe outcome (intubation or death within one month, among COVID-19 patients) "
        f"{_value_or_withheld(findings, 'stoic', '', 'p_severe', fmt(stoic.p_severe, 2))}"
    )
    header = ["Member", "P(COVID-19)", "P(severe)", "Averaged for", "Status and validation"]
    data: list[list[Any]] = [[Paragraph(f"<b>{h}</b>", styles["small"]) for h in header]]
    names = list(dict.fromkeys([*stoic.averaged.get("p_severe", ()), *stoic.averaged.get("p_covid", ())]))
    names += [name for name in findings.models if name.startswith("stoic_") and name not in names]
    for name in names:
        outputs = stoic.members.get(name, {})
        used = [
            words
            for key, words in (("p_covid", "COVID-19"), ("p_severe", "severity"))
            if name in stoic.averaged.get(key, ())
        ]
        member = findings.models.get(name)
        status = _not_available(member, text, "no run record") if member is None or member.status != "ran" else "ran"
        caveat = member.unvalidated_statement if member is not None else None
        if caveat is not None:
            status += f' <font color="#C62828">({escape(caveat)})</font>'
        data.append(
            [
                Paragraph(text.markup(name), styles["small"]),
                _value_or_withheld(findings, "stoic", name, "p_covid", fmt(outputs.get("p_covid"), 2)),
                _value_or_withheld(findings, "stoic", name, "p_severe", fmt(outputs.get("p_severe"), 2)),
                Paragraph(", ".join(used) or "-", styles["small"]),
                Paragraph(status, styles["small"]),
            ]
        )
    table = Table(data, colWidths=[32 * mm, 20 * mm, 20 * mm, 28 * mm, 80 * mm], repeatRows=1, hAlign="LEFT")
    table.setStyle(GRID)
    flow: list[Any] = [Paragraph(headline, styles["body"]), table]
    flow += [Paragraph(text.markup(note), styles["small"]) for note in stoic.notes]
    flow += _withheld(findings, "stoic", text, styles)
    return [KeepTogether(flow)] + _provenance(run, text, styles)


def _value_or_withheld(findings: Findings, output: str, site: str, quantity: str, value: str) -> str:
    """``value``, or "withheld" (in red) when the plausibility gate withheld it (the reason is listed below)."""
    if any(w.quantity in ("", quantity) for w in findings.withheld_values(output, site)):
        return '<font color="#C62828">withheld</font>'
    return value


def _i3dr_section(findings: Findings, run: ModelRun, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    i3dr = findings.i3dr
    if i3dr is None:
        return []
    withheld = {w.quantity for w in findings.withheld_values("i3dr")}
    keys = [
        k
        for k in codes.I3DR_OUTPUT_CODES
        if k in i3dr.patient or k in withheld or any(k in v for v in i3dr.lobes.values())
    ]
    sites = [("patient", i3dr.patient)] + [(lobe, i3dr.lobes[lobe]) for lobe in LOBE_NAMES if lobe in i3dr.lobes]
    header = ["Site"] + [f"{codes.I3DR_OUTPUT_LABELS[k]} ({i3dr_unit(k)})" for k in keys]
    data: list[list[Any]] = [[Paragraph(f"<b>{escape(h)}</b>", styles["heading_cell"]) for h in header]]
    for site, values in sites:
        where = "patient" if site == "patient" else "lobes"
        data.append(
            [Paragraph(text.markup(region_label(site)), styles["small"])]
            + [
                Paragraph(
                    _value_or_withheld(findings, "i3dr", where, k, fmt(values.get(k), i3dr_digits(k))),
                    styles["small"],
                )
                for k in keys
            ]
        )
    width = min(23 * mm, 142 * mm / max(1, len(keys)))
    table = Table(data, colWidths=[38 * mm] + [width] * len(keys), repeatRows=1, hAlign="LEFT")
    table.setStyle(GRID)
    table.setStyle(TableStyle([("ALIGN", (1, 1), (-1, -1), "RIGHT")]))
    flow: list[Any] = [
        Paragraph(
            "<b>I3Dr lung function estimates</b> (PV: lung volume, FPV: functional lung volume, FEV1 and FVC "
            "before/after bronchodilator, DLCO: diffusing capacity for CO). Patient: model A; lobes: model B "
            "rescaled by model A so that the lobes sum to the patient estimate (thesis 2.3.1).",
            styles["body"],
        ),
        table,
    ]
    flow += [Paragraph(text.markup(note), styles["small"]) for note in i3dr.notes]
    flow += _withheld(findings, "i3dr", text, styles)
    chart = lung_function_chart(i3dr, 180 * mm, 62 * mm)
    if chart is not None:
        flow += [
            Spacer(1, 2 * mm),
            chart,
            Paragraph(
                "Grey: patient-level estimate; coloured: lobar estimates stacked in the lobe colours of the key "
                "images (after thesis figure 2.4). The number on a stacked bar is the sum of the lobes.",
                styles["caption"],
            ),
        ]
    return [KeepTogether(flow)] + _provenance(run, text, styles)


def _validation_words(run: ModelRun | None) -> str:
    """The provenance of a run's outputs in a few words, UNVALIDATED ones in red bold."""
    words = validation_words(run)
    if words is None:
        return NOT_AVAILABLE
    if words[1]:
        return f'<font color="#C62828"><b>UNVALIDATED ({words[0]})</b></font>'
    return words[0]


def _not_available(run: ModelRun | None, text: Text, what: str) -> str:
    return text.markup(not_available(run, what))


def _red(text: str) -> str:
    return f'<font color="#C62828">{text}</font>'


#: Why a model did not run, in the words of the not-run line (None: no run record at all).
_NOT_RUN_WORDS: dict[str | None, str] = {
    "not_installed": "not installed at this site",
    "skipped": "skipped",
    "failed": "failed",
    None: "not computed",
}
_NO_WEIGHTS = "no weights installed"


def _not_run_line(findings: Findings, missing: Sequence[tuple[str, str]], text: Text) -> str:
    """One sentence naming every model that did not run, grouped by why, e.g. "Not run: CO-RADS and
    I3Dr: not installed at this site (no weights installed); ...".

    ``missing`` adds outputs without any run record, as (output, why).  The detailed reason of each
    model (the STOIC2021 members, the install route) is on the technical details page.
    """
    groups: dict[str, list[str]] = {}
    for run in models_not_run(findings):
        reason = plain_reason(run.reason) or "no reason given"
        if run.status == "not_installed" and reason.startswith(_NO_WEIGHTS):
            reason = _NO_WEIGHTS
        groups.setdefault(f"{_NOT_RUN_WORDS[run.status]} ({reason})", []).append(model_words(run))
    for output, why in missing:
        groups.setdefault(f"{_NOT_RUN_WORDS[None]} ({why})", []).append(output)
    if not groups:
        return ""
    parts = [f"{', '.join(names)}: {why}" for why, names in groups.items()]
    return f"<b>Not run</b>: {text.markup('; '.join(parts))}. Each model's record is on the technical details page."


def _summary(findings: Findings, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """Page-1 table of the main results (:func:`reports.results_summary.result_summary`), each with
    its model, version and provenance, and the models that did not run in one line under it
    (:func:`_not_run_line`).

    An output of a model that ran but is missing says why (or why the plausibility gate withheld
    it, in red), never a blank.
    """
    summary = result_summary(findings)
    flow: list[Any] = [Paragraph("Results", styles["h2"]), _results_table(summary.rows, text, styles)]
    not_run = _not_run_line(findings, summary.missing, text)
    if not_run:
        flow.append(Paragraph(not_run, styles["small"]))
    return flow


def _markup(row: ResultRow, text: Text) -> str:
    """A result's value as markup: withheld reasons in red."""
    return "".join(_red(text.markup(f.text)) if f.withheld else text.markup(f.text) for f in row.value)


def _results_table(rows: Sequence[ResultRow], text: Text, styles: dict[str, ParagraphStyle]) -> Table:
    header = ["Result", "Value", "Model (version)", "Provenance"]
    data: list[list[Any]] = [[Paragraph(f"<b>{h}</b>", styles["small"]) for h in header]]
    for row in rows:
        run = row.run
        model = f"{text.markup(run.name)} ({text.markup(run.version)})" if run is not None else NOT_AVAILABLE
        value = _markup(row, text)
        data.append(
            [
                Paragraph(f"<b>{escape(row.label)}</b>", styles["small"]),
                Paragraph(value if row.present else f"<i>{value}</i>", styles["small"]),
                Paragraph(model, styles["small"]),
                Paragraph(_validation_words(run) if row.present else NOT_AVAILABLE, styles["small"]),
            ]
        )
    table = Table(data, colWidths=[42 * mm, 66 * mm, 32 * mm, 40 * mm], repeatRows=1)
    table.setStyle(GRID)
    table.setStyle(TableStyle([("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)]))
    return table


def _output_tables(findings: Findings, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """Per model output (present or withheld): its values, the reasons of withheld ones, its provenance."""
    shown = [o for o in ("corads", "stoic", "severity", "i3dr") if getattr(findings, o) or findings.withheld_values(o)]
    if not shown:
        return []
    flow: list[Any] = [Paragraph("Model outputs", styles["h2"])]
    if "corads" in shown:
        corads = findings.corads
        headline = (
            f"category {corads.category} (ensemble score {corads.score:.2f})" if corads is not None else "not shown"
        )
        flow += [Paragraph(f"<b>CO-RADS</b>: {headline}", styles["body"])]
        flow += _withheld(findings, "corads", text, styles) + _provenance(findings.models["corads"], text, styles)
    sections = {"stoic": _stoic_section, "severity": _severity_section, "i3dr": _i3dr_section}
    for output, section in sections.items():
        if output in shown:
            flow += [Spacer(1, 2 * mm)] + section(findings, findings.models[output], text, styles)
    return flow


#: How a model that is not installed gets installed, in words for the technical page.
_INSTALL_WORDS = (
    "A model listed as not installed has no weights at this site. The site's administrator can install "
    "weights with the model installation command of the lungcds command-line tool (see its documentation); "
    "analyses made after that include the model's results, with the provenance of the installed weights."
)


def _technical_page(findings: Findings, text: Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    """The last page: every model with its status, reason, version, provenance and weights SHA-256.

    The model column is as wide as the longest registry name, so that no identifier is broken
    inside (the "identifier" style never splits a word).
    """
    flow: list[Any] = [
        PageBreak(),
        Paragraph("Technical details", styles["h2"]),
        Paragraph(
            "Every model of this analysis: whether it ran and why, its version, where its outputs come from "
            "(provenance) and the SHA-256 fingerprint of the weights file it used.",
            styles["body"],
        ),
    ]
    if not findings.models:
        return flow + [Paragraph("No model is registered.", styles["body"])]
    identifier = styles["identifier"]
    widest = max(stringWidth(f"({name})", identifier.fontName, identifier.fontSize) for name in findings.models)
    model_width = max(26 * mm, widest + 13)  # the cell's padding is 6 points each side
    widths = [model_width, 18 * mm, 0.0, 17 * mm, 34 * mm, 33 * mm]
    widths[2] = 180 * mm - sum(widths)
    header = ["Model", "Status", "Reason", "Version", "Provenance", "Weights SHA-256"]
    data: list[list[Any]] = [[Paragraph(f"<b>{h}</b>", styles["small"]) for h in header]]
    for run in findings.models.values():
        validation = run.validation or NOT_AVAILABLE
        if run.unvalidated_statement is not None:
            validation = f'<font color="#C62828"><b>{escape(validation)}</b></font>'
        else:
            validation = text.markup(validation)
        sha = run.weights_sha256 or "no weights"
        data.append(
            [
                Paragraph(_model_cell(run, text), identifier),
                Paragraph(STATUS_WORDS[run.status], styles["small"]),
                Paragraph(text.markup(plain_reason(run.reason)) or "&nbsp;", styles["small"]),
                Paragraph(text.markup(run.version), styles["small"]),
                Paragraph(validation, styles["small"]),
                Paragraph("<br/>".join(sha[i : i + 22] for i in range(0, len(sha), 22)), styles["tiny"]),
            ]
        )
    table = Table(data, colWidths=widths, repeatRows=1)
    table.setStyle(GRID)
    flow.append(table)
    if any(run.status == "not_installed" for run in findings.models.values()):
        flow.append(Paragraph(_INSTALL_WORDS, styles["body"]))
    return flow


def _model_cell(run: ModelRun, text: Text) -> str:
    """A model's words over its registry name (the name alone when it has no other words)."""
    words = model_words(run)
    if words == run.name:
        return text.markup(run.name)
    return f"{text.markup(words)}<br/>({text.markup(run.name)})"


def _running_header(header: Dataset, text: Text) -> str:
    """Markup of the line on top of every page: who and which study (name, IDs, dates, accession)."""
    patient_id = str(header.get("PatientID", "") or "")
    issuer = str(header.get("IssuerOfPatientID", "") or "")
    parts = [
        f"<b>{text.markup(format_person_name(header.get('PatientName')) or 'name not recorded')}</b>",
        f"Patient ID {text.markup(patient_id)}" + (f" (issuer {text.markup(issuer)})" if issuer else ""),
        f"born {text.markup(dicom_date(header.get('PatientBirthDate')) or 'not recorded')}",
        f"study date {text.markup(dicom_date(header.get('StudyDate')) or 'not recorded')}",
    ]
    accession = str(header.get("AccessionNumber", "") or "")
    if accession:
        parts.append(f"accession {text.markup(accession)}")
    return " &middot; ".join(parts)


class _NumberedCanvas(Canvas):  # type: ignore[misc]  # reportlab ships no type information
    """A canvas that holds its pages back until the document is complete, so that each page can
    be stamped with "page x of y" (the total is known only then), without a second layout pass."""

    def __init__(self, *args: Any, stamp: Callable[[Canvas, int, int], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stamp = stamp
        self._held_pages: list[dict[str, Any]] = []

    def showPage(self) -> None:  # noqa: N802 (reportlab's name)
        self._held_pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._held_pages)
        for number, state in enumerate(self._held_pages, start=1):
            self.__dict__.update(state)
            self._stamp(self, number, total)
            super().showPage()
        super().save()


def _page_stamp(
    identity: str, banner: str | None, footer: str, style: ParagraphStyle
) -> Callable[[Canvas, int, int], None]:
    """What every page carries: the red banner (when given), the patient line with "page x of y", the footer."""

    def stamp(canvas: Canvas, number: int, total: int) -> None:
        width, height = A4
        top = height - 4 * mm
        canvas.saveState()
        if banner is not None:
            canvas.setFillColor(RED)
            canvas.rect(0, top - _BANNER_HEIGHT, width, _BANNER_HEIGHT, stroke=0, fill=1)
            canvas.setFillColor(colors.white)
            canvas.setFont(FONT_BOLD, 13)
            canvas.drawCentredString(width / 2, top - _BANNER_HEIGHT + 4.5 * mm, banner)
            top -= _BANNER_HEIGHT
        page = f"page {number} of {total}"
        canvas.setFillColor(colors.black)
        canvas.setFont(FONT_BOLD, style.fontSize)
        canvas.drawRightString(width - _PAGE_MARGIN, top - 5 * mm, page)
        line = Paragraph(identity, style)
        available = width - 2 * _PAGE_MARGIN - stringWidth(page, FONT_BOLD, style.fontSize) - 4 * mm
        _, line_height = line.wrap(available, _RUNNING_HEADER_HEIGHT)
        line.drawOn(canvas, _PAGE_MARGIN, top - 5 * mm - line_height + style.fontSize + 1)
        canvas.setStrokeColor(colors.grey)
        canvas.setLineWidth(0.4)
        canvas.line(_PAGE_MARGIN, top - 7 * mm, width - _PAGE_MARGIN, top - 7 * mm)
        canvas.setFillColor(colors.grey)
        canvas.setFont(FONT, 7)
        canvas.drawString(_PAGE_MARGIN, 8 * mm, footer)
        canvas.restoreState()

    return stamp


def build_pdf(
    findings: Findings,
    source_headers: Sequence[Dataset],
    context: ReportContext,
    eligibility_reasons: Sequence[str] = (),
    *,
    compress: bool = True,
    key_images: Sequence[KeyImage] | None = None,
) -> bytes:
    """Render the PDF report.

    Parameters
    ----------
    findings : Findings
        The analysis to report.
    source_headers : sequence of pydicom.Dataset
        Headers of the analysed CT series; the patient and study header comes from them.
    context : ReportContext
        Device identity (software version in the footer and PDF metadata).
    eligibility_reasons : sequence of str
        Notes from the eligibility check, printed under "Eligibility notes".
    compress : bool
        Compress page content streams (False keeps the text greppable, for tests).
    key_images : sequence of KeyImage or None
        The key images of ``findings`` when the caller has rendered them already (the key-image
        Secondary Capture shows the same ones); rendered here when None.

    Returns
    -------
    bytes
        A PDF 1.4 document.

    Raises
    ------
    ValueError
        When findings and headers are inconsistent (see
        :func:`reports.identity.index_source_headers`).
    """
    validate_findings(findings)
    header = identity_source(findings, index_source_headers(findings, source_headers))
    reasons = [str(reason) for reason in eligibility_reasons]
    styles = paragraph_styles()
    text = Text()

    story: list[Any] = [
        Paragraph(escape(PDF_TITLE), styles["title"]),
        _header_table(header, text, styles),
        Spacer(1, 4 * mm),
        _statementbox(styles),
    ]
    story += _qualitybox(findings, text, styles)
    story += findings_block(findings, text, styles)
    story += _summary(findings, text, styles)
    story += _key_images(render_key_images(findings) if key_images is None else key_images, styles)
    if reasons:
        story.append(Paragraph("Eligibility notes", styles["h2"]))
        story += [Paragraph(f"&bull; {text.markup(reason)}", styles["body"]) for reason in reasons]
    if findings.warnings:
        story.append(Paragraph("Analysis warnings", styles["h2"]))
        story += [Paragraph(f"&bull; {text.markup(warning)}", styles["body"]) for warning in findings.warnings]
    story += _measurement_table(findings, text, styles)
    story += zone_table(findings, text, styles)
    story += _output_tables(findings, text, styles)
    story += _technical_page(findings, text, styles)
    running_header = _running_header(header, text)
    _transliteration_note(story, text, styles)
    footer = (
        f"{context.manufacturer_model_name} {context.software_version} (pipeline {findings.pipeline_version}) "
        "- decision support, not a diagnosis"
    )
    banner = banner_text(findings)
    stamp = _page_stamp(running_header, banner, footer, styles["small"])
    return _render(story, context, stamp, banner is not None, compress)


def _transliteration_note(story: list[Any], text: Text, styles: dict[str, ParagraphStyle]) -> None:
    if text.transliterated:
        story.append(
            Paragraph(
                "Note: some characters (e.g. in the patient name) have no font on this system and are "
                "shown transliterated; the DICOM header holds the exact spelling.",
                styles["small"],
            )
        )


def _render(
    story: list[Any],
    context: ReportContext,
    stamp: Callable[[Canvas, int, int], None],
    banner: bool,
    compress: bool,
) -> bytes:
    """Lay ``story`` out on A4 pages, each stamped by ``stamp`` (room is left on top for the banner, if any).

    Images are written as binary streams, not ASCII85 text: reportlab encodes ASCII85 in pure
    Python when its C accelerator is absent, which cost a quarter of the rendering time for the
    key images and made the file a fifth larger (PDF allows binary streams; PS3.3 A.45 takes any PDF).
    """
    rl_config.useA85 = 0
    top = _PAGE_MARGIN + (_BANNER_HEIGHT + 4 * mm if banner else 0)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=_PAGE_MARGIN,
        rightMargin=_PAGE_MARGIN,
        topMargin=top,
        bottomMargin=_PAGE_MARGIN,
        title=PDF_TITLE,
        author=context.manufacturer,
        subject="Chest CT decision support report",
        creator=f"{context.manufacturer_model_name} {context.software_version}",
        pageCompression=1 if compress else 0,
        initialFontName=FONT,
    )
    doc.build(story, canvasmaker=functools.partial(_NumberedCanvas, stamp=stamp))
    return buffer.getvalue()


def build_not_analysable_pdf(
    source_headers: Sequence[Dataset],
    context: ReportContext,
    reasons: Sequence[str],
    pipeline_version: str,
    *,
    compress: bool = True,
) -> bytes:
    """Render the one-page PDF saying that a series could not be analysed, and why.

    Parameters
    ----------
    source_headers : sequence of pydicom.Dataset
        Headers of the series; the patient and study header comes from the first.
    context : ReportContext
        Device identity (software version in the footer and PDF metadata).
    reasons : sequence of str
        Why the series could not be analysed (at least one).
    pipeline_version : str
        Pipeline version of the job, printed in the footer.
    compress : bool
        Compress page content streams.

    Returns
    -------
    bytes
        A one-page PDF 1.4 document (long reason lists may flow onto a second page).

    Raises
    ------
    TypeError, ValueError
        When the headers are not one series of one study, there is no reason or a blank one,
        or the pipeline version is empty.
    """
    checked = check_reasons(reasons)
    if not pipeline_version:
        raise ValueError("pipeline_version must not be empty")
    check_source_series(source_headers)
    styles = paragraph_styles()
    text = Text()
    story: list[Any] = [
        Paragraph(escape(PDF_TITLE), styles["title"]),
        _header_table(source_headers[0], text, styles),
        Spacer(1, 4 * mm),
        _statementbox(styles, statements=()),
        Spacer(1, 4 * mm),
        box(
            [
                Paragraph("<b>Series not analysable: no results</b>", styles["statement"]),
                Spacer(1, 1.5 * mm),
                Paragraph(escape(codes.NOT_ANALYSABLE_STATEMENT), styles["body"]),
            ]
            + [Paragraph(f"&bull; {text.markup(reason)}", styles["body"]) for reason in checked],
            RED,
            colors.HexColor("#FFEBEE"),
        ),
        Spacer(1, 3 * mm),
        Paragraph(
            f"{len(source_headers)} image(s) of this series were received. Send a series that meets the "
            "requirements above to obtain measurements.",
            styles["body"],
        ),
    ]
    running_header = _running_header(source_headers[0], text)
    _transliteration_note(story, text, styles)
    footer = (
        f"{context.manufacturer_model_name} {context.software_version} (pipeline {pipeline_version}) "
        "- decision support, not a diagnosis"
    )
    stamp = _page_stamp(running_header, None, footer, styles["small"])
    return _render(story, context, stamp, False, compress)
