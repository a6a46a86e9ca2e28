"""Coded concepts and fixed wording used by every lungcds report object.

Standard codes come from SNOMED CT (``SCT``), DICOM (``DCM``), LOINC (``LN``) and UCUM, as
listed in DICOM PS3.16 (Content Mapping Resource).  Concepts with no standard code (the
functional lung volume of thesis section 2.4.3, the emphysema index, model outputs, model
status) use the private coding scheme :data:`PRIVATE_SCHEME` ("99LUNGCDS"); PS3.16 section 8
reserves designators starting with "99" for private schemes, and every object that uses one
declares it in the Coding Scheme Identification Sequence (PS3.3 C.12.1.1.4) through
:data:`PRIVATE_CODING_SCHEME`.

Anatomy codes were checked against SNOMED CT: note that 45653009 is "Upper lobe of lung"
(no laterality); the right upper lobe is 42400003.  Severity qualifiers (None, Mild, Moderate,
Severe) are the SNOMED CT codes of pydicom's DICOM code dictionary.  Model run status,
validation status, lung-mask quality and "not analysable" are private coded values, so that a
receiving system can act on them without parsing text; each is accompanied by a text item
with the reason in words.

Weight-free zone densitometry (``Findings.densitometry``, issue 15) uses standard anatomy where
PS3.16 has it: the three lung zones are CID 6171 "Zone of Lung" (SCT 281392002/281393007/281394001,
also in CID 6126 "Location in Lung") with CID 244 laterality, and the core and rind of both lungs
are "Lung" with the CID 2 "Anatomic Modifier" topographical modifiers "Central" and "Peripheral".
Everything measured there -- density bands (with their HU range in the code meaning), tissue
mass, the *weight-free density-based zone score* (never the CT severity score), the well-aerated
share, the upper/lower LAA ratio, the LAA cluster exponent D, acquisition caveats and the
follow-up changes since a prior analysis -- has no DCM, SCT or LOINC concept in PS3.16 and is a
private concept of :data:`PRIVATE_SCHEME`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.coding import Code

from models.findings import DENSITY_BAND_RANGES_HU, DENSITY_BANDS

__all__ = [
    "ACQUISITION_CAVEAT",
    "ACQUISITION_PARAMETER",
    "ANALYSIS_STATUS",
    "ANATOMICAL_STRUCTURE",
    "AREA",
    "ARTIFICIAL_INTELLIGENCE",
    "ATTENUATION_COEFFICIENT",
    "CENTRAL",
    "CONSOLIDATION",
    "CORADS_CATEGORY",
    "CORADS_CATEGORY_VALUES",
    "CORADS_SCORE",
    "CT_CHEST_REPORT",
    "CT_OF_CHEST",
    "CT_SEVERITY_CATEGORY",
    "CT_SEVERITY_SCORE",
    "DECISION_SUPPORT",
    "DECISION_SUPPORT_STATEMENT",
    "DENSITOMETRY_ALGORITHM",
    "DENSITOMETRY_NOTE",
    "DENSITY_BAND_PERCENT_CODES",
    "DENSITY_BAND_VOLUME_CODES",
    "FOLLOWUP_ALGORITHM",
    "FOLLOWUP_CAVEAT",
    "FOLLOWUP_CHANGE_CODES",
    "FOLLOWUP_COMPARED",
    "FOLLOWUP_CRITERIA",
    "FOLLOWUP_NOT_COMPARED",
    "FOLLOWUP_REASON",
    "FOLLOWUP_STATUS",
    "FPV_RANGE_HU",
    "FUNCTIONAL_LUNG_VOLUME",
    "GROUND_GLASS_OPACITY",
    "HEADLINE_UNITS",
    "HIGH_ATTENUATION_AREA",
    "I3DR_OUTPUT_CODES",
    "I3DR_OUTPUT_LABELS",
    "I3DR_OUTPUT_UNITS",
    "INTERVAL_SINCE_PRIOR",
    "LAA_CLUSTER_COUNT",
    "LAA_CLUSTER_EXPONENT",
    "LAA_UPPER_LOWER_RATIO",
    "LANGUAGE_EN_US",
    "LEFT",
    "LESION",
    "LESION_CODES",
    "LOBE_INVOLVEMENT",
    "LOWER_ZONE_OF_LUNG",
    "LOW_ATTENUATION_AREA_950",
    "LUNG_MASK_QUALITY",
    "MEAN",
    "MEASUREMENT_NOT_AVAILABLE",
    "METHOD_DEFINITION",
    "MIDDLE_ZONE_OF_LUNG",
    "MODEL_DESCRIPTION",
    "MODEL_NOT_RUN",
    "MODEL_OUTPUT_NOTE",
    "MODEL_RUN_STATUS",
    "MODEL_STATUS_VALUES",
    "MORPHOLOGICALLY_ABNORMAL_STRUCTURE",
    "MORPHOLOGICAL_OPERATIONS",
    "NOT_ANALYSABLE",
    "NOT_ANALYSABLE_REASON",
    "NOT_ANALYSABLE_STATEMENT",
    "OUTPUT_VALIDATION_STATUS",
    "PERCENTILE_15_ATTENUATION",
    "PERIPHERAL",
    "PIPELINE_WARNING",
    "PRIOR_SR_STORAGE",
    "PRIOR_STUDY",
    "PRIVATE_CODING_SCHEME",
    "PRIVATE_SCHEME",
    "PROBABILITY_COVID19",
    "PROBABILITY_SEVERE_OUTCOME",
    "QUALITATIVE_EVALUATIONS",
    "QUALITY_FINDING",
    "QUALITY_IMPLAUSIBLE",
    "QUALITY_PLAUSIBLE",
    "REGION_CODES",
    "RIGHT",
    "SEVERITY_CATEGORY_VALUES",
    "SLICE_INVOLVEMENT",
    "SLICE_LAA_950",
    "SOFTWARE_STATEMENT",
    "SUM_OF_SEGMENTED_VOXELS",
    "TISSUE_MASS",
    "UCUM_DAY",
    "UCUM_DLCO",
    "UCUM_GRAM",
    "UCUM_HOUNSFIELD_UNIT",
    "UCUM_LITER",
    "UCUM_MILLILITER",
    "UCUM_NO_UNITS",
    "UCUM_PERCENT",
    "UCUM_SQUARE_CENTIMETER",
    "UNVALIDATED_BANNER",
    "UNVALIDATED_INSTALLED_BANNER",
    "UNVALIDATED_MIXED_BANNER",
    "UPPER_ZONE_OF_LUNG",
    "VALIDATION_VALUES",
    "VALUE_WITHHELD",
    "VOLUME",
    "WEIGHT_FREE_STATEMENT",
    "WELL_AERATED_CUTOFF_STATEMENT",
    "WELL_AERATED_REFERENCE",
    "WELL_AERATED_SHARE",
    "ZONE_INVOLVEMENT",
    "ZONE_SCORE",
    "ZONE_SCORE_ALGORITHM",
    "ZONE_SCORE_TOTAL",
    "ZONE_SITES",
    "ZoneSite",
]

#: Private coding scheme designator (PS3.16 section 8: "99" prefix = private scheme).
PRIVATE_SCHEME = "99LUNGCDS"

#: Declaration of :data:`PRIVATE_SCHEME` for the Coding Scheme Identification Sequence.
PRIVATE_CODING_SCHEME = CodingSchemeIdentificationItem(
    designator=PRIVATE_SCHEME,
    name="lungcds private concepts",
    version="1",
    responsible_organization="lungcds project",
)

# --- procedures and document titles -------------------------------------------------------

#: Language of content (TID 1204), as highdicom's MeasurementReport sets it.
LANGUAGE_EN_US = Code("en-US", "RFC5646", "English (United States)")
#: Procedure reported (TID 1500 row 4; CID 100 is extensible).
CT_OF_CHEST = Code("169069000", "SCT", "Computed tomography of chest")
#: Document title of the encapsulated PDF (CID 7000 "Diagnostic Imaging Report Document Titles").
CT_CHEST_REPORT = Code("24627-2", "LN", "CT Chest Report")

# --- anatomy (finding sites, segmented property types) -------------------------------------

#: SNOMED CT body structures for the region names of ``models.findings.REGION_NAMES``.
REGION_CODES: Mapping[str, Code] = MappingProxyType(
    {
        "lungs": Code("39607008", "SCT", "Lung"),
        "lung_left": Code("44029006", "SCT", "Left lung"),
        "lung_right": Code("3341006", "SCT", "Right lung"),
        "LUL": Code("44714003", "SCT", "Upper lobe of left lung"),
        "LLL": Code("41224006", "SCT", "Lower lobe of left lung"),
        "RUL": Code("42400003", "SCT", "Upper lobe of right lung"),
        "RML": Code("72481006", "SCT", "Middle lobe of right lung"),
        "RLL": Code("266005", "SCT", "Lower lobe of right lung"),
    }
)
#: CID 6171 "Zone of Lung" (also in CID 6126 "Location in Lung"): the finding sites of the weight-free
#: zones, which are thirds of each lung's height (geometric, like the radiographic zones).
UPPER_ZONE_OF_LUNG = Code("281392002", "SCT", "Upper zone of lung")
MIDDLE_ZONE_OF_LUNG = Code("281393007", "SCT", "Middle zone of lung")
LOWER_ZONE_OF_LUNG = Code("281394001", "SCT", "Lower zone of lung")
#: CID 244 "Laterality".
RIGHT = Code("24028007", "SCT", "Right")
LEFT = Code("7771000", "SCT", "Left")
#: CID 2 "Anatomic Modifier" (also CID 6125 "General Chest Location"): the core and the peripheral
#: rind of both lungs ("Subpleural", SCT 68599007 of CID 6126, is not a CID 2 modifier).
CENTRAL = Code("26216008", "SCT", "Central")
PERIPHERAL = Code("14414005", "SCT", "Peripheral")


class ZoneSite(NamedTuple):
    """Finding site (TID 1501 row 8 with its concept modifiers) of one weight-free zone region."""

    location: Code
    laterality: Code | None
    modifier: Code | None


#: Finding site of each region of ``models.findings.ZONE_REGIONS``; all standard codes.
ZONE_SITES: Mapping[str, ZoneSite] = MappingProxyType(
    {
        "RU": ZoneSite(UPPER_ZONE_OF_LUNG, RIGHT, None),
        "RM": ZoneSite(MIDDLE_ZONE_OF_LUNG, RIGHT, None),
        "RL": ZoneSite(LOWER_ZONE_OF_LUNG, RIGHT, None),
        "LU": ZoneSite(UPPER_ZONE_OF_LUNG, LEFT, None),
        "LM": ZoneSite(MIDDLE_ZONE_OF_LUNG, LEFT, None),
        "LL": ZoneSite(LOWER_ZONE_OF_LUNG, LEFT, None),
        "core": ZoneSite(REGION_CODES["lungs"], None, CENTRAL),
        "rind": ZoneSite(REGION_CODES["lungs"], None, PERIPHERAL),
    }
)
#: Segmented property type / finding type of lesion masks (CID 7151).
LESION = Code("52988006", "SCT", "Lesion")
#: The two kinds of infectious opacity (seeds/003).  No SNOMED CT code could be verified
#: offline for them, so they are private concepts (category stays SNOMED CT).
GROUND_GLASS_OPACITY = Code("GGO", PRIVATE_SCHEME, "Ground-glass opacity")
CONSOLIDATION = Code("CONSOLIDATION", PRIVATE_SCHEME, "Consolidation")
#: Segmented property type of each lesion mask of ``models.findings.LESION_NAMES``.
LESION_CODES: Mapping[str, Code] = MappingProxyType(
    {"lesions": LESION, "ggo": GROUND_GLASS_OPACITY, "consolidation": CONSOLIDATION}
)
#: Segmented property categories and finding categories (CID 7150).
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")

# --- algorithm families (CID 7162) -----------------------------------------------------------

MORPHOLOGICAL_OPERATIONS = Code("123104", "DCM", "Morphological Operations")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")

# --- measurement concepts (TID 300) ----------------------------------------------------------

#: CID 7469 "Generic Intensity and Size Measurements".
VOLUME = Code("118565006", "SCT", "Volume")
ATTENUATION_COEFFICIENT = Code("112031", "DCM", "Attenuation Coefficient")
#: CID 7464 "General Region of Interest Measurement Modifiers" (derivation).
MEAN = Code("373098007", "SCT", "Mean")
#: CID 7474 "Volume Measurement Methods".
SUM_OF_SEGMENTED_VOXELS = Code("126030", "DCM", "Sum of segmented voxel method for volume")

#: Lower and upper bound (HU, inclusive) of the functional lung volume, thesis section 2.4.3.
FPV_RANGE_HU: tuple[int, int] = (-950, -500)

FUNCTIONAL_LUNG_VOLUME = Code("FPV", PRIVATE_SCHEME, "Functional lung volume, -950 to -500 HU")
LOW_ATTENUATION_AREA_950 = Code("LAA950", PRIVATE_SCHEME, "Volume fraction below -950 HU")
PERCENTILE_15_ATTENUATION = Code("PERC15", PRIVATE_SCHEME, "15th percentile of attenuation")
HIGH_ATTENUATION_AREA = Code("HAA", PRIVATE_SCHEME, "High attenuation area fraction")

#: Tissue mass from attenuation (``RegionMeasurements.mass_g``); "Mass of parenchymal tissue" (DCM
#: 112194) belongs to breast composition (CID 6142), so it is private.
TISSUE_MASS = Code("TISSUEMASS", PRIVATE_SCHEME, "Tissue mass from CT attenuation")


def _hu(value: float) -> str:
    return f"{value:+g}" if value > 0 else f"{value:g}"


def _band_range(band: str) -> str:
    """A density band's HU range in words: "below -950 HU", "-950 to -700 HU", "+100 HU and above"."""
    low, high = DENSITY_BAND_RANGES_HU[band]
    if low is None and high is not None:
        return f"below {_hu(high)} HU"
    if high is None and low is not None:
        return f"{_hu(low)} HU and above"
    return f"{_hu(low or 0.0)} to {_hu(high or 0.0)} HU"


