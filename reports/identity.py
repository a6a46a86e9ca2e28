"""Who made a report object, about whom, from which images, and how far it can be trusted.

* :class:`ReportContext` names the device (General Equipment module, PS3.3 C.7.5.1; Device
  Observer, TID 1004) and derives the deterministic UIDs of our outputs (house rule 7).
* :func:`index_source_headers` validates the source CT headers against the ``Findings`` volume.
* :func:`copy_patient_study` and :func:`evidence_headers` carry the Patient, General Study and
  Patient Study modules (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2) into our objects, leaving out what
  must not propagate (the source's Referenced Study Sequence, whose items may lack the Type 1
  Referenced SOP Class UID).
* :func:`model_statement`, :func:`output_provenance` and :func:`validation_key` put every
  model's status and validation into words and codes that SR, PDF and API show verbatim.
* :func:`validate_findings` checks everything a report shows before any object is built.

Placement and UIDs
------------------
Every output goes into the *source study* (same Study Instance UID, Patient and Study modules
copied) in a *new series per output type*: SR (Series Number 9901), SEG (9902) and encapsulated
PDF (9903) by default.  Their UIDs (PS3.5 section 9) are derived, never random:

``UID = root + decimal(SHA-512(json(["lungcds output", source Series Instance UID,
pipeline version, kind, part])))``, truncated to 64 characters,

computed by :func:`pydicom.uid.generate_uid` with that single JSON string as entropy source
(JSON, so that no two different argument lists can concatenate to the same text).  ``kind`` is
``"sr"``, ``"seg"`` or ``"pdf"`` and ``part`` is ``"series"`` (Series Instance UID) or
``"instance"`` (SOP Instance UID).  ``root`` is :attr:`ReportContext.uid_prefix` -- a site's
own registered root, e.g. ``"1.2.826.0.1.9999."`` -- or, when none is configured, pydicom's
documented root ``1.2.826.0.1.3680043.8.498.`` (:data:`pydicom.uid.PYDICOM_ROOT_UID`); a root
is at most 40 characters so that at least 24 hash digits (about 80 bits) remain.  Hence:

* re-running the same job (same source series, same pipeline version) gives the same Series
  and SOP Instance UIDs, whatever the order of the headers, the time, the software version or
  the device serial number, so the new object replaces the old one in PACS instead of
  duplicating it;
* a new pipeline version (``Findings.pipeline_version``, which changes whenever an algorithm
  or its weights change) gives new UIDs: the earlier results stay in PACS next to the new ones;
* the not-analysable objects of :func:`reports.bundle.build_not_analysable` use the same
  kinds ("sr", "pdf"), so a later successful analysis of the same series with the same pipeline
  version carries the *same* SR and PDF UIDs and supersedes them (whether the archive then
  overwrites the stored instance or keeps the first copy is the archive's policy, e.g.
  Orthanc's ``OverwriteInstances``).

Tracking UIDs (TID 4108) of regions and model groups derive the same way from
``["lungcds tracking", series UID, pipeline version, name]``, and the Device Observer UID
(TID 1004) from ``["lungcds device observer", station name]``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid
from pydicom.valuerep import VR, PersonName

from models.findings import LESION_NAMES, LOBE_NAMES, REGION_NAMES, Findings, ModelRun
from reports import codes
from reports.severity import check_severity

__all__ = [
    "OUTPUT_CHARACTER_SET",
    "STATUS_WORDS",
    "OutputKind",
    "ProvenanceRecord",
    "ReportContext",
    "UidPart",
    "any_unvalidated",
    "banner_text",
    "check_finite",
    "check_source_series",
    "copy_patient_study",
    "evidence_headers",
    "find_output_run",
    "format_person_name",
    "check_reasons",
    "index_source_headers",
    "mask_source_run",
    "model_display_name",
    "model_statement",
    "output_provenance",
    "unvalidated_statement",
    "validate_findings",
    "validation_key",
]

OutputKind = Literal["sr", "seg", "pdf"]
UidPart = Literal["series", "instance"]

#: Specific Character Set of every object we write (UTF-8, PS3.3 C.12.1.1.2), whatever the
#: source used, so that names and free-text reasons in any script survive.
OUTPUT_CHARACTER_SET = "ISO_IR 192"

_KINDS: frozenset[str] = frozenset({"sr", "seg", "pdf"})
_PARTS: frozenset[str] = frozenset({"series", "instance"})
_UID_PREFIX = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")

#: Attributes copied from the source header: Patient (C.7.1.1), General Study (C.7.2.1)
#: and Patient Study (C.7.2.2) modules.  Referenced Study Sequence is deliberately absent.
_PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)
#: Type 2 attributes of those modules: present, possibly empty, in every object.
_TYPE2_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: Source attributes that must not be inherited by derived objects (see module docstring).
_NOT_INHERITED: tuple[str, ...] = ("ReferencedStudySequence",)

#: Outputs of ``Findings`` that come from a model, by attribute name.
_MODEL_OUTPUTS: tuple[str, ...] = ("corads", "stoic", "i3dr", "severity")
_DISPLAY_NAMES: Mapping[str, str] = {
    "corads": "CO-RADS",
    "stoic": "STOIC2021",
    "i3dr": "I3Dr",
    "severity": "CT severity score",
}
#: Model status (``ModelRun.status``) in words.
STATUS_WORDS: Mapping[str, str] = {
    "ran": "ran",
    "not_installed": "not installed",
    "skipped": "skipped",
    "failed": "failed",
}


def _check_lo(name: str, value: str) -> None:
    """Check a value for a DICOM LO element (PS3.5 6.2: 1-64 characters, no backslash)."""
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    if len(value) > 64 or "\\" in value:
        raise ValueError(f"{name} must be at most 64 characters without backslash, got {value!r}")


@dataclass(frozen=True)
class ReportContext:
    """Identity of the lungcds device and numbering of its output series.

    Parameters
    ----------
    software_version : str
        Software Versions (0018,1020) of every object, e.g. the package version.
    device_serial_number : str
        Device Serial Number (0018,1000), from the site configuration.
    manufacturer : str
        Manufacturer (0008,0070), General Equipment module (PS3.3 C.7.5.1).
    manufacturer_model_name : str
        Manufacturer's Model Name (0008,1090).
    institution_name : str or None
        Institution Name (0008,0080), optional.
    station_name : str
        Configured device name; also the Device Observer Name of the SR (TID 1004) and the
        seed of :attr:`device_observer_uid`.
    sr_series_number, seg_series_number, pdf_series_number : int
        Series Number (0020,0011) of the SR, SEG and encapsulated-PDF series.
    uid_prefix : str or None
        Organisation root for generated UIDs (ending in "."); pydicom's root when None.
    """

    software_version: str
    device_serial_number: str = "lungcds-1"
    manufacturer: str = "lungcds project"
    manufacturer_model_name: str = "lungcds"
    institution_name: str | None = None
    station_name: str = "lungcds"
    sr_series_number: int = 9901
    seg_series_number: int = 9902
    pdf_series_number: int = 9903
    uid_prefix: str | None = None

    def __post_init__(self) -> None:
        _check_lo("software_version", self.software_version)
        _check_lo("device_serial_number", self.device_serial_number)
        _check_lo("manufacturer", self.manufacturer)
        _check_lo("manufacturer_model_name", self.manufacturer_model_name)
        if self.institution_name is not None:
            _check_lo("institution_name", self.institution_name)
        if not self.station_name.strip() or len(self.station_name) > 16:
            raise ValueError(f"station_name must be 1-16 characters (SH), got {self.station_name!r}")
        numbers = (self.sr_series_number, self.seg_series_number, self.pdf_series_number)
        if any(n < 1 or n > 2**31 - 1 for n in numbers):
            raise ValueError(f"series numbers must be positive 32-bit integers, got {numbers}")
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"SR, SEG and PDF series numbers must differ, got {numbers}")
        if self.uid_prefix is not None and (not _UID_PREFIX.match(self.uid_prefix) or len(self.uid_prefix) > 40):
            raise ValueError(f"uid_prefix must look like '1.2.3.' (at most 40 characters), got {self.uid_prefix!r}")

    @property
    def _prefix(self) -> str:
        return self.uid_prefix if self.uid_prefix is not None else PYDICOM_ROOT_UID

    def _derive(self, *sources: str) -> str:
        """A UID under the root, hashed from one unambiguous JSON text of ``sources``."""
        return str(generate_uid(self._prefix, entropy_srcs=[json.dumps(list(sources))]))

    @property
    def device_observer_uid(self) -> str:
        """Device Observer UID (DCM 121012, TID 1004), stable for a given station name."""
        return self._derive("lungcds device observer", self.station_name)

    def output_uid(
        self,
        source_series_uid: str,
        pipeline_version: str,
        kind: OutputKind,
        part: UidPart,
        *,
        instance_variant: str = "",
    ) -> str:
        """Deterministic Series or SOP Instance UID of one of our outputs (house rule 7).

        Parameters
        ----------
        source_series_uid : str
            Series Instance UID of the analysed CT series.
        pipeline_version : str
            ``Findings.pipeline_version``; a new version yields new objects.
        kind : {"sr", "seg", "pdf"}
            Which output.
        part : {"series", "instance"}
            Series Instance UID (0020,000E) or SOP Instance UID (0008,0018).
        instance_variant : str, optional
            Distinguishes objects of different content in the same output series: the
            not-analysable SR/PDF share their series with a later successful analysis but
            keep their own SOP Instance UIDs (one UID, one content; PS3.3 C.12.1.1.1).

        Returns
        -------
        str
            A UID under :attr:`uid_prefix`, hashed from all four arguments (PS3.5 9.1).
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
        if part not in _PARTS:
            raise ValueError(f"part must be one of {sorted(_PARTS)}, got {part!r}")
        if not source_series_uid or not pipeline_version:
            raise ValueError("source_series_uid and pipeline_version must not be empty")
        if instance_variant and part == "instance":
            return self._derive("lungcds output", source_series_uid, pipeline_version, kind, part, instance_variant)
        return self._derive("lungcds output", source_series_uid, pipeline_version, kind, part)

    def tracking_uid(self, source_series_uid: str, pipeline_version: str, name: str) -> str:
        """Tracking Unique Identifier (DCM 112040, TID 4108) of a region or lesion.

        The SR measurement group and the SEG segment of the same region share this UID.
        """
        if not source_series_uid or not pipeline_version or not name:
            raise ValueError("source_series_uid, pipeline_version and name must not be empty")
        return self._derive("lungcds tracking", source_series_uid, pipeline_version, name)


