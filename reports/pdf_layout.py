"""Shared layout of the PDF reports: embedded fonts, human region names, paragraph styles, tables, boxes.

Every glyph is set in DejaVu Sans (package fonts-dejavu-core), registered as TrueType fonts so
that reportlab embeds the subset it uses: a printed or archived report then looks the same on
every viewer, and the accented, Greek and Cyrillic letters of patient names need no other font.
Without the DejaVu files the report is not made (:class:`FontsMissing`): the standard PDF fonts
are not embedded, and a silent fallback would hide that.  Chinese, Japanese and Korean names
are the one exception: DejaVu has no such glyphs, so they are set in reportlab's built-in CID
fonts, which PDF viewers supply (not embedded); characters no font has are transliterated
(:class:`Text` notes it, so the report can say so).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Table, TableStyle

from models.findings import REGION_LABELS
from reports.identity import format_da

__all__ = [
    "FONT",
    "FONT_BOLD",
    "FONT_DIR",
    "FONT_MONO",
    "FONT_PACKAGE",
    "GRID",
    "NOT_AVAILABLE",
    "RED",
    "TABLE_FONT",
    "FontsMissing",
    "Text",
    "box",
    "dicom_date",
    "fmt",
    "paragraph_styles",
    "region_label",
    "register_fonts",
]

RED = colors.HexColor("#C62828")
#: What a table shows for a value that does not exist (the reason is given next to it).
NOT_AVAILABLE = "n/a"

#: Where Debian and Ubuntu install the DejaVu fonts, and the package that holds the required faces.
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_PACKAGE = "fonts-dejavu-core"
#: Font names of the report (registered under these names by :func:`paragraph_styles`).
FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
FONT_MONO = "DejaVuSansMono"
_FONT_ITALIC = "DejaVuSans-Oblique"
_FONT_BOLD_ITALIC = "DejaVuSans-BoldOblique"
#: The faces without which no report is made (all in :data:`FONT_PACKAGE`).
_REQUIRED_FACES = (FONT, FONT_BOLD, FONT_MONO)
#: The oblique faces come with fonts-dejavu-extra; without them italic text is set upright.
_OPTIONAL_FACES = (_FONT_ITALIC, _FONT_BOLD_ITALIC)
#: Every table cell in the report font: reportlab sets a cell's font even for a paragraph cell,
#: and its default (Helvetica) would otherwise be listed in the PDF without being embedded.
TABLE_FONT = ("FONTNAME", (0, 0), (-1, -1), FONT)
#: reportlab's built-in CID fonts (Adobe Asian font packs; no font file needed).
_CJK_FONT = "HeiseiKakuGo-W5"
_HANGUL_FONT = "HYGothic-Medium"


class FontsMissing(RuntimeError):
    """The DejaVu fonts the PDF report embeds are not installed."""


@dataclass(frozen=True)
class _Fonts:
    """Code points the report font (DejaVu Sans) has a glyph for."""

    glyphs: frozenset[int]


def register_fonts() -> None:
    """Make the report's fonts known to reportlab (drawings such as the I3Dr chart measure text in them).

    Raises
    ------
    FontsMissing
        When a required DejaVu face is not installed.
    """
    _fonts()


@lru_cache(maxsize=1)
def _fonts() -> _Fonts:
    """Register the DejaVu faces (a family, so that ``<b>`` and ``<i>`` find theirs) and the CID fonts, once.

    Raises
    ------
    FontsMissing
        When a required DejaVu face is not installed, naming the package that provides it.
    """
    missing = [FONT_DIR / f"{face}.ttf" for face in _REQUIRED_FACES if not (FONT_DIR / f"{face}.ttf").is_file()]
    if missing:
        raise FontsMissing(
            f"the PDF report embeds the DejaVu fonts, which are not installed ({', '.join(map(str, missing))} "
            f"missing): install the package {FONT_PACKAGE} (apt-get install {FONT_PACKAGE})"
        )
    faces = [face for face in _REQUIRED_FACES + _OPTIONAL_FACES if (FONT_DIR / f"{face}.ttf").is_file()]
    for face in faces:
        pdfmetrics.registerFont(TTFont(face, str(FONT_DIR / f"{face}.ttf")))
    italic = _FONT_ITALIC if _FONT_ITALIC in faces else FONT
    bold_italic = _FONT_BOLD_ITALIC if _FONT_BOLD_ITALIC in faces else FONT_BOLD
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic=italic, boldItalic=bold_italic)
    for name in (_CJK_FONT, _HANGUL_FONT):
        pdfmetrics.registerFont(UnicodeCIDFont(name))
    font = pdfmetrics.getFont(FONT)
    assert isinstance(font, TTFont)
    return _Fonts(glyphs=frozenset(font.face.charToGlyph))


def _font_for(char: str, fonts: _Fonts) -> str | None:
    """Font of one character: "" for the report font, a CID font name, or None when none has it."""
    code = ord(char)
    if code in fonts.glyphs or char.isspace():  # line breaks and tabs are layout, not glyphs
        return ""
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


class Text:
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


def paragraph_styles() -> dict[str, ParagraphStyle]:
    """The report's paragraph styles, all in DejaVu (registered here, so no style can name a missing font).

    Raises
    ------
    FontsMissing
        When the DejaVu fonts are not installed.
    """
    _fonts()
    body = ParagraphStyle("body", fontName=FONT, fontSize=9, leading=11.5, spaceBefore=6)
    bold = {"fontName": FONT_BOLD}
    return {
        "title": ParagraphStyle(
            "title", parent=body, **bold, fontSize=16, leading=20, alignment=TA_CENTER, spaceBefore=0, spaceAfter=4
        ),
        "h2": ParagraphStyle(
            "h2", parent=body, **bold, fontSize=12, leading=15, spaceBefore=8, spaceAfter=4, keepWithNext=1
        ),
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5),
        "heading_cell": ParagraphStyle("heading_cell", parent=body, fontSize=6.5, leading=8),
        "tiny": ParagraphStyle("tiny", parent=body, fontName=FONT_MONO, fontSize=6, leading=7.5),
        "statement": ParagraphStyle("statement", parent=body, **bold, fontSize=10.5, leading=14),
        "caption": ParagraphStyle("caption", parent=body, fontSize=8, leading=10, alignment=TA_CENTER),
        "unvalidated": ParagraphStyle("unvalidated", parent=body, **bold, textColor=RED),
        "identifier": ParagraphStyle("identifier", parent=body, fontSize=7.5, leading=9.5, splitLongWords=0),
    }


GRID = TableStyle(
    [
        TABLE_FONT,
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#E8EAF0")),
        ("FONTNAME", (0, 0), (-1, 0), FONT_BOLD),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)


def region_label(name: str) -> str:
    """A region as a person reads it: ``REGION_LABELS`` words ("Left lung"); a lobe or zone keeps
    its abbreviation in front, "LUL (Left upper lobe)", because the key images label zones by it
    and radiologists write lobes by it.  A name without words (none today) stays as it is."""
    words = REGION_LABELS.get(name)
    if words is None:
        return name
    return f"{name} ({words})" if name.isupper() else words


def fmt(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals, or :data:`NOT_AVAILABLE`."""
    return NOT_AVAILABLE if value is None else f"{value:.{digits}f}"


def dicom_date(value: object) -> str:
    """A DA value (YYYYMMDD) as YYYY-MM-DD, anything else as it is (a header shows what it holds)."""
    return format_da(value) or str(value or "")


def box(content: list[Any], border: colors.Color, background: colors.Color) -> Table:
    """``content`` in a full-width box, so that a statement or a warning stands out from the tables."""
    framed = Table([[content]], colWidths=[180 * mm])
    framed.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 1.5, border),
                ("BACKGROUND", (0, 0), (-1, -1), background),
                TABLE_FONT,
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    return framed