_BAND_KEYS: Mapping[str, tuple[str, str]] = {
    "emphysema": ("EMPH", "emphysema-like"),
    "well_aerated": ("WELL", "well aerated"),
    "poorly_aerated": ("POOR", "poorly aerated"),
    "non_aerated": ("NONAER", "non-aerated"),
    "other": ("ABOVE", "not parenchyma"),
}
#: Volume (mL) of each density band of ``models.findings.DENSITY_BANDS`` in a region, with the band's
#: HU range ([low, high)) in the code meaning.
DENSITY_BAND_VOLUME_CODES: Mapping[str, Code] = MappingProxyType(
    {
        band: Code(f"VOL{_BAND_KEYS[band][0]}", PRIVATE_SCHEME, f"Volume {_band_range(band)}, {_BAND_KEYS[band][1]}")
        for band in DENSITY_BANDS
    }
)
#: Share (% of the region's volume) of each density band.
DENSITY_BAND_PERCENT_CODES: Mapping[str, Code] = MappingProxyType(
    {
        band: Code(
            f"PCT{_BAND_KEYS[band][0]}", PRIVATE_SCHEME, f"Percent of region {_band_range(band)}, {_BAND_KEYS[band][1]}"
        )
        for band in DENSITY_BANDS
    }
)

#: The weight-free density-based zone score (``Densitometry.zone_scores``): named so, never "CT severity
#: score", which is the lobar score of learned lesion masks (:data:`CT_SEVERITY_SCORE`).
ZONE_SCORE = Code("ZONESCORE", PRIVATE_SCHEME, "Weight-free density-based zone score")
ZONE_SCORE_TOTAL = Code("ZONESCORETOTAL", PRIVATE_SCHEME, "Weight-free density-based zone score, total of six zones")
#: The share of a zone the zone score is computed from (poorly or non-aerated, -700 to +100 HU).
ZONE_INVOLVEMENT = Code("ZONEINVOLVED", PRIVATE_SCHEME, "Percent of zone -700 to +100 HU, poorly or non-aerated")
#: Well-aerated share of both lungs (``Densitometry.well_aerated_pct``), set beside Colombi's cut-off.
WELL_AERATED_SHARE = Code("WELLAERATED", PRIVATE_SCHEME, "Well-aerated share of both lungs, -950 to -700 HU")
WELL_AERATED_REFERENCE = Code("WELLAERATEDREF", PRIVATE_SCHEME, "Well-aerated share and published cut-off")
#: Emphysema distribution (``EmphysemaDetail``).
LAA_UPPER_LOWER_RATIO = Code("LAAULRATIO", PRIVATE_SCHEME, "Upper to lower zone LAA-950 ratio")
LAA_CLUSTER_EXPONENT = Code("LAACLUSTERD", PRIVATE_SCHEME, "LAA-950 cluster size exponent D")
LAA_CLUSTER_COUNT = Code("LAACLUSTERN", PRIVATE_SCHEME, "Number of LAA-950 clusters")
#: Measurements of a lung on its axial key slice, inside the outline the SR draws there
#: (:mod:`reports.sr_key_slice`): an area and shares of that area, not of a volume.
AREA = Code("42798000", "SCT", "Area")
SLICE_LAA_950 = Code("SLICELAA950", PRIVATE_SCHEME, "Area fraction below -950 HU on the slice")
SLICE_INVOLVEMENT = Code("SLICEINVOLVED", PRIVATE_SCHEME, "Area fraction -700 to +100 HU on the slice")