def check_source_series(source_headers: Sequence[Dataset]) -> dict[str, Dataset]:
    """Check that the headers are one series of one study and index them by SOP Instance UID.

    Raises
    ------
    TypeError
        When an item is not a pydicom Dataset.
    ValueError
        When no header is given, a header lacks a Type 1 identifying attribute (SOP Class,
        SOP Instance, Study Instance or Series Instance UID), or the headers span several
        studies or series.
    """
    if len(source_headers) == 0:
        raise ValueError("no source headers given")
    by_uid: dict[str, Dataset] = {}
    for ds in source_headers:
        if not isinstance(ds, Dataset):
            raise TypeError(f"source headers must be pydicom Datasets, got {type(ds).__name__}")
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not ds.get(keyword):
                raise ValueError(f"source header lacks {keyword}")
        by_uid[str(ds.SOPInstanceUID)] = ds
    studies = {str(ds.StudyInstanceUID) for ds in source_headers}
    series = {str(ds.SeriesInstanceUID) for ds in source_headers}
    if len(studies) != 1 or len(series) != 1:
        raise ValueError(f"source headers span {len(studies)} studies and {len(series)} series, expected one each")
    return by_uid


def index_source_headers(findings: Findings, source_headers: Sequence[Dataset]) -> dict[str, Dataset]:
    """Validate the source CT headers against ``findings.volume`` and index them by SOP UID.

    Parameters
    ----------
    findings : Findings
        The analysis whose volume was built from these headers.
    source_headers : sequence of pydicom.Dataset
        Headers of the source series, in any order, with or without Pixel Data.

    Returns
    -------
    dict of str to pydicom.Dataset
        Headers keyed by SOP Instance UID.

    Raises
    ------
    ValueError
        As :func:`check_source_series`, or when a slice of the volume has no header.
    """
    by_uid = check_source_series(source_headers)
    missing = set(findings.volume.source_sop_instance_uids) - set(by_uid)
    if missing:
        raise ValueError(f"{len(missing)} slice(s) of the volume have no source header, e.g. {min(missing)}")
    return by_uid


