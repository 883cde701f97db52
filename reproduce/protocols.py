"""The study as data: the paper's tasks, its published figures, and the two protocols.

Protocol A follows the paper: the paper's composition (every COVID-19 image, controls from the
paediatric Kermany set only), 10-fold stratified CV over images, the MLP head.
Protocol B is the honest version of the same tasks: folds grouped by patient, duplicate images
removed (merged into one patient group where they are kept), plus two shortcut checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxr.classify.tasks import Condition, TaskSpec

PAPER_COMPOSITION = Condition.parse("label=covid | dataset=kermany")
ADULT_SOURCES = ("ieee8023", "actualmed")
POSITIVE = "covid"
HEAD = "mlp"
FOLDS = 10
# The source probe's two row sets, and the tasks the cross-source test trains on.
ALL_IMAGES = "all images"
NON_COVID = "non-COVID images only"

TASKS: dict[str, TaskSpec] = {
    "dataset 1, 3-class": TaskSpec(
        classes=("covid", "bacterial", "normal"), where=(PAPER_COMPOSITION,)
    ),
    "dataset 1, covid vs rest": TaskSpec(
        classes=("covid", "bacterial", "normal"), where=(PAPER_COMPOSITION,), binary=POSITIVE
    ),
    "dataset 2, 3-class": TaskSpec(
        merge={"pneumonia": ("bacterial", "viral")},
        classes=("covid", "pneumonia", "normal"),
        where=(PAPER_COMPOSITION,),
    ),
    "dataset 2, covid vs rest": TaskSpec(
        merge={"pneumonia": ("bacterial", "viral")},
        classes=("covid", "pneumonia", "normal"),
        where=(PAPER_COMPOSITION,),
        binary=POSITIVE,
    ),
}


CROSS_SOURCE_TASKS = ("dataset 1, covid vs rest", "dataset 2, 3-class")
# The generalisation gap: the paper's dataset 1 on whole films and on regions of them (stores
# `cxr features --region` builds), held-out sources, and where the MLP's evidence lies.
GAP_TASKS = ("dataset 1, 3-class", "dataset 1, covid vs rest")
REGIONS = ("centre-masked", "centre-only")
CAM_SAMPLE = 20  # films per class whose maps are drawn
GAP_CROSS_SOURCE = CROSS_SOURCE_TASKS[0]  # the gap table's cross-source row: trained on it
CROSS_SOURCE_DESIGN = "cross-source test: adult non-COVID-19 films (specificity)"
# The cross-source test set: adult films without COVID-19, from sources the paper's composition
# takes only COVID-19 images from (`cxr evaluate --test-where` twice: both must hold).
ADULT_NON_COVID = (
    Condition.parse(f"dataset={','.join(ADULT_SOURCES)}", "--test-where"),
    Condition.parse("label=bacterial,viral,normal", "--test-where"),
)


@dataclass(frozen=True)
class Protocol:
    key: str
    title: str
    group_by: str
    drop_duplicates: bool


PROTOCOLS = (
    Protocol("A", "the paper's protocol: image-level 10-fold CV", "none", False),
    Protocol("B", "honest: patient-grouped 10-fold CV, duplicates removed", "patient", True),
)

# Published figures (percent) beside which our protocol A table is printed.
PUBLISHED = [
    {
        "study": "Apostolopoulos & Mpesiana 2020",
        "setting": "MobileNetV2, 2-class, 10-fold",
        "accuracy": 96.78,
        "sensitivity": 98.66,
        "specificity": 96.46,
    },
    {
        "study": "our source study (reproduction)",
        "setting": "MobileNetV2 features + MLP",
        "accuracy": 99.0,
        "sensitivity": 98.0,
        "specificity": 99.0,
    },
]

SMALL_BACKBONES = ("mobilenet_v2_035", "mobilenet_025")

# What ../shared/weights/WEIGHTS.md says about each known weight file, by sha256.
WEIGHT_NOTES = {
    "cbcc2e374b53de3aa717972ce33ae164c76e3abc34f46d38e6b9b3934faf1e45": (
        "derived: TF-Hub MobileNetV2-1.0 int8 TFLite (google-coral/test_data) dequantized with "
        "BatchNorm folded; close to, not identical with, Keras' file"
    ),
    "9b369dc03509ff269d96b1cee5550fe83d6ae3d09bf11b555ede17f7903e54e7": (
        "Keras' Xception ImageNet base, taken bit-identical out of three PyPI model packages"
    ),
    "67c0e48867690db783f6eeac50b5f22cebf5d578f8ec07319fd300a6aabd9488": (
        "Keras' MobileNetV2-0.35 ImageNet base, taken out of two Teachable Machine exports"
    ),
    "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf": (
        "Keras-applications MobileNet-0.25 file, byte for byte"
    ),
}
