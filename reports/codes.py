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
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.coding import Code

__all__ = [
    "ANALYSIS_STATUS",
    "ANATOMICAL_STRUCTURE",
    "ARTIFICIAL_INTELLIGENCE",
    "ATTENUATION_COEFFICIENT",
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
    "FPV_RANGE_HU",
    "FUNCTIONAL_LUNG_VOLUME",
    "GROUND_GLASS_OPACITY",
    "HIGH_ATTENUATION_AREA",
    "I3DR_OUTPUT_CODES",
    "I3DR_OUTPUT_LABELS",
    "I3DR_OUTPUT_UNITS",
    "LANGUAGE_EN_US",
    "LESION",
    "LESION_CODES",
    "LOBE_INVOLVEMENT",
    "LOW_ATTENUATION_AREA_950",
    "LUNG_MASK_QUALITY",
    "MEAN",
    "MEASUREMENT_NOT_AVAILABLE",
    "MODEL_RUN_STATUS",
    "MODEL_STATUS_VALUES",
    "MORPHOLOGICALLY_ABNORMAL_STRUCTURE",
    "MORPHOLOGICAL_OPERATIONS",
    "NOT_ANALYSABLE",
    "NOT_ANALYSABLE_REASON",
    "NOT_ANALYSABLE_STATEMENT",
    "OUTPUT_VALIDATION_STATUS",
    "PERCENTILE_15_ATTENUATION",
    "PIPELINE_WARNING",
    "PRIVATE_CODING_SCHEME",
    "PRIVATE_SCHEME",
    "PROBABILITY_COVID19",
    "PROBABILITY_SEVERE_OUTCOME",
    "QUALITATIVE_EVALUATIONS",
    "QUALITY_FINDING",
    "QUALITY_IMPLAUSIBLE",
    "QUALITY_PLAUSIBLE",
    "REGION_CODES",
    "SEVERITY_CATEGORY_VALUES",
    "SOFTWARE_STATEMENT",
    "SUM_OF_SEGMENTED_VOXELS",
    "UCUM_DLCO",
    "UCUM_HOUNSFIELD_UNIT",
    "UCUM_LITER",
    "UCUM_MILLILITER",
    "UCUM_NO_UNITS",
    "UCUM_PERCENT",
    "UNVALIDATED_BANNER",
    "UNVALIDATED_INSTALLED_BANNER",
    "UNVALIDATED_MIXED_BANNER",
    "VALIDATION_VALUES",
    "VALUE_WITHHELD",
    "VOLUME",
    "WEIGHT_FREE_STATEMENT",
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

# --- qualitative evaluations and statements --------------------------------------------------

#: TID 1500 row 12 container "Qualitative Evaluations".
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
MEASUREMENT_NOT_AVAILABLE = Code("MEASNA", PRIVATE_SCHEME, "Measurement not available")
#: A learned value the plausibility gate withheld (``Findings.withheld``), with the reason as text.
VALUE_WITHHELD = Code("WITHHELD", PRIVATE_SCHEME, "Implausible value withheld")
MODEL_RUN_STATUS = Code("MODELSTATUS", PRIVATE_SCHEME, "Model run status")
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

#: Units of the I3Dr outputs: volumes and flows in litres, DLCO in mL/min/mmHg.
I3DR_OUTPUT_UNITS: Mapping[str, Code] = MappingProxyType(
    {key: (UCUM_DLCO if key == "dlco" else UCUM_LITER) for key in I3DR_OUTPUT_CODES}
)

# --- algorithms ---------------------------------------------------------------------------------

DENSITOMETRY_ALGORITHM = "lungcds lung densitometry"

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