def evidence_headers(source_headers: Sequence[Dataset]) -> list[Dataset]:
    """Copies of the source headers that highdicom may inherit patient and study data from.

    highdicom copies every root attribute of the Patient and Study modules from the first
    evidence dataset; the copies returned here lack the attributes of ``_NOT_INHERITED`` and
    the Pixel Data, so nothing invalid (and nothing large) reaches our objects.

    Elements not yet decoded are carried over as they are (immutable raw elements, decoded only
    if highdicom reads them); decoded ones are copied, sequences deeply. Deep-copying every
    element of every slice cost about 2 s per report for a 64-slice series.
    """
    cleaned = []
    for ds in source_headers:
        clone = Dataset()
        for tag in ds.keys():
            element = ds.get_item(tag)
            if tag.group == 0x7FE0 or element is None:
                continue
            if isinstance(element, DataElement):
                if element.keyword in _NOT_INHERITED:
                    continue
                element = copy.deepcopy(element) if element.VR == VR.SQ else copy.copy(element)
            elif keyword_for_tag(tag) in _NOT_INHERITED:
                continue
            clone[tag] = element
        if hasattr(ds, "file_meta"):
            clone.file_meta = copy.deepcopy(ds.file_meta)
        cleaned.append(clone)
    return cleaned


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy the Patient, General Study and Patient Study modules from ``source`` to ``target``.

    Type 2 attributes (PS3.5 7.4) absent from the source are written empty.  Values are copied
    decoded, so ``target`` may declare its own Specific Character Set (0008,0005); our objects
    use :data:`OUTPUT_CHARACTER_SET`.
    """
    for keyword in _PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            target[keyword] = copy.deepcopy(source[keyword])
    for keyword in _TYPE2_KEYWORDS:
        if keyword not in target:
            setattr(target, keyword, None)


def format_person_name(value: object) -> str:
    """Readable form of a DICOM PN value (PS3.5 6.2.1): "FAMILY, Given Middle (ideographic)".

    Empty or absent names give an empty string.
    """
    if value is None or str(value) == "":
        return ""
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    alphabetic = name.alphabetic
    parts = alphabetic.split("^") if alphabetic else []
    family = parts[0] if parts else ""
    given = " ".join(p for p in parts[1:3] if p)
    shown = f"{family}, {given}" if family and given else (family or given)
    ideographic = name.ideographic.replace("^", " ").strip() if name.ideographic else ""
    if ideographic:
        shown = f"{shown} ({ideographic})" if shown else ideographic
    return shown.strip()


def model_display_name(run: ModelRun) -> str:
    """Human name of a model ("CO-RADS" for ``corads``), else its registry name."""
    for key, display in _DISPLAY_NAMES.items():
        if run.name.lower().startswith(key):
            return display
    return run.name


def unvalidated_statement(run: ModelRun | None) -> str | None:
    """The UNVALIDATED statement owed by an output of ``run``, or None when it is validated.

    A run that used weights (``weights_sha256`` set) without validation carries generated
    demonstration weights; a run without weights is a method lacking clinical validation; an
    output without any run record has no provenance at all.
    """
    if run is None:
        return codes.UNVALIDATED_NO_PROVENANCE_STATEMENT
    if run.status != "ran" or run.validated:
        return None
    if run.weights_sha256:
        return codes.UNVALIDATED_WEIGHTS_STATEMENT
    return codes.UNVALIDATED_METHOD_STATEMENT


def validation_key(run: ModelRun | None) -> str | None:
    """Key of :data:`reports.codes.VALIDATION_VALUES` for an output of ``run``.

    None for a model that did not run (it has no output to qualify); "no_provenance" for an
    output without a run record; otherwise validated weights, weight-free method, generated
    (demo) weights or a method without clinical validation, as :func:`unvalidated_statement`.
    """
    if run is None:
        return "no_provenance"
    if run.status != "ran":
        return None
    if run.validated:
        return "validated_weights" if run.weights_sha256 else "weight_free"
    return "demo_weights" if run.weights_sha256 else "unvalidated_method"


def model_statement(run: ModelRun) -> str:
    """One sentence on what happened to a model, e.g. "CO-RADS model not run (not installed):
    no weights installed".  Validation is stated separately by :func:`unvalidated_statement`."""
    display = model_display_name(run)
    weights = f", weights SHA-256 {run.weights_sha256}" if run.weights_sha256 else ""
    if run.status == "ran":
        sentence = f"{display} model ran (version {run.version}{weights})"
        return f"{sentence}: {run.reason}" if run.reason else sentence
    return f"{display} model not run ({STATUS_WORDS[run.status]}): {run.reason or 'no reason given'}"


