"""The STOIC2021 ensemble: run whichever members are installed, average each output over its members.

Thesis Table 4.1 defines the deployed configuration, ``stoic_top3``: "the top three ensemble was
obtained by averaging the predictions of the best performing solutions" per output, i.e.

* P(severe) = mean of Code 1055, simon.j and Flying Bird (test-set-B AUC 0.817);
* P(COVID-19) = mean of simon.j, Flying Bird and hal9000 (AUC 0.849).

Member lists and weights are configurable (:class:`EnsembleConfig`).  Members come as a mapping
from registry name to a loaded member, or ``None`` for one that is not installed; the ensemble
runs the configured members it has, records for every configured member whether it ran and,
if not, why (not installed; :class:`~models.stoic.member.MemberUnavailable` with its reason,
e.g. a lesion mask is missing; or failed, with the error), and averages each output over the
members that produced it (weights renormalised).  An ensemble that averaged fewer members than
configured says that it is incomplete and what it averaged.

P(severe) is reported, as STOIC2021 ranked it, as the probability of severe outcome (death or
intubation within one month) *among COVID-19 patients*: the severity AUC was computed over
RT-PCR-positive patients only (thesis 4.2), and Code 1055, Flying Bird and etro trained their
severity models on COVID-19-positive patients only (models spec section 4).

The members' shared weights-file format lives in :mod:`models.stoic.storage`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from models.findings import StoicResult
from models.stoic.member import MemberInputs, MemberOutput, MemberUnavailable, StoicMember

__all__ = [
    "SEVERITY_MEANING",
    "STOIC_TOP3",
    "EnsembleConfig",
    "EnsembleResult",
    "MemberReport",
    "MemberStatus",
    "StoicEnsemble",
    "combine",
    "run_member",
]

logger = logging.getLogger(__name__)

#: What P(severe) means, in words a report can print.
SEVERITY_MEANING = (
    "P(severe) is the probability of death or intubation within one month for a patient with COVID-19, "
    "as STOIC2021 ranked it (severity AUC over RT-PCR-positive patients only, thesis 4.2)"
)

MemberStatus = Literal["ran", "not_installed", "unavailable", "failed"]
_OUTPUT_WORDS = {"p_covid": "P(COVID-19)", "p_severe": "P(severe)"}


def _weights(items: Mapping[str, float] | Sequence[tuple[str, float]], output: str) -> tuple[tuple[str, float], ...]:
    pairs = tuple((str(k), float(v)) for k, v in (items.items() if isinstance(items, Mapping) else items))
    names = [k for k, _ in pairs]
    if not pairs:
        raise ValueError(f"{output}: an ensemble output needs at least one member")
    if len(set(names)) != len(names):
        raise ValueError(f"{output}: a member is listed twice in {names}")
    if any(not math.isfinite(w) or w <= 0 for _, w in pairs):
        raise ValueError(f"{output}: weights must be positive and finite, got {dict(pairs)}")
    return pairs


@dataclass(frozen=True, init=False)
class EnsembleConfig:
    """Which members are averaged for each output, with which weights.

    Parameters
    ----------
    name : str
        Configuration name, reported with the result.
    covid : mapping or sequence of (name, weight)
        Members (registry names) averaged for P(COVID-19) and their weights.
    severe : mapping or sequence of (name, weight)
        Members averaged for P(severe) and their weights.

    Raises
    ------
    ValueError
        For an empty list, a repeated member, or a weight that is not positive and finite.
    """

    name: str
    covid: tuple[tuple[str, float], ...]
    severe: tuple[tuple[str, float], ...]

    def __init__(
        self,
        name: str,
        covid: Mapping[str, float] | Sequence[tuple[str, float]],
        severe: Mapping[str, float] | Sequence[tuple[str, float]],
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "covid", _weights(covid, "covid"))
        object.__setattr__(self, "severe", _weights(severe, "severe"))

    @classmethod
    def equal(cls, name: str, covid: Sequence[str], severe: Sequence[str]) -> EnsembleConfig:
        """A configuration averaging the listed members with equal weights."""
        return cls(name, [(m, 1.0) for m in covid], [(m, 1.0) for m in severe])

    @property
    def members(self) -> tuple[str, ...]:
        """Every configured member once, severity members first (Table 4.1 order)."""
        ordered = [name for name, _ in (*self.severe, *self.covid)]
        return tuple(dict.fromkeys(ordered))

    def weights(self, output: Literal["p_covid", "p_severe"]) -> tuple[tuple[str, float], ...]:
        """The (member, weight) pairs of one output."""
        return self.covid if output == "p_covid" else self.severe


#: Thesis Table 4.1, "Top three ensemble": the three best solutions per output, averaged.
STOIC_TOP3 = EnsembleConfig.equal(
    "stoic_top3",
    covid=("stoic_simonj", "stoic_flyingbird", "stoic_hal9000"),
    severe=("stoic_code1055", "stoic_simonj", "stoic_flyingbird"),
)


@dataclass(frozen=True)
class MemberReport:
    """What happened to one configured member.

    Attributes
    ----------
    name : str
        Registry name.
    status : {"ran", "not_installed", "unavailable", "failed"}
        ``unavailable`` means the member refused this input (:class:`MemberUnavailable`).
    reason : str
        Why it did not run, in words for the report ("" when it ran).
    output : MemberOutput or None
        Its probabilities, notes and details when it ran.
    demo : bool
        Whether it ran on generated demonstration weights.
    """

    name: str
    status: MemberStatus
    reason: str = ""
    output: MemberOutput | None = None
    demo: bool = False


@dataclass(frozen=True)
class EnsembleResult:
    """The ensemble's probabilities, every member's fate, and notes for the report.

    Attributes
    ----------
    config : str
        Configuration name (``stoic_top3`` by default).
    p_covid, p_severe : float or None
        Weighted means over the members that produced each output; None when none did.
        ``p_severe`` is conditional on COVID-19 (:data:`SEVERITY_MEANING`).
    members : mapping of str to MemberReport
        Every configured member, in configuration order.
    averaged : mapping of str to tuple of str
        For ``p_covid`` and ``p_severe``, the members whose outputs were averaged.
    complete : bool
        True when every configured member contributed to the output it is configured for.
    notes : tuple of str
        Sentences the report prints: the meaning of P(severe), incompleteness, demo weights.
    """

    config: str
    p_covid: float | None
    p_severe: float | None
    members: Mapping[str, MemberReport]
    averaged: Mapping[str, tuple[str, ...]]
    complete: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ran(self) -> tuple[str, ...]:
        """Members that ran, in configuration order."""
        return tuple(name for name, report in self.members.items() if report.status == "ran")

    @property
    def not_run(self) -> dict[str, str]:
        """Members that did not run, with the reason (status prefixed) for each."""
        return {
            name: f"{report.status.replace('_', ' ')}: {report.reason}"
            for name, report in self.members.items()
            if report.status != "ran"
        }

    def to_stoic_result(self) -> StoicResult | None:
        """The ``Findings`` form: both probabilities, each member's outputs, what was averaged, notes.

        Returns None only when neither probability exists (no configured member produced one);
        the reasons then stay in :attr:`notes` and :attr:`not_run`.
        """
        if self.p_covid is None and self.p_severe is None:
            return None
        members: dict[str, dict[str, float]] = {}
        for name, report in self.members.items():
            if report.output is None:
                continue
            values = {"p_covid": report.output.p_covid, "p_severe": report.output.p_severe}
            members[name] = {key: float(value) for key, value in values.items() if value is not None}
        return StoicResult(
            p_covid=self.p_covid,
            p_severe=self.p_severe,
            members=members,
            config=self.config,
            averaged=dict(self.averaged),
            complete=self.complete,
            notes=self.notes,
        )


def _describe_missing(
    config: EnsembleConfig, output: Literal["p_covid", "p_severe"], reports: Mapping[str, MemberReport]
) -> str:
    parts = []
    for name, _ in config.weights(output):
        report = reports[name]
        if report.status != "ran":
            parts.append(f"{name} ({report.status.replace('_', ' ')}: {report.reason})")
        elif report.output is None or getattr(report.output, output) is None:
            parts.append(f"{name} (gave no {_OUTPUT_WORDS[output]})")
    return ", ".join(parts)


def combine(config: EnsembleConfig, reports: Mapping[str, MemberReport]) -> EnsembleResult:
    """The ensemble result from the members' reports: weighted means per output, and notes.

    Parameters
    ----------
    config : EnsembleConfig
        Members and weights per output.
    reports : mapping of str to MemberReport
        One report per configured member (missing ones count as not installed).

    Returns
    -------
    EnsembleResult
        Probabilities (None for an output no member produced), reports and notes.
    """
    full = {
        name: reports.get(name, MemberReport(name, "not_installed", "no weights installed")) for name in config.members
    }
    probabilities: dict[str, float | None] = {}
    averaged: dict[str, tuple[str, ...]] = {}
    notes = [SEVERITY_MEANING]
    complete = True
    for output in ("p_covid", "p_severe"):
        values = []
        for name, weight in config.weights(output):
            member_output = full[name].output
            value = getattr(member_output, output) if member_output is not None else None
            if value is not None:
                values.append((name, weight, float(value)))
        averaged[output] = tuple(name for name, _, _ in values)
        words = _OUTPUT_WORDS[output]
        if values:
            total = sum(w for _, w, _ in values)
            probabilities[output] = sum(w * v for _, w, v in values) / total
        else:
            probabilities[output] = None
            notes.append(f"no {words}: none of its members produced one ({_describe_missing(config, output, full)})")
        if len(values) < len(config.weights(output)):
            complete = False
            if values:
                notes.append(
                    f"incomplete ensemble: {words} is the weighted mean of {', '.join(averaged[output])} only; "
                    f"missing {_describe_missing(config, output, full)}"
                )
    demo = sorted({name for names in averaged.values() for name in names if full[name].demo})
    if demo:
        notes.append(f"computed with demonstration weights ({', '.join(demo)}): no clinical meaning")
    return EnsembleResult(
        config=config.name,
        p_covid=probabilities["p_covid"],
        p_severe=probabilities["p_severe"],
        members=full,
        averaged=averaged,
        complete=complete,
        notes=tuple(notes),
    )


def run_member(name: str, member: StoicMember | None, inputs: MemberInputs) -> MemberReport:
    """One member's report on one series: its output, or why it did not run.

    A failing member must not take the ensemble down: its error is logged with the traceback
    and reported as ``failed``; a member that cannot use this input says why (``unavailable``).
    """
    if member is None:
        return MemberReport(name, "not_installed", "no weights installed")
    demo = bool(member.card.get("demo", False))
    try:
        output = member.predict(inputs)
    except MemberUnavailable as unavailable:
        return MemberReport(name, "unavailable", unavailable.reason, demo=demo)
    except Exception as error:  # noqa: BLE001 - reported as failed, with the traceback in the log
        logger.exception("STOIC member %s failed", name)
        return MemberReport(name, "failed", f"{type(error).__name__}: {error}", demo=demo)
    return MemberReport(name, "ran", "", output, demo)


class StoicEnsemble:
    """Run the configured members that are installed and combine their outputs.

    Parameters
    ----------
    members : mapping of str to StoicMember or None
        Loaded members by registry name; ``None`` or an absent name means not installed.
    config : EnsembleConfig
        Members and weights per output (:data:`STOIC_TOP3` by default).

    Raises
    ------
    ValueError
        If a member's ``name`` differs from its key.
    """

    def __init__(self, members: Mapping[str, StoicMember | None], config: EnsembleConfig = STOIC_TOP3) -> None:
        for key, member in members.items():
            if member is not None and member.name != key:
                raise ValueError(f"member {member.name!r} was given under the name {key!r}")
        self.members = dict(members)
        self.config = config

    def run_member(self, name: str, inputs: MemberInputs) -> MemberReport:
        """One member's report: its output, or why it did not run (:func:`run_member`)."""
        return run_member(name, self.members.get(name), inputs)

    def predict(self, inputs: MemberInputs) -> EnsembleResult:
        """Run every configured member on one series and combine (:func:`combine`)."""
        reports = {name: self.run_member(name, inputs) for name in self.config.members}
        return combine(self.config, reports)