#: Follow-up: the change of each headline number (``models.findings.HEADLINE_KEYS``) since the prior analysis.
FOLLOWUP_CHANGE_CODES: Mapping[str, Code] = MappingProxyType(
    {
        "lung_volume_ml": Code("CHGLUNGVOL", PRIVATE_SCHEME, "Change of lung volume since prior"),
        "well_aerated_pct": Code("CHGWELLAERATED", PRIVATE_SCHEME, "Change of well-aerated share since prior"),
        "zone_score_total": Code(
            "CHGZONESCORE", PRIVATE_SCHEME, "Change of weight-free density-based zone score since prior"
        ),
        "laa950_pct": Code("CHGLAA950", PRIVATE_SCHEME, "Change of LAA-950 since prior"),
        "perc15_hu": Code("CHGPERC15", PRIVATE_SCHEME, "Change of 15th percentile of attenuation since prior"),
        "lung_mass_g": Code("CHGLUNGMASS", PRIVATE_SCHEME, "Change of lung mass since prior"),
    }
)
INTERVAL_SINCE_PRIOR = Code("PRIORINTERVAL", PRIVATE_SCHEME, "Interval since prior study")

# --- qualitative evaluations and statements --------------------------------------------------

#: TID 1500 row 12 container "Qualitative Evaluations".
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
MEASUREMENT_NOT_AVAILABLE = Code("MEASNA", PRIVATE_SCHEME, "Measurement not available")
#: A learned value the plausibility gate withheld (``Findings.withheld``), with the reason as text.
VALUE_WITHHELD = Code("WITHHELD", PRIVATE_SCHEME, "Implausible value withheld")
MODEL_RUN_STATUS = Code("MODELSTATUS", PRIVATE_SCHEME, "Model run status")
#: A model that did not run, named in words with its reason: below the report-level coded
#: :data:`MODEL_RUN_STATUS` of its status, so that models without a result need no group.
MODEL_NOT_RUN = Code("MODELNOTRUN", PRIVATE_SCHEME, "Model not run")
#: What a model is, in a sentence (``ModelRun.description``): not its run status.
MODEL_DESCRIPTION = Code("MODELDESC", PRIVATE_SCHEME, "Model description")
#: What a model's outputs mean or lack (the STOIC2021 ensemble's notes): not its run status.
MODEL_OUTPUT_NOTE = Code("OUTPUTNOTE", PRIVATE_SCHEME, "Note on the model outputs")
OUTPUT_VALIDATION_STATUS = Code("VALIDATION", PRIVATE_SCHEME, "Output validation status")
DECISION_SUPPORT = Code("DECSUPPORT", PRIVATE_SCHEME, "Decision support statement")
PIPELINE_WARNING = Code("PIPEWARNING", PRIVATE_SCHEME, "Analysis pipeline warning")

