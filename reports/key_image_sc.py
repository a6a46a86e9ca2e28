"""The key images as one Secondary Capture that every viewer shows (issue 17, part 4).

Many PACS viewers show neither the SR's measurement groups nor the SEG's overlays, and show an
encapsulated PDF poorly or not at all; every viewer shows a Secondary Capture image.  So the
findings also go out as one true-colour picture (SC Image IOD, PS3.3 A.8.1, built with
highdicom's :class:`highdicom.sc.SCImage`) with everything burned in:

* a heading that says what it is (decision support, not a diagnosis) and, in red, the
  UNVALIDATED banner of the PDF when any output is unvalidated (:func:`reports.identity.banner_text`);
* the weight-free headline numbers of both lungs with their provenance, at the precision the PDF
  and SR print them (:mod:`reports.precision`), and the acquisition caveats that bias them;
* the results of the learned models that ran, in the words of the PDF's results table
  (:func:`reports.results_summary.result_summary`), each with its model and provenance, UNVALIDATED
  ones and withheld values in red, and one line naming the models that did not run, so that "the
  software found nothing" cannot be mistaken for "the software did not run";
* the key images of the PDF (:func:`reports.keyimages.render_key_images`), two per row, each with
  its caption and its colour key drawn as swatches.

One picture rather than one image per key image: a reader opens one object and sees the numbers
beside the pictures they describe, and the Key Object Selection (:mod:`reports.key_object_selection`)
flags one object.  The picture has no single patient orientation (it holds axial and coronal
images and text), so Patient Orientation is left empty (Type 2).  Patient and study attributes
are copied from the same header as the SR, SEG and PDF (:func:`reports.identity.copy_patient_study`),
never drawn into the pixels, so the header is the one place identity lives.

A series that was seen but not analysed gets the same kind of picture with the reasons
(:func:`build_not_analysed_sc`), so a reader scrolling through the study sees that the software
did not run and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset

from models.findings import HEADLINE_KEYS, Findings
from reports.identity import (
    OUTPUT_CHARACTER_SET,
    ReportContext,
    banner_text,
    copy_patient_study,
    model_words,
    models_not_run,
    sop_reference,
)
from reports.keyimages import KeyImage
from reports.pdf_layout import FONT, FONT_DIR, register_fonts
from reports.precision import HEADLINE_WORDS, headline_value
from reports.results_summary import ResultRow, result_summary, validation_words

__all__ = [
    "NOT_ANALYSED_SC_SERIES_DESCRIPTION",
    "SC_SERIES_DESCRIPTION",
    "SC_UNVALIDATED_SERIES_DESCRIPTION",
    "build_key_image_sc",
    "build_not_analysed_sc",
    "key_image_lines",
    "key_image_sources",
    "not_analysed_lines",
]

#: Series Description (0008,103E) of the key-image series.
SC_SERIES_DESCRIPTION = "lungcds key images (decision support)"
#: Series Description of the key images of an analysis with unvalidated outputs.
SC_UNVALIDATED_SERIES_DESCRIPTION = "lungcds key images UNVALIDATED - not for clinical use"
#: Series Description of the picture of a series that was not analysed.
NOT_ANALYSED_SC_SERIES_DESCRIPTION = "lungcds NOT ANALYSED - reasons in the image"

Colour = tuple[int, int, int]

#: Width of the picture in pixels: two 512-pixel key images side by side stay near their size.
PAGE_WIDTH = 1024
_MARGIN = 16
_TITLE_PX = 30
_TEXT_PX = 21
_CAPTION_PX = 16
_WHITE: Colour = (255, 255, 255)
_GREY: Colour = (200, 200, 200)
_RED: Colour = (255, 90, 90)
_AMBER: Colour = (255, 190, 80)
_SWATCH = 14


@dataclass(frozen=True)
class Line:
    """One line of burned-in text before wrapping: its words, colour and pixel size."""

    text: str
    colour: Colour = _WHITE
    size: int = _TEXT_PX


def _font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, the PDF's font: it has every glyph the report text uses (dashes, umlauts)."""
    register_fonts()  # raises FontsMissing, naming the package, when DejaVu is not installed
    return ImageFont.truetype(str(FONT_DIR / f"{FONT}.ttf"), size=size)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap of ``text`` to ``width`` pixels (a word longer than the width stays whole)."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and probe.textlength(candidate, font=font) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    return [*lines, current] if current else lines


def _text_block(lines: Sequence[Line], width: int) -> Image.Image:
    """``lines`` wrapped to ``width`` pixels, white and coloured on black."""
    rows: list[tuple[str, ImageFont.FreeTypeFont, Line]] = []
    for line in lines:
        font = _font(line.size)
        rows += [(part, font, line) for part in _wrap(line.text, font, width)]
    height = sum(round(line.size * 1.3) for _, _, line in rows)
    block = Image.new("RGB", (width, max(1, height)))
    draw = ImageDraw.Draw(block)
    y = 0
    for part, font, line in rows:
        draw.text((0, y), part, fill=line.colour, font=font)
        y += round(line.size * 1.3)
    return block


