"""What a new user hit, each now said or shown: Ctrl-C, copies counted, predict's CSV, lone
results, and the plots (confusion shares, the ROC's operating point, reliability labels, the
leave-out forest plot)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import make_class_folders, small_weights
from typer.testing import CliRunner

import cxr
from cxr.cli import app
from cxr.store.schema import parts_dir

runner = CliRunner()


def test_ctrl_c_in_features_says_what_was_kept_and_how_to_go_on(tmp_path, monkeypatch):
    """It exited without a word."""
    features = tmp_path / "features"

    def interrupted(**options):
        parts = parts_dir(options["features_dir"], "mobilenet_025")
        parts.mkdir(parents=True)
        for n in range(3):  # three committed batches, as a real run leaves them
            (parts / f"run-{n:07d}.h5").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr("cxr.extract.runner.extract_features", interrupted)
    data = make_class_folders(tmp_path / "data")
    args = ["features", str(data), "-b", "mobilenet_025", "--features", str(features)]
    result = runner.invoke(app, args)
    assert result.exit_code == 130
    assert result.stderr.strip() == (
        f"stopped: interrupted: 3 batch(es) of mobilenet_025 kept in {features}; run the same "
        "command to resume"
    )


def test_copies_are_counted_so_the_bar_adds_up(tmp_path):
    """17 files, 16 distinct: the bar said 16/16 and nothing said why."""
    data = make_class_folders(tmp_path / "data", per_class=3)
    shutil.copyfile(data / "covid" / "img000.png", data / "normal" / "again.png")
    args = ["features", str(data), "-b", "mobilenet_025", "--features", str(tmp_path / "f")]
    result = runner.invoke(app, [*args, *(f for w in small_weights() for f in ("--weights", w))])
    assert result.exit_code == 0, result.output
    assert (
        "7 files in" in result.output
        and "6 distinct images (1 file(s) hold the same bytes as another" in result.output
    )


def _leave_out_store(make_synthetic_store):
    def site(record):
        return f"s{int(record['patient_id'].rsplit('-p', 1)[1]) % 3}"

    return make_synthetic_store({"covid": 12, "normal": 12}, meta={"site": site})


def test_a_lone_result_is_not_called_best(make_synthetic_store):
    """With one head, each held-out value has one result: every row said 'best'."""
    path = _leave_out_store(make_synthetic_store)
    args = ["evaluate", "--features", str(path.parent), "--head", "logreg", "--leave-out", "site"]
    result = runner.invoke(app, [*args, "--bootstrap", "50", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "logreg" in line and line[:3].strip()]
    rows = [row for row in rows if row.split()[0].isdigit()]  # the summary's numbered rows
    assert len(rows) == 3 and all("(only result)" in row and "best" not in row for row in rows)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plots module saves, by file name, kept open for inspection."""
    import matplotlib.pyplot as plt

    from cxr.classify import plots

    kept = {}

    def save(fig, path):
        fig.tight_layout()
        kept[Path(path).name] = fig
        return str(path)

    monkeypatch.setattr(plots, "_save", save)
    yield kept
    plt.close("all")


def test_the_plots_show_shares_the_operating_point_and_labels_off_the_markers(
    make_synthetic_store, tmp_path, figures
):
    path = make_synthetic_store({"covid": 12, "normal": 12}, separation=2.0)
    ev = cxr.evaluate(path.parent, heads=["logreg"], folds=3, bootstrap=50, jobs=1)
    ev.plot(tmp_path)
    [confusion] = [f for n, f in figures.items() if n.endswith("-confusion.png")]
    texts = [t.get_text() for t in confusion.axes[0].texts]
    assert all("\n" in t and t.endswith("%") for t in texts)  # counts only, before
    rows = np.asarray(ev.results[0]["confusion_matrix"])
    first = f"{rows[0, 0]}\n{rows[0, 0] / rows[0].sum():.0%}"
    assert texts[0] == first
    [roc] = [f for n, f in figures.items() if n.endswith("-roc.png")]
    labels = [line.get_label() for line in roc.axes[0].get_lines()]
    assert any("at specificity >= 95%" in label for label in labels)  # absent before
    [reliability] = [f for n, f in figures.items() if n.endswith("-reliability.png")]
    for note in reliability.axes[0].texts:  # the counts: beside the point, never on it
        dx, dy = note.xyann
        assert dx == 0 and abs(dy) >= 7


def test_the_leave_out_forest_plot_groups_each_held_out_value_and_says_the_colours(
    make_synthetic_store, tmp_path, figures
):
    """Every held-out value had a 'best' dot on one shared axis, with no key to the colours."""
    path = _leave_out_store(make_synthetic_store)
    ev = cxr.evaluate(path.parent, heads=["logreg", "knn"], leave_out="site", bootstrap=50, jobs=1)
    ev.plot(tmp_path)
    [forest] = [f for n, f in figures.items() if "-forest-" in n]
    ax = forest.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()][::-1]  # top to bottom
    held = [name.rsplit(" | ", 1)[1] for name in names]
    assert held == ["s0", "s0", "s1", "s1", "s2", "s2"]  # grouped by held-out value
    separators = [line for line in ax.get_lines() if line.get_color() == "lightgrey"]
    assert len(separators) == 2
    title = ax.get_title().replace("\n", " ")
    assert "Black: the best of its held-out value" in title and "grey: worse" in title


def test_predict_writes_a_csv_of_every_image(make_synthetic_store, tmp_path, monkeypatch):
    """JSON only, before; a clinician wanted a sheet."""
    import types

    from cxr.store import load
    from cxr.store.schema import Reject

    store = make_synthetic_store({"covid": 10, "normal": 10}, attrs={"weights_sha256": "ab" * 32})
    fs = load(store)
    model = tmp_path / "m.skops"
    args = ["train", "--features", str(store.parent), "--head", "logreg", "--out", str(model)]
    assert runner.invoke(app, args).exit_code == 0
    images = tmp_path / "new"
    images.mkdir()
    names = [Path(p).name for p in fs.rows["path"][:3]]
    for name in [*names, "=cmd.png"]:
        (images / name).write_bytes(b"")

    def embed(inputs, *, backbone, weights, **options):
        return types.SimpleNamespace(
            X=fs.X[:3],
            paths=[str(images / n) for n in names],
            rejected=[Reject("=cmd.png", "cannot decode")],  # a name a spreadsheet would run
            attrs=dict(fs.attrs),
        )

    monkeypatch.setattr("cxr.extract.runner.embed_images", embed)
    out = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", str(images), "--model", str(model), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["image", "predicted", "p_covid", "p_normal", "rejected"]
    assert len(rows) == 4 and all(abs(float(r["p_covid"]) + float(r["p_normal"]) - 1) < 1e-6
                                  for r in rows[:3])  # fmt: skip
    assert rows[3] == {
        "image": "'=cmd.png", "predicted": "", "p_covid": "", "p_normal": "",
        "rejected": "cannot decode",
    }  # fmt: skip