#: Coded values of :data:`MODEL_RUN_STATUS`, keyed by ``ModelRun.status``.
MODEL_STATUS_VALUES: Mapping[str, Code] = MappingProxyType(
    {
        "ran": Code("RAN", PRIVATE_SCHEME, "Model ran"),
        "not_installed": Code("NOTINSTALLED", PRIVATE_SCHEME, "Model not installed, no result"),
        "skipped": Code("SKIPPED", PRIVATE_SCHEME, "Model skipped, no result"),
        "failed": Code("FAILED", PRIVATE_SCHEME, "Model failed, no result"),
    }
)
#: Coded values of :data:`OUTPUT_VALIDATION_STATUS`, keyed by ``ModelRun.provenance``.
VALIDATION_VALUES: Mapping[str, Code] = MappingProxyType(
    {
        "weight_free": Code("WEIGHTFREE", PRIVATE_SCHEME, "Weight-free method (no trained weights)"),
        "generated_weights": Code("DEMOWEIGHTS", PRIVATE_SCHEME, "UNVALIDATED: generated demonstration weights"),
        "installed_validated": Code("VALIDWEIGHTS", PRIVATE_SCHEME, "Installed weights with validation statement"),
        "installed_unvalidated": Code(
            "UNVALWEIGHTS", PRIVATE_SCHEME, "UNVALIDATED: installed weights, no validation statement"
        ),
    }
)

