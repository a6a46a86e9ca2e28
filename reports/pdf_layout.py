"""Shared layout of the PDF reports: fonts for any patient name, paragraph styles, tables, boxes.

Static text uses the standard Helvetica fonts (WinAnsi).  Dynamic text (names, reasons) that
WinAnsi cannot encode is set in a Unicode TrueType font found on the system or, for
Chinese/Japanese/Korean, in reportlab's built-in CID fonts; characters no available font has
are transliterated (:class:`Text` notes it, so the report can say so).
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
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Table, TableStyle

from reports.identity import format_da

__all__ = [
    "GRID",
    "NOT_AVAILABLE",
    "RED",
    "UNICODE_FONT_CANDIDATES",
    "Text",
    "box",
    "dicom_date",
    "fmt",
    "paragraph_styles",
]

RED = colors.HexColor("#C62828")
#: What a table shows for a value that does not exist (the reason is given next to it).
NOT_AVAILABLE = "n/a"

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
    base = getSampleStyleSheet()
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontSize=16, leading=20, spaceAfter=4),
        "h2": ParagraphStyle(
            "h2", parent=base["Heading2"], fontSize=12, leading=15, spaceBefore=8, spaceAfter=4, keepWithNext=1
        ),
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
            textColor=RED,
        ),
    }


GRID = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#E8EAF0")),
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)


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
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    return framed
