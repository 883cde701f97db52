"""Task selection: subsets, merges, one-vs-rest, metadata filters, exclusions, validation."""

import json

import numpy as np
import pytest

from cxr.classify.tasks import TaskSpec, select
from cxr.errors import CxrError
from cxr.store import load

FOUR = {"bacterial": 5, "covid": 5, "normal": 5, "viral": 5}


def dataset_of(row):
    return "ieee8023" if row["label"] == "covid" else "kermany"


def test_all_labels_by_default(make_synthetic_store):
    data = select(load(make_synthetic_store(FOUR)), TaskSpec())
    assert data.classes == ("bacterial", "covid", "normal", "viral")
    assert data.has_groups and len(data.y) == len(data.X) == len(data.groups)


def test_merge_then_subset(make_synthetic_store):
    fs = load(make_synthetic_store(FOUR))
    spec = TaskSpec.from_options("covid,pneumonia,normal", ["pneumonia=bacterial,viral"])
    data = select(fs, spec)
    assert data.classes == ("covid", "pneumonia", "normal")  # the order --classes gave
    pneumonia = np.isin(fs.labels, ["bacterial", "viral"]).sum()
    assert data.class_counts["pneumonia"] == pneumonia
    assert len(data.y) == len(fs)


def test_repeated_merges_add_up_instead_of_replacing(make_synthetic_store):
    fs = load(make_synthetic_store(FOUR))
    spec = TaskSpec.from_options(None, ["pneumonia=bacterial", "pneumonia=viral"])
    assert spec.merge == {"pneumonia": ("bacterial", "viral")}
    data = select(fs, spec)
    assert data.classes == ("covid", "normal", "pneumonia")
    assert data.class_counts["pneumonia"] == np.isin(fs.labels, ["bacterial", "viral"]).sum()


def test_a_class_merged_into_two_names_is_refused():
    with pytest.raises(CxrError, match="'viral' is merged into both 'pneumonia' and 'other'"):
        TaskSpec.from_options(None, ["pneumonia=bacterial,viral", "other=viral"])


def test_where_without_matches_lists_the_values_that_exist(make_synthetic_store):
    fs = load(make_synthetic_store(FOUR))
    with pytest.raises(
        CxrError,
        match=r"no rows match `where` label=Covid \(label has: "
        r"bacterial, covid, normal, viral\)",
    ):
        select(fs, TaskSpec.from_options(where=["label=Covid"]))


def test_binary_puts_the_positive_class_last(make_synthetic_store):
    fs = load(make_synthetic_store(FOUR))
    data = select(fs, TaskSpec.from_options("covid,bacterial,normal", binary="covid"))
    assert data.classes == ("non-covid", "covid")
    assert data.class_counts["covid"] == np.sum(fs.labels == "covid")
    assert data.class_counts["non-covid"] == np.isin(fs.labels, ["bacterial", "normal"]).sum()


def test_where_filters_on_metadata(make_synthetic_store):
    path = make_synthetic_store(FOUR, meta={"dataset": dataset_of})
    data = select(load(path), TaskSpec.from_options(where=["dataset=kermany"]))
    assert "covid" not in data.classes
    with pytest.raises(CxrError, match="no column 'hospital'"):
        select(load(path), TaskSpec.from_options(where=["hospital=x"]))
    with pytest.raises(CxrError, match="no rows match `where` dataset=nih"):
        select(load(path), TaskSpec.from_options(where=["dataset=nih"]))


def test_exclude_text_and_json_with_group_overrides(make_synthetic_store, tmp_path):
    fs = load(make_synthetic_store(FOUR))
    text = tmp_path / "exclude.txt"
    text.write_text(f"# audit\n{fs.ids[0]}\n{fs.rows['path'][1]}\n\n")
    assert len(select(fs, TaskSpec(exclude=text)).y) == len(fs) - 2
    doc = tmp_path / "audit.json"
    doc.write_text(json.dumps({"exclude": [fs.ids[0]], "groups": {fs.ids[5]: "dup-1"}}))
    data = select(fs, TaskSpec(exclude=doc))
    assert len(data.y) == len(fs) - 1
    assert data.groups[list(data.ids).index(fs.ids[5])] == "dup-1"


@pytest.mark.parametrize(
    "spec, message",
    [
        (TaskSpec.from_options("covid,flu"), "`classes`: no class 'flu'"),
        (TaskSpec.from_options(merge=["pneumonia=bacterial,fungal"]), "`merge`: no class 'fungal'"),
        (TaskSpec.from_options(binary="flu"), "`binary`: no class 'flu'"),
        (TaskSpec.from_options("covid"), "only 1 class left"),
    ],
)
def test_bad_tasks_name_the_store(make_synthetic_store, spec, message):
    path = make_synthetic_store(FOUR)
    with pytest.raises(CxrError, match=message) as info:
        select(load(path), spec)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_refused(make_synthetic_store, bad):
    fs = load(make_synthetic_store(FOUR))
    X = fs.X.copy()
    X[3, 1] = bad
    path = make_synthetic_store(FOUR, X=X, backbone="broken")
    with pytest.raises(CxrError, match="1 row\\(s\\) have NaN or infinite features"):
        select(load(path), TaskSpec())


@pytest.mark.parametrize("option", ["covid,", "=a", "x=", "novalue"])
def test_malformed_options(option):
    with pytest.raises(CxrError):
        TaskSpec.from_options(merge=[option] if option != "covid," else [], where=[option])


def test_where_alternatives_keep_either_match(make_synthetic_store):
    """The paper's composition: every COVID-19 image, but controls from one source only."""
    path = make_synthetic_store(
        {"covid": 6, "normal": 6},
        meta={"dataset": lambda r: "kermany" if r["path"][-5] in "02468" else "ieee8023"},
    )
    fs = load(path)
    spec = TaskSpec.from_options(where=["label=covid | dataset=kermany"])
    data = select(fs, spec)
    dataset = fs.column("dataset")
    expected = (fs.labels == "covid") | (dataset == "kermany")
    assert 0 < expected.sum() < len(fs)
    assert sorted(data.ids) == sorted(fs.ids[expected])
    assert spec.to_dict()["where"] == ["label=covid | dataset=kermany"]


def test_target_predicts_any_column(make_synthetic_store):
    path = make_synthetic_store(FOUR, meta={"dataset": dataset_of})
    fs = load(path)
    data = select(fs, TaskSpec.from_options(target="dataset"))
    assert data.classes == tuple(sorted(set(fs.column("dataset"))))
    assert [data.classes[i] for i in data.y] == list(fs.column("dataset"))
    with pytest.raises(CxrError, match="no column 'hospital'"):
        select(fs, TaskSpec.from_options(target="hospital"))