#: Quality gate of the lung mask (``Findings.quality``).
LUNG_MASK_QUALITY = Code("MASKQUALITY", PRIVATE_SCHEME, "Lung mask quality")
QUALITY_PLAUSIBLE = Code("PLAUSIBLE", PRIVATE_SCHEME, "Lung mask plausible")
QUALITY_IMPLAUSIBLE = Code("IMPLAUSIBLE", PRIVATE_SCHEME, "Lung mask implausible, dependent models skipped")
QUALITY_FINDING = Code("QUALITYREASON", PRIVATE_SCHEME, "Lung mask quality finding")

#: A series routed for analysis that could not be analysed (``reports.build_not_analysable``).
ANALYSIS_STATUS = Code("ANALYSIS", PRIVATE_SCHEME, "Analysis status")
NOT_ANALYSABLE = Code("NOTANALYSABLE", PRIVATE_SCHEME, "Series not analysable, no results")
NOT_ANALYSABLE_REASON = Code("NAREASON", PRIVATE_SCHEME, "Reason series is not analysable")

#: Weight-free densitometry: definitions in words (``Densitometry.methods``) and caveats (notes).
METHOD_DEFINITION = Code("METHOD", PRIVATE_SCHEME, "Method definition")
DENSITOMETRY_NOTE = Code("DENSNOTE", PRIVATE_SCHEME, "Densitometry caveat")
#: Acquisition as it biases densitometry (``Findings.acquisition``), report level.
ACQUISITION_PARAMETER = Code("ACQPARAM", PRIVATE_SCHEME, "Acquisition parameter affecting densitometry")
ACQUISITION_CAVEAT = Code("ACQCAVEAT", PRIVATE_SCHEME, "Acquisition caveat for densitometry")