@dataclass(frozen=True)
class ProvenanceRecord:
    """Which model run produced an output of ``Findings`` and what must be said about it.

    Attributes
    ----------
    output : str
        Attribute name in ``Findings`` ("corads", "stoic", "i3dr", "severity").
    run : ModelRun or None
        The run record, or None when ``Findings.models`` has none for this output.
    """

    output: str
    run: ModelRun | None

    @property
    def validated(self) -> bool:
        """True only for outputs of a run with validated weights."""
        return self.run is not None and self.run.status == "ran" and self.run.validated

    @property
    def statement(self) -> str | None:
        """The UNVALIDATED statement for this output, None when validated."""
        return unvalidated_statement(self.run)

    @property
    def algorithm_name(self) -> str:
        """Algorithm Name (DCM 111001) for TID 4019."""
        return self.run.name if self.run is not None else f"lungcds {self.output}"

    @property
    def algorithm_version(self) -> str:
        """Algorithm Version (DCM 111003) for TID 4019."""
        return self.run.version if self.run is not None else "unknown"


def find_output_run(findings: Findings, output: str) -> ModelRun | None:
    """The run record of model output ``output`` ("corads", "stoic", "i3dr", "severity").

    ``findings.models[output]`` when present, else the single model whose name starts with
    ``output``; None when there is none or several.
    """
    exact = findings.models.get(output)
    if exact is not None:
        return exact
    candidates = [run for name, run in findings.models.items() if name.lower().startswith(output)]
    return candidates[0] if len(candidates) == 1 else None