def _legend_block(key: KeyImage, width: int) -> Image.Image:
    """The colour key of one key image as swatches with their labels, wrapped to ``width``."""
    font = _font(_CAPTION_PX)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    placed: list[tuple[int, int, str, Colour]] = []
    x = y = 0
    row_height = _CAPTION_PX + 6
    for label, colour in key.legend:
        entry = _SWATCH + 6 + round(probe.textlength(label, font=font)) + 16
        if x and x + entry > width:
            x, y = 0, y + row_height
        placed.append((x, y, label, colour))
        x += entry
    block = Image.new("RGB", (width, (y + row_height) if placed else 1))
    draw = ImageDraw.Draw(block)
    for x, y, label, colour in placed:
        draw.rectangle((x, y + 2, x + _SWATCH, y + 2 + _SWATCH), fill=colour, outline=_WHITE)
        draw.text((x + _SWATCH + 6, y), label, fill=_GREY, font=font)
    return block


def _panel(key: KeyImage, width: int) -> Image.Image:
    """One key image scaled to ``width`` (never enlarged beyond twice its size), caption and key below."""
    image = key.image
    scale = min(width / image.size[0], 2.0)
    picture = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.Resampling.LANCZOS)
    caption = _text_block([Line(key.caption, _GREY, _CAPTION_PX)], width)
    legend = _legend_block(key, width)
    panel = Image.new("RGB", (width, picture.size[1] + caption.size[1] + legend.size[1] + 12))
    panel.paste(picture, ((width - picture.size[0]) // 2, 0))
    panel.paste(caption, (0, picture.size[1] + 6))
    panel.paste(legend, (0, picture.size[1] + caption.size[1] + 10))
    return panel


def compose_page(lines: Sequence[Line], key_images: Sequence[KeyImage]) -> np.ndarray:
    """The picture: ``lines`` on top, then the key images two per row; RGB uint8 ``[rows, columns, 3]``."""
    inner = PAGE_WIDTH - 2 * _MARGIN
    blocks = [_text_block(lines, inner)]
    column = (inner - _MARGIN) // 2
    panels = [_panel(key, column) for key in key_images]
    for i in range(0, len(panels), 2):
        pair = panels[i : i + 2]
        row = Image.new("RGB", (inner, max(p.size[1] for p in pair)))
        for j, panel in enumerate(pair):
            row.paste(panel, (j * (column + _MARGIN), 0))
        blocks.append(row)
    height = sum(b.size[1] for b in blocks) + _MARGIN * (len(blocks) + 1)
    page = Image.new("RGB", (PAGE_WIDTH, height + height % 2))
    y = _MARGIN
    for block in blocks:
        page.paste(block, (_MARGIN, y))
        y += block.size[1] + _MARGIN
    return np.asarray(page, dtype=np.uint8)


def key_image_lines(findings: Findings) -> list[Line]:
    """The text burned into the key-image picture, in reading order (see the module docstring)."""
    lines = [Line("lungcds chest CT analysis: decision support, not a diagnosis", _WHITE, _TITLE_PX)]
    banner = banner_text(findings)
    if banner is not None:
        lines.append(Line(banner, _RED))
    headline = findings.headline()
    run = findings.mask_run("lungs")
    if headline is None or run is None:
        lines.append(Line("No lung measurement: the SR and the PDF report say why.", _AMBER))
    else:
        lines.append(Line(f"Quantitative CT of both lungs: {run.provenance_words}, {run.name} {run.version}", _GREY))
        lines += [Line(f"{HEADLINE_WORDS[k][0]}: {headline_value(k, headline[k], 'n/a')}") for k in HEADLINE_KEYS]
    if findings.acquisition is not None:
        lines += [Line(f"Caveat: {caveat}", _AMBER) for caveat in findings.acquisition.caveats]
    lines += _learned_lines(findings)
    lines.append(Line("All results, their methods and reference points: the SR and PDF report of this study.", _GREY))
    return lines


def _provenance(row: ResultRow) -> tuple[str, bool]:
    """The model and provenance of a result in words, and whether it is UNVALIDATED."""
    run = row.run
    words = validation_words(run)
    if run is None or words is None:
        return "", False
    provenance = f"UNVALIDATED, {words[0]}" if words[1] else words[0]
    return f" ({run.name} {run.version}; {provenance})", words[1]


def _learned_lines(findings: Findings) -> list[Line]:
    """The learned models' results (every row but the weight-free lung volume) and the models not run."""
    lines = []
    for row in result_summary(findings).rows:
        if row.label == "Lung volume" or not row.present:
            continue
        provenance, unvalidated = _provenance(row)
        alert = unvalidated or any(fragment.withheld for fragment in row.value)
        withheld = "withheld: " if all(fragment.withheld for fragment in row.value) else ""
        lines.append(Line(f"{row.label}: {withheld}{row.text}{provenance}", _RED if alert else _WHITE))
    not_run = [model_words(run) for run in models_not_run(findings)]
    if not_run:
        lines.append(Line(f"Not run at this site or for this series: {', '.join(not_run)}.", _GREY))
    return lines


def key_image_sources(findings: Findings, key_images: Sequence[KeyImage], by_uid: dict[str, Dataset]) -> list[Dataset]:
    """The source instances of the axial key images, in display order without repeats.

    A coronal key image is a reformat of every slice, so it names no single source instance.
    """
    uids = findings.volume.source_sop_instance_uids
    chosen = dict.fromkeys(uids[key.index] for key in key_images if key.plane == "axial")
    return [by_uid[uid] for uid in chosen]


def _secondary_capture(
    pixels: np.ndarray,
    identity: Dataset,
    sources: Sequence[Dataset],
    context: ReportContext,
    content_digest: str,
    series_description: str,
) -> hd.sc.SCImage:
    """The SC Image object of the source study: identity from ``identity``, UIDs from the digest."""
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=("L", "P"),  # required by highdicom for PATIENT; emptied below
        study_instance_uid=str(identity.StudyInstanceUID),
        series_instance_uid=context.output_uid(content_digest, "sc", "series"),
        series_number=context.sc_series_number,
        sop_instance_uid=context.output_uid(content_digest, "sc", "instance"),
        instance_number=1,
        manufacturer=context.manufacturer,
        manufacturer_model_name=context.manufacturer_model_name,
        software_versions=context.software_version,
        device_serial_number=context.device_serial_number,
        institution_name=context.institution_name,
        series_description=series_description,
        specific_character_set=OUTPUT_CHARACTER_SET,
    )
    sc["PatientOrientation"].value = None  # axial, coronal and text in one picture: no single orientation
    copy_patient_study(identity, sc)
    sc.StationName = context.station_name
    sc.ConversionType = "WSD"  # a workstation's rendering, not a digitised film
    sc.BurnedInAnnotation = "YES"
    sc.RecognizableVisualFeatures = "NO"
    sc.LossyImageCompression = "00"
    sc.ImageLaterality = "B"  # both lungs; stands in for Series Laterality (PS3.3 C.7.3.1)
    if sources:
        sc.SourceImageSequence = [sop_reference(ds) for ds in sources]
    return sc


def build_key_image_sc(
    findings: Findings,
    identity: Dataset,
    key_images: Sequence[KeyImage],
    sources: Sequence[Dataset],
    context: ReportContext,
    content_digest: str,
) -> hd.sc.SCImage:
    """The key-image picture of an analysis as an SC Image of the source study.

    Parameters
    ----------
    findings : Findings
        The analysis; gives the burned-in text (:func:`key_image_lines`).
    identity : pydicom.Dataset
        The header every report object takes patient and study data from
        (:func:`reports.identity.identity_source`).
    key_images : sequence of KeyImage
        The rendered key images (:func:`reports.keyimages.render_key_images`), as the PDF shows them.
    sources : sequence of pydicom.Dataset
        The source slices of the axial key images (:func:`key_image_sources`), listed in the
        Source Image Sequence.
    context : ReportContext
        Device identity and output numbering.
    content_digest : str
        :func:`reports.identity.analysis_digest` of the analysis: fixes the UIDs.
    """
    description = SC_UNVALIDATED_SERIES_DESCRIPTION if banner_text(findings) else SC_SERIES_DESCRIPTION
    pixels = compose_page(key_image_lines(findings), key_images)
    return _secondary_capture(pixels, identity, sources, context, content_digest, description)


def build_not_analysed_sc(
    identity: Dataset, reasons: Sequence[str], context: ReportContext, content_digest: str
) -> hd.sc.SCImage:
    """A picture saying the series was seen and not analysed, with every reason (:func:`not_analysed_lines`).

    ``content_digest`` is :func:`reports.identity.not_analysable_digest` of the series and reasons.
    """
    pixels = compose_page(not_analysed_lines(reasons), ())
    return _secondary_capture(pixels, identity, (), context, content_digest, NOT_ANALYSED_SC_SERIES_DESCRIPTION)


def not_analysed_lines(reasons: Sequence[str]) -> list[Line]:
    """The text of the not-analysed picture: what happened, each reason, and that no numbers follow."""
    return [
        Line("NOT ANALYSED by lungcds (decision support)", _AMBER, _TITLE_PX),
        Line("This chest CT series was received but not analysed, for these reasons:"),
        *(Line(f"- {reason}", _AMBER) for reason in reasons),
        Line("No measurements or model outputs were produced for this series.", _GREY),
    ]