#: Follow-up comparison with the patient's latest prior analysis (``Findings.followup``).
FOLLOWUP_STATUS = Code("FOLLOWUP", PRIVATE_SCHEME, "Follow-up comparison with prior analysis")
FOLLOWUP_COMPARED = Code("COMPARED", PRIVATE_SCHEME, "Compared with prior analysis")
FOLLOWUP_NOT_COMPARED = Code("NOTCOMPARED", PRIVATE_SCHEME, "Not compared with a prior analysis")
PRIOR_STUDY = Code("PRIORSTUDY", PRIVATE_SCHEME, "Prior study of the follow-up comparison")
FOLLOWUP_REASON = Code("FUREASON", PRIVATE_SCHEME, "Reason not compared with prior analysis")
FOLLOWUP_CAVEAT = Code("FUCAVEAT", PRIVATE_SCHEME, "Follow-up comparison caveat")
FOLLOWUP_CRITERIA = Code("FUCRITERIA", PRIVATE_SCHEME, "Follow-up comparability criteria")

# --- model outputs ----------------------------------------------------------------------------

CORADS_CATEGORY = Code("CORADSCAT", PRIVATE_SCHEME, "CO-RADS category")
#: Coded values of :data:`CORADS_CATEGORY`, keyed by category 1-5.
CORADS_CATEGORY_VALUES: Mapping[int, Code] = MappingProxyType(
    {n: Code(f"CORADS{n}", PRIVATE_SCHEME, f"CO-RADS {n}") for n in range(1, 6)}
)
CORADS_SCORE = Code("CORADSSCORE", PRIVATE_SCHEME, "CO-RADS ensemble score")
PROBABILITY_COVID19 = Code("PCOVID", PRIVATE_SCHEME, "Probability of COVID-19")
#: STOIC2021 severe outcome: intubation or death within one month.
PROBABILITY_SEVERE_OUTCOME = Code("PSEVERE", PRIVATE_SCHEME, "Probability of intubation or death within one month")