def output_provenance(findings: Findings) -> dict[str, ProvenanceRecord]:
    """Provenance of every model output present in ``findings``.

    The run of output ``corads`` is ``findings.models["corads"]``, else the single model whose
    name starts with "corads"; an output without a run is reported as unvalidated.
    """
    present = {name: getattr(findings, name) for name in _MODEL_OUTPUTS}
    return {
        name: ProvenanceRecord(name, find_output_run(findings, name))
        for name, value in present.items()
        if value is not None
    }


def mask_source_run(findings: Findings, name: str) -> ModelRun | None:
    """The run record of the model that produced mask ``name`` (``Findings.mask_sources``), if any."""
    source = findings.mask_sources.get(name)
    return findings.models.get(source) if source is not None else None


def any_unvalidated(findings: Findings) -> bool:
    """True when any output shown by a report is unvalidated (every page then carries the banner)."""
    return findings.any_unvalidated_output or any(
        not record.validated for record in output_provenance(findings).values()
    )


def banner_text(findings: Findings) -> str | None:
    """Text of the red banner on every PDF page, or None when every output is validated.

    The banner names generated weights when any run used them, else the lack of validation.
    """
    if not any_unvalidated(findings):
        return None
    generated = any(
        run.status == "ran" and not run.validated and run.weights_sha256 for run in findings.models.values()
    )
    return codes.UNVALIDATED_BANNER if generated else codes.UNVALIDATED_METHOD_BANNER


