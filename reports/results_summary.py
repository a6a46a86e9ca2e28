"""The main results of an analysis as plain rows, for every report that lists them.

The PDF's page-1 results table (:mod:`reports.pdf`) and the key-image picture
(:mod:`reports.key_image_sc`) list the same results in the same words: lung volume, CO-RADS,
the two STOIC2021 probabilities, the CT severity score and the I3Dr lung function.  Each row keeps
its model run (for the provenance beside it) and says whether it is an output (present, or
withheld by the plausibility gate with the reason) or a statement that it is not available and
why.  Text is plain here; each report marks it up its own way (the PDF escapes it and sets
withheld reasons in red).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from models.findings import Findings, ModelRun
from reports import codes
from reports.identity import STATUS_WORDS
from reports.severity import severity_category

__all__ = [
    "Fragment",
    "ResultRow",
    "ResultSummary",
    "i3dr_digits",
    "i3dr_unit",
    "not_available",
    "plain_reason",
    "result_summary",
    "validation_words",
]

#: Provenance in the few words a results table has room for.
SHORT_PROVENANCE: Mapping[str, str] = MappingProxyType(
    {
        "weight_free": "weight-free method",
        "generated_weights": "generated weights",
        "installed_validated": "validated weights",
        "installed_unvalidated": "no validation statement",
    }
)
#: The command hint the model registry puts in a reason: command syntax is for the technical
#: page, not for the radiologist's text.
_INSTALL_HINT = re.compile(r";?\s*install with `[^`]*`")


@dataclass(frozen=True)
class Fragment:
    """A piece of a result's value; ``withheld`` marks the reason the plausibility gate withheld a value."""

    text: str
    withheld: bool = False


@dataclass(frozen=True)
class ResultRow:
    """One result: its label, value in fragments, the run that made it, and whether it is an output."""

    label: str
    value: tuple[Fragment, ...]
    run: ModelRun | None
    present: bool

    @property
    def text(self) -> str:
        """The value as one plain text."""
        return "".join(fragment.text for fragment in self.value)


@dataclass
class ResultSummary:
    """The result rows, and the outputs without any run record as (output, why)."""

    rows: list[ResultRow] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, value: str | tuple[Fragment, ...], run: ModelRun | None, present: bool) -> None:
        fragments = (Fragment(value),) if isinstance(value, str) else value
        self.rows.append(ResultRow(label, fragments, run, present))


def plain_reason(reason: str) -> str:
    """A model's reason without the install command (and without any other code quoting)."""
    return _INSTALL_HINT.sub("", reason).replace("`", "").strip()


def not_available(run: ModelRun | None, what: str) -> str:
    """Why an output of ``run`` is not available: ``what`` without a run, else its status and reason."""
    if run is None:
        return f"not available: {what}"
    return f"not available: {STATUS_WORDS[run.status]} ({plain_reason(run.reason) or 'no reason given'})"


def validation_words(run: ModelRun | None) -> tuple[str, bool] | None:
    """The provenance of a run's outputs in a few words and whether they are UNVALIDATED; None without one."""
    if run is None or run.provenance is None:
        return None
    return SHORT_PROVENANCE[run.provenance], run.unvalidated_statement is not None


def i3dr_unit(key: str) -> str:
    """Unit of an I3Dr output: DLCO in mL/min/mmHg, the volumes and flows in L."""
    return "mL/min/mmHg" if key == "dlco" else "L"


def i3dr_digits(key: str) -> int:
    """Decimals of an I3Dr output."""
    return 1 if key == "dlco" else 2


def _withheld(reasons: list[str]) -> tuple[Fragment, ...]:
    return (Fragment("; ".join(reasons), withheld=True),)


def _lung_volume(findings: Findings, summary: ResultSummary) -> None:
    lungs = findings.measurements.get("lungs")
    run = findings.mask_run("lungs")
    if lungs is None:
        summary.add("Lung volume", "not available: no lung measurement", run, False)
        return
    value = f"{lungs.volume_ml:.0f} mL"
    if lungs.fpv_ml is not None and lungs.laa950_pct is not None:
        value += f" (functional {lungs.fpv_ml:.0f} mL, {lungs.laa950_pct:.1f} % below -950 HU)"
    summary.add("Lung volume", value, run, True)