#: I3Dr outputs (architecture spec, ``result.json`` key ``i3dr``) as estimated quantities.
I3DR_OUTPUT_CODES: Mapping[str, Code] = MappingProxyType(
    {
        "pv_l": Code("I3DRPV", PRIVATE_SCHEME, "Estimated lung volume"),
        "fpv_l": Code("I3DRFPV", PRIVATE_SCHEME, "Estimated functional lung volume"),
        "fev1_pre_l": Code("I3DRFEV1PRE", PRIVATE_SCHEME, "Estimated FEV1 before bronchodilator"),
        "fev1_post_l": Code("I3DRFEV1POST", PRIVATE_SCHEME, "Estimated FEV1 after bronchodilator"),
        "fvc_pre_l": Code("I3DRFVCPRE", PRIVATE_SCHEME, "Estimated FVC before bronchodilator"),
        "fvc_post_l": Code("I3DRFVCPOST", PRIVATE_SCHEME, "Estimated FVC after bronchodilator"),
        "dlco": Code("I3DRDLCO", PRIVATE_SCHEME, "Estimated diffusing capacity for CO"),
    }
)
LOBE_INVOLVEMENT = Code("INVOLVEMENT", PRIVATE_SCHEME, "Lesion involvement of lobe")
CT_SEVERITY_SCORE = Code("CTSS", PRIVATE_SCHEME, "CT severity score")
#: Severity category of the total CT severity score (seeds/003: mild 1-5, moderate 6-14,
#: severe 15-25; 0 is no involvement), valued with SNOMED CT severity qualifiers.
CT_SEVERITY_CATEGORY = Code("CTSSCATEGORY", PRIVATE_SCHEME, "CT severity category")
SEVERITY_CATEGORY_VALUES: Mapping[str, Code] = MappingProxyType(
    {
        "none": Code("260413007", "SCT", "None"),
        "mild": Code("255604002", "SCT", "Mild"),
        "moderate": Code("6736007", "SCT", "Moderate"),
        "severe": Code("24484000", "SCT", "Severe"),
    }
)

#: Short labels of the I3Dr outputs (PDF tables and chart).
I3DR_OUTPUT_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "pv_l": "PV",
        "fpv_l": "FPV",
        "fev1_pre_l": "FEV1 pre",
        "fev1_post_l": "FEV1 post",
        "fvc_pre_l": "FVC pre",
        "fvc_post_l": "FVC post",
        "dlco": "DLCO",
    }
)

# --- units (UCUM, CID 7181 and PS3.16 section 7.2) ------------------------------------------