def check_finite(name: str, value: float) -> float:
    """Return ``value`` as float, raising ValueError when it is not a finite number."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def validate_findings(findings: Findings) -> None:
    """Check everything a report shows from ``findings`` before any object is built.

    Raises
    ------
    TypeError
        When ``findings`` is not a :class:`models.findings.Findings`.
    ValueError
        When a measurement is filed under another region's name or is not finite, a mask is
        neither a region nor a lesion, ``mask_sources`` names a mask or model that does not
        exist or a model that did not run, an implausible quality verdict has no reason, a
        CO-RADS category is outside 1-5, a probability outside [0, 1], an I3Dr output or lobe
        is unknown, or the CT severity scores break the seeds/003 rules (see
        :func:`reports.severity.check_severity`).
    """
    if not isinstance(findings, Findings):
        raise TypeError(f"expected models.findings.Findings, got {type(findings).__name__}")
    if not findings.pipeline_version:
        raise ValueError("findings.pipeline_version must not be empty")
    for name, m in findings.measurements.items():
        if name != m.region:
            raise ValueError(f"measurements[{name!r}] describes region {m.region!r}")
        check_finite(f"{name}.volume_ml", m.volume_ml)
        for attr in ("fpv_ml", "laa950_pct", "perc15_hu", "mean_hu", "haa_pct"):
            value = getattr(m, attr)
            if value is not None:
                check_finite(f"{name}.{attr}", value)
    for key, run in findings.models.items():
        if key != run.name:
            raise ValueError(f"models[{key!r}] describes model {run.name!r}")
    for name in findings.masks:
        if name not in REGION_NAMES and name not in LESION_NAMES:
            raise ValueError(f"mask {name!r} is neither a region {REGION_NAMES} nor a lesion {LESION_NAMES}")
    for name, source in findings.mask_sources.items():
        if name not in findings.masks:
            raise ValueError(f"mask_sources names mask {name!r}, which findings.masks lacks")
        if source not in findings.models:
            raise ValueError(f"mask_sources[{name!r}] names model {source!r}, which findings.models lacks")
        if findings.models[source].status != "ran":
            raise ValueError(f"mask {name!r} comes from model {source!r}, which did not run")
    if findings.quality is not None:
        if not findings.quality.plausible and not findings.quality.reasons:
            raise ValueError("an implausible lung mask (findings.quality) must say why")
    if findings.corads is not None:
        if findings.corads.category not in codes.CORADS_CATEGORY_VALUES:
            raise ValueError(f"CO-RADS category must be 1-5, got {findings.corads.category}")
        check_finite("corads.score", findings.corads.score)
    if findings.stoic is not None:
        _check_stoic(findings)
    if findings.i3dr is not None:
        outputs = [("patient", findings.i3dr.patient)] + list(findings.i3dr.lobes.items())
        for site, values in outputs:
            if site != "patient" and site not in LOBE_NAMES:
                raise ValueError(f"i3dr lobe {site!r} is not one of {LOBE_NAMES}")
            for key, value in values.items():
                if key not in codes.I3DR_OUTPUT_CODES:
                    raise ValueError(f"unknown I3Dr output {key!r} for {site}")
                check_finite(f"i3dr.{site}.{key}", value)
    if findings.severity is not None:
        for lobe, values in findings.severity.lobes.items():
            for key, value in values.items():
                check_finite(f"severity.{lobe}.{key}", value)
        check_severity(findings.severity)


def check_reasons(reasons: Sequence[str]) -> list[str]:
    """The reasons a series could not be analysed, checked: at least one, none blank.

    Raises
    ------
    TypeError
        When ``reasons`` is a single string or holds something other than strings.
    ValueError
        When there is no reason or a reason is blank.
    """
    if isinstance(reasons, str):
        raise TypeError("reasons must be a sequence of strings, not one string")
    checked = []
    for reason in reasons:
        if not isinstance(reason, str):
            raise TypeError(f"reasons must be strings, got {type(reason).__name__}")
        if not reason.strip():
            raise ValueError("a reason must not be blank")
        checked.append(reason.strip())
    if not checked:
        raise ValueError("at least one reason is needed to report a series as not analysable")
    return checked


def _check_stoic(findings: Findings) -> None:
    """Every STOIC2021 probability (ensemble and members) is finite and in [0, 1]; one exists."""
    stoic = findings.stoic
    assert stoic is not None
    if stoic.p_covid is None and stoic.p_severe is None:
        raise ValueError("a STOIC2021 result needs P(COVID-19) or P(severe)")
    values = [(f"stoic.{attr}", getattr(stoic, attr)) for attr in ("p_covid", "p_severe")]
    values += [(f"stoic.members.{m}.{k}", v) for m, outputs in stoic.members.items() for k, v in outputs.items()]
    for where, value in values:
        if value is None:
            continue
        p = check_finite(where, value)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{where} must be a probability in [0, 1], got {p}")
