"""The human-readable PDF report of one lungcds analysis (reportlab).

Layout (A4): patient and study header; a prominent statement that this is decision support,
not a diagnosis, with measurements from a classical weight-free lung mask; eligibility notes
and pipeline warnings; axial and coronal key images with a colour legend; per-region
measurements; model outputs when present; and every model with status, reason, version and
weights SHA-256.  When any shown output is unvalidated, every page carries a red banner.

Static text uses the standard Helvetica fonts (WinAnsi).  Dynamic text (names, reasons) that
WinAnsi cannot encode is set in a Unicode TrueType font found on the system (DejaVu, Noto,
Liberation, FreeSans) or, for Chinese/Japanese/Korean, in reportlab's built-in CID fonts;
characters no available font has are transliterated and a note says so.  The encapsulated
form for PACS is made by :func:`reports.encapsulated_pdf.build_encapsulated_pdf`.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from pydicom import Dataset
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from models.findings import LOBE_NAMES, REGION_NAMES, Findings
from reports import codes
from reports.identity import (
    STATUS_WORDS,
    ReportContext,
    banner_text,
    format_person_name,
    index_source_headers,
    model_display_name,
    output_provenance,
    unvalidated_statement,
    validate_findings,
)
from reports.keyimages import legend_entries, png_bytes, render_key_images

__all__ = ["PDF_TITLE", "UNICODE_FONT_CANDIDATES", "build_pdf"]

#: Document title, also the DocumentTitle (0042,0010) of the encapsulated PDF.
PDF_TITLE = "lungcds chest CT analysis (decision support)"
#: TrueType fonts tried, in order, for text outside WinAnsi (Greek, Cyrillic, ...).
UNICODE_FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
)
_UNICODE_FONT = "LungcdsUnicode"
#: reportlab's built-in CID fonts (Adobe Asian font packs; no font file needed).
_CJK_FONT = "HeiseiKakuGo-W5"
_HANGUL_FONT = "HYGothic-Medium"
_PAGE_MARGIN = 15 * mm
_BANNER_HEIGHT = 11 * mm
_RED = colors.HexColor("#C62828")
_NOT_AVAILABLE = "n/a"


@dataclass(frozen=True)
class _Fonts:
    """Code points covered by the registered Unicode TrueType font (empty when none was found)."""

    unicode_glyphs: frozenset[int]


@lru_cache(maxsize=1)
def _fonts() -> _Fonts:
    """Register the fallback fonts once per process."""
    glyphs: frozenset[int] = frozenset()
    for candidate in UNICODE_FONT_CANDIDATES:
        if Path(candidate).is_file():
            font = TTFont(_UNICODE_FONT, candidate)
            pdfmetrics.registerFont(font)
            glyphs = frozenset(font.face.charToGlyph)
            break
    for name in (_CJK_FONT, _HANGUL_FONT):
        pdfmetrics.registerFont(UnicodeCIDFont(name))
    return _Fonts(unicode_glyphs=glyphs)


def _font_for(char: str, fonts: _Fonts) -> str | None:
    """Font of one character: "" for the base font, a font name, or None when none has it."""
    try:
        char.encode("cp1252")
        return ""
    except UnicodeEncodeError:
        pass
    code = ord(char)
    if code in fonts.unicode_glyphs:
        return _UNICODE_FONT
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return _HANGUL_FONT
    if (
        0x3000 <= code <= 0x30FF
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
    ):
        return _CJK_FONT
    return None


def _transliterate(char: str) -> str:
    """ASCII approximation of a character no font can show ("?" as last resort)."""
    decomposed = unicodedata.normalize("NFKD", char)
    ascii_text = decomposed.encode("ascii", "ignore").decode("ascii")
    return ascii_text or "?"


class _Text:
    """Builds reportlab paragraph markup from arbitrary Unicode, noting transliterations."""

    def __init__(self) -> None:
        self.fonts = _fonts()
        self.transliterated = False

    def markup(self, text: str) -> str:
        """XML-escaped paragraph markup of ``text`` with a font switch for every run that needs one."""
        runs: list[tuple[str, str]] = []
        for char in text:
            font = _font_for(char, self.fonts)
            if font is None:
                self.transliterated = True
                font, char = "", _transliterate(char)
            if runs and runs[-1][0] == font:
                runs[-1] = (font, runs[-1][1] + char)
            else:
                runs.append((font, char))
        return "".join(
            escape(chunk) if not font else f'<font name="{font}">{escape(chunk)}</font>' for font, chunk in runs
        )


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontSize=16, leading=20, spaceAfter=4),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontSize=12, leading=15, spaceBefore=8, spaceAfter=4),
        "body": ParagraphStyle("body", parent=base["BodyText"], fontSize=9, leading=11.5),
        "small": ParagraphStyle("small", parent=base["BodyText"], fontSize=7.5, leading=9.5),
        "tiny": ParagraphStyle("tiny", parent=base["BodyText"], fontName="Courier", fontSize=6, leading=7.5),
        "statement": ParagraphStyle(
            "statement", parent=base["BodyText"], fontName="Helvetica-Bold", fontSize=10.5, leading=14
        ),
        "caption": ParagraphStyle("caption", parent=base["BodyText"], fontSize=8, leading=10, alignment=TA_CENTER),
        "unvalidated": ParagraphStyle(
            "unvalidated",
            parent=base["BodyText"],
            fontName="Helvetica-Bold",
            fontSize=9,
            leading=11.5,
            textColor=_RED,
        ),
    }


_GRID = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#E8EAF0")),
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)


def _fmt(value: float | None, digits: int) -> str:
    return _NOT_AVAILABLE if value is None else f"{value:.{digits}f}"


def _dicom_date(value: object) -> str:
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def _header_table(header: Dataset, text: _Text, styles: dict[str, ParagraphStyle]) -> Table:
    series = str(header.get("SeriesDescription", "") or "")
    number = header.get("SeriesNumber")
    if number is not None and str(number) != "":
        series = f"{series} (series {number})".strip()
    rows = [
        ("Patient name", format_person_name(header.get("PatientName"))),
        ("Patient ID", str(header.get("PatientID", "") or "")),
        ("Birth date", _dicom_date(header.get("PatientBirthDate"))),
        ("Sex", str(header.get("PatientSex", "") or "")),
        ("Study date", _dicom_date(header.get("StudyDate"))),
        ("Accession number", str(header.get("AccessionNumber", "") or "")),
        ("Study description", str(header.get("StudyDescription", "") or "")),
        ("Series description", series),
    ]
    data = [
        [Paragraph(f"<b>{label}</b>", styles["body"]), Paragraph(text.markup(value) or "&nbsp;", styles["body"])]
        for label, value in rows
    ]
    table = Table(data, colWidths=[40 * mm, 140 * mm])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def _statement_box(styles: dict[str, ParagraphStyle]) -> Table:
    content = [
        Paragraph(escape(codes.DECISION_SUPPORT_STATEMENT), styles["statement"]),
        Spacer(1, 2 * mm),
        Paragraph(escape(codes.WEIGHT_FREE_STATEMENT), styles["body"]),
    ]
    box = Table([[content]], colWidths=[180 * mm])
    box.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 1.5, colors.HexColor("#1A237E")),
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#FFF8E1")),
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    return box


def _key_images(findings: Findings, styles: dict[str, ParagraphStyle]) -> list[Any]:
    images = render_key_images(findings)
    width = 86 * mm
    cells = []
    for key in images:
        w, h = key.image.size
        picture = Image(io.BytesIO(png_bytes(key.image)), width=width, height=width * h / w)
        cells.append([picture, Paragraph(escape(key.caption), styles["caption"])])
    grid = Table([cells], colWidths=[90 * mm, 90 * mm])
    grid.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("ALIGN", (0, 0), (-1, -1), "CENTER")]))
    flow: list[Any] = [Paragraph("Key images (lung window W1500/L-600)", styles["h2"]), grid]
    entries = legend_entries(findings)
    per_row = 5
    rows: list[list[Any]] = []
    swatches: list[tuple[str, tuple[int, int], tuple[int, int], colors.Color]] = []
    for start in range(0, len(entries), per_row):
        row: list[Any] = []
        for column, (label, rgb) in enumerate(entries[start : start + per_row]):
            cell = (2 * column, start // per_row)
            swatches.append(("BACKGROUND", cell, cell, colors.Color(*(c / 255 for c in rgb))))
            row += ["", Paragraph(escape(label), styles["small"])]
        rows.append(row + [""] * (2 * per_row - len(row)))
    if rows:
        legend = Table(rows, colWidths=[5 * mm, 31 * mm] * per_row, hAlign="LEFT")
        legend.setStyle(TableStyle([*swatches, ("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))
        flow += [Spacer(1, 2 * mm), legend]
    return [KeepTogether(flow)]


def _measurement_table(findings: Findings, text: _Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    names = [n for n in REGION_NAMES if n in findings.measurements]
    names += sorted(n for n in findings.measurements if n not in REGION_NAMES)
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
    notes = []
    for name in names:
        m = findings.measurements[name]
        data.append(
            [
                Paragraph(text.markup(name), styles["small"]),
                _fmt(m.volume_ml, 1),
                _fmt(m.fpv_ml, 1),
                _fmt(m.laa950_pct, 1),
                _fmt(m.perc15_hu, 0),
                _fmt(m.mean_hu, 0),
                _fmt(m.haa_pct, 1),
            ]
        )
        if m.note:
            notes.append(Paragraph(f"{escape(name)}: {text.markup(m.note)}", styles["small"]))
    flow: list[Any] = [Paragraph("Measurements (weight-free lung mask)", styles["h2"])]
    if len(data) == 1:
        return flow + [Paragraph("No region could be measured.", styles["body"])]
    table = Table(data, colWidths=[24 * mm, 22 * mm, 30 * mm, 24 * mm, 26 * mm, 24 * mm, 22 * mm], repeatRows=1)
    table.setStyle(_GRID)
    table.setStyle(TableStyle([("ALIGN", (1, 1), (-1, -1), "RIGHT")]))
    return flow + [table] + notes


def _caveat(statement: str | None, styles: dict[str, ParagraphStyle]) -> list[Any]:
    return [Paragraph(escape(statement), styles["unvalidated"])] if statement else []


def _output_tables(findings: Findings, styles: dict[str, ParagraphStyle]) -> list[Any]:
    provenance = output_provenance(findings)
    if not provenance:
        return []
    flow: list[Any] = [Paragraph("Model outputs", styles["h2"])]
    if findings.corads is not None:
        flow += [
            Paragraph(
                f"<b>CO-RADS</b>: category {findings.corads.category} (ensemble score {findings.corads.score:.2f})",
                styles["body"],
            )
        ] + _caveat(provenance["corads"].statement, styles)
    if findings.stoic is not None:
        flow += [
            Paragraph(
                f"<b>STOIC2021</b>: probability of COVID-19 {findings.stoic.p_covid:.2f}, "
                f"probability of severe outcome {findings.stoic.p_severe:.2f}",
                styles["body"],
            )
        ] + _caveat(provenance["stoic"].statement, styles)
    if findings.i3dr is not None:
        keys = list(codes.I3DR_OUTPUT_CODES)
        sites = [("patient", findings.i3dr.patient)] + [
            (lobe, findings.i3dr.lobes[lobe]) for lobe in LOBE_NAMES if lobe in findings.i3dr.lobes
        ]
        header = ["Site"] + [
            f"{codes.I3DR_OUTPUT_CODES[k].meaning} ({'mL/min/mmHg' if k == 'dlco' else 'L'})" for k in keys
        ]
        data: list[list[Any]] = [[Paragraph(f"<b>{escape(h)}</b>", styles["small"]) for h in header]]
        for site, values in sites:
            data.append([site] + [_fmt(values.get(k), 1 if k == "dlco" else 2) for k in keys])
        table = Table(data, colWidths=[18 * mm] + [23 * mm] * len(keys), repeatRows=1)
        table.setStyle(_GRID)
        flow += [Paragraph("<b>I3Dr lung function estimates</b>", styles["body"]), table]
        flow += _caveat(provenance["i3dr"].statement, styles)
    if findings.severity is not None:
        data = [[Paragraph(f"<b>{h}</b>", styles["small"]) for h in ("Lobe", "Involvement (%)", "CTSS (0-5)")]]
        for lobe in LOBE_NAMES:
            if lobe in findings.severity.lobes:
                values = findings.severity.lobes[lobe]
                data.append([lobe, _fmt(values["involvement_pct"], 1), f"{int(values['ctss'])}"])
        data.append(["total", "", f"{findings.severity.total_ctss} / 25"])
        table = Table(data, colWidths=[24 * mm, 30 * mm, 30 * mm], repeatRows=1, hAlign="LEFT")
        table.setStyle(_GRID)
        flow += [Paragraph("<b>CT severity score</b>", styles["body"]), table]
        flow += _caveat(provenance["severity"].statement, styles)
    return flow


def _model_table(findings: Findings, text: _Text, styles: dict[str, ParagraphStyle]) -> list[Any]:
    flow: list[Any] = [Paragraph("Models", styles["h2"])]
    if not findings.models:
        return flow + [Paragraph("No model is registered.", styles["body"])]
    header = ["Model", "Status", "Reason", "Version", "Validation", "Weights SHA-256"]
    data: list[list[Any]] = [[Paragraph(f"<b>{h}</b>", styles["small"]) for h in header]]
    for run in findings.models.values():
        caveat = unvalidated_statement(run)
        if run.status != "ran":
            validation = _NOT_AVAILABLE
        elif caveat is None and run.weights_sha256 is None:
            validation = "weight-free (no trained weights)"
        elif caveat is None:
            validation = "validated weights"
        else:
            validation = f'<font color="#C62828"><b>{escape(caveat)}</b></font>'
        sha = run.weights_sha256 or "no weights"
        data.append(
            [
                Paragraph(f"{text.markup(model_display_name(run))}<br/>({text.markup(run.name)})", styles["small"]),
                Paragraph(STATUS_WORDS[run.status], styles["small"]),
                Paragraph(text.markup(run.reason) or "&nbsp;", styles["small"]),
                Paragraph(text.markup(run.version), styles["small"]),
                Paragraph(validation, styles["small"]),
                Paragraph("<br/>".join(sha[i : i + 22] for i in range(0, len(sha), 22)), styles["tiny"]),
            ]
        )
    table = Table(data, colWidths=[26 * mm, 18 * mm, 50 * mm, 16 * mm, 32 * mm, 38 * mm], repeatRows=1)
    table.setStyle(_GRID)
    return flow + [table]


def _page_decorator(banner: str | None, footer: str) -> Any:
    def decorate(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        width, height = A4
        canvas.saveState()
        if banner is not None:
            canvas.setFillColor(_RED)
            canvas.rect(0, height - _BANNER_HEIGHT - 4 * mm, width, _BANNER_HEIGHT, stroke=0, fill=1)
            canvas.setFillColor(colors.white)
            canvas.setFont("Helvetica-Bold", 13)
            canvas.drawCentredString(width / 2, height - _BANNER_HEIGHT + 0.5 * mm, banner)
        canvas.setFillColor(colors.grey)
        canvas.setFont("Helvetica", 7)
        canvas.drawString(_PAGE_MARGIN, 8 * mm, footer)
        canvas.drawRightString(width - _PAGE_MARGIN, 8 * mm, f"page {doc.page}")
        canvas.restoreState()

    return decorate


def build_pdf(
    findings: Findings,
    source_headers: Sequence[Dataset],
    context: ReportContext,
    eligibility_reasons: Sequence[str] = (),
    *,
    compress: bool = True,
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
    by_uid = index_source_headers(findings, source_headers)
    header = by_uid[findings.volume.source_sop_instance_uids[0]]
    reasons = [str(reason) for reason in eligibility_reasons]
    styles = _styles()
    text = _Text()

    story: list[Any] = [
        Paragraph(escape(PDF_TITLE), styles["title"]),
        _header_table(header, text, styles),
        Spacer(1, 4 * mm),
        _statement_box(styles),
    ]
    if reasons:
        story.append(Paragraph("Eligibility notes", styles["h2"]))
        story += [Paragraph(f"&bull; {text.markup(reason)}", styles["body"]) for reason in reasons]
    if findings.warnings:
        story.append(Paragraph("Analysis warnings", styles["h2"]))
        story += [Paragraph(f"&bull; {text.markup(warning)}", styles["body"]) for warning in findings.warnings]
    story += _key_images(findings, styles)
    story += _measurement_table(findings, text, styles)
    story += _output_tables(findings, styles)
    story += _model_table(findings, text, styles)
    if text.transliterated:
        story.append(
            Paragraph(
                "Note: some characters (e.g. in the patient name) have no font on this system and are "
                "shown transliterated; the DICOM header holds the exact spelling.",
                styles["small"],
            )
        )

    banner = banner_text(findings)
    footer = (
        f"{context.manufacturer_model_name} {context.software_version} (pipeline {findings.pipeline_version}) "
        "- decision support, not a diagnosis"
    )
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
    )
    decorate = _page_decorator(banner, footer)
    doc.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return buffer.getvalue()