UCUM_MILLILITER = Code("ml", "UCUM", "milliliter")
UCUM_LITER = Code("l", "UCUM", "liter")
UCUM_PERCENT = Code("%", "UCUM", "Percent")
UCUM_HOUNSFIELD_UNIT = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
UCUM_NO_UNITS = Code("1", "UCUM", "no units")
UCUM_DLCO = Code("ml/min/mm[Hg]", "UCUM", "milliliter per minute per millimeter of mercury")

UCUM_GRAM = Code("g", "UCUM", "gram")
UCUM_SQUARE_CENTIMETER = Code("cm2", "UCUM", "square centimeter")
UCUM_DAY = Code("d", "UCUM", "day")

#: Units of the I3Dr outputs: volumes and flows in litres, DLCO in mL/min/mmHg.
I3DR_OUTPUT_UNITS: Mapping[str, Code] = MappingProxyType(
    {key: (UCUM_DLCO if key == "dlco" else UCUM_LITER) for key in I3DR_OUTPUT_CODES}
)

#: Unit of each headline number (``models.findings.HEADLINE_KEYS``) and of its change.
HEADLINE_UNITS: Mapping[str, Code] = MappingProxyType(
    {
        "lung_volume_ml": UCUM_MILLILITER,
        "well_aerated_pct": UCUM_PERCENT,
        "zone_score_total": UCUM_NO_UNITS,
        "laa950_pct": UCUM_PERCENT,
        "perc15_hu": UCUM_HOUNSFIELD_UNIT,
        "lung_mass_g": UCUM_GRAM,
    }
)
#: SOP Class of a prior lungcds SR (Comprehensive 3D SR Storage, PS3.4 B.5), referenced as other evidence.
PRIOR_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"

# --- algorithms ---------------------------------------------------------------------------------

DENSITOMETRY_ALGORITHM = "lungcds lung densitometry"
ZONE_SCORE_ALGORITHM = "lungcds weight-free density-based zone score"
FOLLOWUP_ALGORITHM = "lungcds follow-up comparison"

# --- fixed wording -------------------------------------------------------------------------------

DECISION_SUPPORT_STATEMENT = (
    "This is computer-generated decision support, not a diagnosis. All results must be "
    "reviewed and interpreted by a qualified radiologist in the clinical context."
)
WEIGHT_FREE_STATEMENT = (
    "Lung volumes and attenuation come from a classical, weight-free lung mask (no trained network); "
    "lobe measurements come from a learned lobe mask and are listed apart, with its provenance."
)
SOFTWARE_STATEMENT = (
    "lungcds is decision-support software for chest CT. It outlines the lungs (and, when the "
    "models are installed, the lobes and infectious opacities), measures volumes and attenuation, "
    "and reports the outputs of the CO-RADS, STOIC2021 and I3Dr models described in its documentation."
)
NOT_ANALYSABLE_STATEMENT = (
    "This CT series was received and checked by lungcds but could not be analysed, so no "
    "measurements or model results follow. The reasons are listed below."
)
#: Banners of the PDF pages (``reports.identity.banner_text``): what makes outputs unvalidated.
UNVALIDATED_BANNER = "UNVALIDATED \u2014 generated weights, not for clinical use"
UNVALIDATED_INSTALLED_BANNER = "UNVALIDATED \u2014 weights without validation statement, not for clinical use"
UNVALIDATED_MIXED_BANNER = "UNVALIDATED \u2014 generated and unvalidated weights, not for clinical use"
#: What Colombi's well-aerated cut-off is and is not, when the densitometry does not say it in its methods.
WELL_AERATED_CUTOFF_STATEMENT = (
    "Reference, not a verdict: Colombi et al. (Radiology 2020;296:E86-E96) found, in one cohort of patients with "
    "COVID-19 pneumonia and with their own software, that well-aerated lung (-950 to -700 HU) below the cut-off "
    "was associated with ICU admission or death (odds ratio 3.8). It is not a diagnosis or a prognosis for this "
    "patient, and the cut-off has not been validated for this software."
)