def _corads(findings: Findings, summary: ResultSummary) -> None:
    run = findings.models.get("corads")
    withheld = [w.reason for w in findings.withheld_values("corads")]
    if findings.corads is not None:
        summary.add("CO-RADS", f"category {findings.corads.category} (score {findings.corads.score:.2f})", run, True)
    elif withheld:
        summary.add("CO-RADS", _withheld(withheld), run, True)
    elif run is None:
        summary.missing.append(("CO-RADS", "no CO-RADS model"))
    elif run.status == "ran":
        summary.add("CO-RADS", not_available(run, "no CO-RADS model"), run, False)


def _stoic(findings: Findings, summary: ResultSummary) -> None:
    """The two STOIC2021 probabilities; no row when the ensemble did not run."""
    run = findings.models.get("stoic")
    stoic = findings.stoic
    rows_before = len(summary.rows)
    for label, attr, meaning in (
        ("Probability of COVID-19", "p_covid", ""),
        ("Probability of severe outcome", "p_severe", " (intubation or death within one month, if COVID-19)"),
    ):
        probability: float | None = getattr(stoic, attr) if stoic is not None else None
        reasons = [w.reason for w in findings.withheld_values("stoic", "") if w.quantity == attr]
        if probability is not None:
            summary.add(label, f"{probability:.2f}{meaning}", run, True)
        elif reasons:
            summary.add(label, _withheld(reasons), run, True)
        elif stoic is not None:
            summary.add(label, f"not available: no member of {stoic.config} that ran gives this output", run, False)
        elif run is not None and run.status == "ran":
            summary.add(label, not_available(run, "no STOIC2021 member gave it"), run, False)
    if stoic is None and run is None and len(summary.rows) == rows_before:
        summary.missing.append(("STOIC2021", "no STOIC2021 member gave it"))


def _severity(findings: Findings, summary: ResultSummary) -> None:
    run = findings.models.get("severity")
    withheld = [w.reason for w in findings.withheld_values("severity")]
    if findings.severity is not None:
        total = findings.severity.total_ctss
        summary.add("CT severity score", f"{total} / 25 ({severity_category(total)})", run, True)
    elif withheld:
        summary.add("CT severity score", _withheld(withheld), run, True)
    elif run is None:
        summary.missing.append(("CT severity score", "needs lobe and lesion segmentations"))
    elif run.status == "ran":
        summary.add("CT severity score", "not available: needs lobe and lesion segmentations", run, False)


def _lung_function(findings: Findings, summary: ResultSummary) -> None:
    """Patient-level FEV1, FVC and DLCO; a withheld one says why."""
    run = findings.models.get("i3dr")
    if findings.i3dr is None:
        if run is None:
            summary.missing.append(("I3Dr", "no I3Dr model"))
        elif run.status == "ran":
            summary.add("Lung function (I3Dr)", not_available(run, "no I3Dr model"), run, False)
        return
    patient = findings.i3dr.patient
    parts: list[Fragment] = []
    for key in ("fev1_pre_l", "fvc_pre_l", "dlco"):
        reasons = [w.reason for w in findings.withheld_values("i3dr", "patient") if w.quantity == key]
        label = codes.I3DR_OUTPUT_LABELS[key]
        if key in patient:
            parts.append(Fragment(f"{label} {patient[key]:.{i3dr_digits(key)}f} {i3dr_unit(key)}"))
        elif reasons:
            parts.append(Fragment(f"{label} {'; '.join(reasons)}", withheld=True))
    joined: list[Fragment] = []
    for part in parts:
        joined += [Fragment(", "), part] if joined else [part]
    summary.add("Lung function (I3Dr)", tuple(joined) or (Fragment("lobar estimates only"),), run, True)


def result_summary(findings: Findings) -> ResultSummary:
    """The results of ``findings`` in reading order, and the outputs no model was run for."""
    summary = ResultSummary()
    _lung_volume(findings, summary)
    _corads(findings, summary)
    _stoic(findings, summary)
    _severity(findings, summary)
    _lung_function(findings, summary)
    return summary
