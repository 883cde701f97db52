"""`cxr evaluate` end to end through Typer: report, JSON shape, plots, bad input, no TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import FOUR, evaluate, save_png
from typer.testing import CliRunner

from cxr.classify.heads import HEADS, parse_params
from cxr.classify.plots import roc_classes
from cxr.cli import app
from cxr.errors import CxrError
from cxr.store import load

runner = CliRunner()
FAST = ["--head", "logreg", "--head", "knn", "--folds", "3", "--bootstrap", "100", "--jobs", "1"]


def run(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def test_report_and_json_shape(make_synthetic_store, tmp_path):
    path = make_synthetic_store()
    out = tmp_path / "reports" / "evaluate.json"
    result = run("--features", path.parent, *FAST, "--json", out)
    assert result.exit_code == 0, result.output
    for text in (
        "StratifiedGroupKFold by patient",
        "logreg",
        "Confusion",
        "Provenance",
        "clinical",
    ):
        assert text in result.output
    report = json.loads(out.read_text())
    entry = report["results"][0]
    assert {"backbone", "head", "task", "cv", "n", "classes", "metrics", "confusion_matrix"} <= set(
        entry
    )
    assert entry["cv"] == {
        "scheme": "StratifiedGroupKFold",
        "folds": 3,
        "repeats": 1,
        "seed": 0,
        "grouped": True,
        "unit": "patient",
    }
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        assert set(entry["metrics"][name]) >= {"mean", "std", "ci95"}
    per_class = entry["metrics"]["per_class"]["covid"]
    assert set(per_class) >= {"sensitivity", "specificity", "precision", "f1"}
    assert np.sum(entry["confusion_matrix"]) == entry["n"] == len(load(path))
    prov = report["provenance"]
    assert prov["stores"]["mobilenet_v2"]["weights_sha256"] == "ab" * 32
    assert "sklearn" in prov["versions"]


def test_paper_two_class_task_without_patient_ids(make_synthetic_store, tmp_path):
    counts = {"bacterial": 10, "covid": 10, "normal": 10, "viral": 10}
    path = make_synthetic_store(counts, patient_ids=False)
    out = tmp_path / "r.json"
    result = run(
        "--features",
        path.parent,
        *FAST,
        "--merge",
        "pneumonia=bacterial,viral",
        "--classes",
        "covid,pneumonia,normal",
        "--binary",
        "covid",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "optimistic" in result.output and "StratifiedKFold by image" in result.output
    entry = json.loads(out.read_text())["results"][0]
    assert entry["classes"] == ["non-covid", "covid"] and entry["cv"]["grouped"] is False


def test_plots(make_synthetic_store, tmp_path):
    path = make_synthetic_store()
    for task in ([], ["--binary", "covid"]):  # two tasks into one folder: nothing overwritten
        args = ["--features", path.parent, *FAST[:2], "--folds", "3", "--plots", tmp_path / "p"]
        result = run(*args, *task)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "bacterial-covid-normal-forest-balanced_accuracy.png",
        "covid-vs-non-covid-forest-balanced_accuracy.png",
        "mobilenet_v2-bacterial-covid-normal-embedding-map.png",
        "mobilenet_v2-covid-vs-non-covid-embedding-map.png",
        "mobilenet_v2-logreg-bacterial-covid-normal-confusion.png",
        "mobilenet_v2-logreg-bacterial-covid-normal-reliability.png",
        "mobilenet_v2-logreg-bacterial-covid-normal-roc.png",
        "mobilenet_v2-logreg-covid-vs-non-covid-confusion.png",
        "mobilenet_v2-logreg-covid-vs-non-covid-reliability.png",
        "mobilenet_v2-logreg-covid-vs-non-covid-roc.png",
    ]


def test_search_reports_inner_choices(make_synthetic_store, tmp_path):
    path = make_synthetic_store({"a": 9, "b": 9})
    out = tmp_path / "r.json"
    result = run(
        "--features",
        path.parent,
        "--head",
        "knn",
        "--folds",
        "3",
        "--search",
        "--bootstrap",
        "50",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    search = json.loads(out.read_text())["results"][0]["search"]
    assert len(search["best_params"]) == 3 and "n_neighbors" in search["best_params"][0]


def nan_store(make_synthetic_store):
    X = load(make_synthetic_store()).X.copy()
    X[0, 0] = np.nan
    return make_synthetic_store(X=X)


BAD_INPUTS = {
    "missing folder": (lambda make, tmp: ["--features", tmp / "nowhere"], "does not exist"),
    "missing backbone": (
        lambda make, tmp: ["--features", make().parent, "-b", "resnet50"],
        "resnet50.h5: no feature store",
    ),
    "empty folder": (lambda make, tmp: ["--features", tmp], "no feature stores"),
    "too few patients": (
        lambda make, tmp: ["--features", make({"covid": 3, "normal": 12}).parent, "--folds", "10"],
        "class 'covid' has 3 patients, fewer than --folds 10",
    ),
    "single class": (
        lambda make, tmp: ["--features", make().parent, "--classes", "covid"],
        "only 1 class",
    ),
    "nan features": (lambda make, tmp: ["--features", nan_store(make).parent], "NaN or infinite"),
    "unknown param": (
        lambda make, tmp: ["--features", make().parent, "--set", "mlp.depth=3"],
        "no parameter 'depth'",
    ),
    "head cannot fit": (
        lambda make, tmp: [
            "--features",
            make().parent,
            "--head",
            "knn",
            "--set",
            "knn.n_neighbors=500",
        ],
        "head 'knn' failed in fold",
    ),
    "bad group-by": (
        lambda make, tmp: ["--features", make().parent, "--group-by", "site"],
        "--group-by",
    ),
    "zero jobs": (lambda make, tmp: ["--features", make().parent, "--jobs", "0"], "--jobs"),
    "half a where": (
        lambda make, tmp: ["--features", make().parent, "--where", "label=covid |"],
        "--where 'label=covid |'",
    ),
}


def test_choices_come_from_the_registry(make_synthetic_store):
    """An unknown head is refused by the option parser, which lists the registry's heads."""
    result = run("--features", make_synthetic_store().parent, "--head", "xgboost")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'xgboost' is not one of" in result.stderr
    assert all(name in result.stderr for name in HEADS)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(make_synthetic_store, tmp_path, case):
    args, message = BAD_INPUTS[case]
    result = (
        run(*args(make_synthetic_store, tmp_path), "--folds", "3")
        if case != "too few patients"
        else run(*args(make_synthetic_store, tmp_path))
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


NO_TF = textwrap.dedent(
    """
    import atexit, sys
    heavy = {"tensorflow", "keras", "cxr.extract.model", "cxr.extract.runner"}
    atexit.register(lambda: print("TF-IMPORTED" if heavy & set(sys.modules) else "NO-TF"))
    sys.argv = ["cxr", *sys.argv[1:]]
    from cxr.cli import app
    app()
    """
)


@pytest.mark.parametrize("help_only", [True, False])
def test_evaluate_never_imports_tensorflow(make_synthetic_store, help_only):
    args = (
        ["evaluate", "--help"]
        if help_only
        else ["evaluate", "--features", str(make_synthetic_store().parent), *FAST]
    )
    proc = subprocess.run(
        [sys.executable, "-c", NO_TF, *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("NO-TF")


def test_params_for_an_unselected_head_are_reported_not_silently_dropped(
    make_synthetic_store, tmp_path
):
    out = tmp_path / "r.json"
    path = make_synthetic_store()
    result = run(
        "--features",
        path.parent,
        "--head",
        "logreg",
        "--set",
        "mlp.alpha=1e-3",
        "--folds",
        "3",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    assert any("'mlp' ignored" in w for w in json.loads(out.read_text())["warnings"])


def test_audit_groups_without_patient_ids_are_not_called_patients(make_synthetic_store, tmp_path):
    path = make_synthetic_store(patient_ids=False)
    fs = load(path)
    exclusions = tmp_path / "x.json"
    groups = {str(i): f"image:{i}" for i in fs.ids}
    groups[str(fs.ids[1])] = groups[str(fs.ids[0])]  # one duplicate pair kept together
    exclusions.write_text(json.dumps({"exclude": [], "groups": groups}))
    out = tmp_path / "r.json"
    result = run(
        "--features",
        path.parent,
        "--head",
        "logreg",
        "--folds",
        "3",
        "--exclude",
        exclusions,
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    cv = report["results"][0]["cv"]
    assert cv["grouped"] and cv["unit"] == "image (duplicate groups from --exclude)"
    assert any("optimistic" in w for w in report["warnings"])


# ---- what evaluate, audit and train print and write -----------------------------------------


def _markup_store(make_synthetic_store):
    """Labels and a metadata value a careless export could hold, read by Rich as markup."""
    path = make_synthetic_store(
        {"[left]": 10, "[/b]": 10}, meta={"site": lambda r: "[red]A" if "0" in r["id"] else "B"}
    )
    return path


def test_labels_like_markup_are_printed_as_they_are(make_synthetic_store, tmp_path):
    """`[left]` vanished from the tables; `[/b]` crashed the report after every fit, and the
    JSON was never written."""
    path = _markup_store(make_synthetic_store)
    out = tmp_path / "r.json"
    args = ["evaluate", "--features", str(path.parent), "--head", "logreg", "--folds", "3"]
    result = runner.invoke(app, [*args, "--bootstrap", "20", "--jobs", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "[left]" in result.output and "[/b]" in result.output
    assert json.loads(out.read_text())["results"][0]["classes"] == ["[/b]", "[left]"]
    import hashlib

    from cxr.store.schema import StoreContent, Table, read_content, write_atomic

    content = read_content(path)  # the films the rows name, under their content hashes
    files = [save_png(tmp_path / "data" / p, n) for n, p in enumerate(content.rows["path"])]
    ids = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    rows = Table({**content.rows.columns, "id": np.asarray(ids, dtype=object)})
    write_atomic(path, StoreContent(content.attrs, rows, content.meta, content.X))
    audit = ["audit", "--features", str(path.parent), "--data", str(tmp_path / "data")]
    audited = runner.invoke(app, [*audit, "--probe", "label"])
    assert audited.exit_code == 0, audited.output
    assert "[/b] " in audited.output and "[left] " in audited.output  # the probe's classes


def test_plot_names_stay_in_their_folder_and_within_a_name_length(make_synthetic_store, tmp_path):
    """A store attribute holding ../../../x wrote a plot outside --plots; a long label or a
    24-value --test-where crashed with 'File name too long' after every fit."""
    long_label = "pneumonia-" + "x" * 300
    path = make_synthetic_store(
        {"covid": 8, long_label: 8},
        attrs={"backbone": "../../../escaped"},
        meta={"site": lambda r: f"s{int(r['patient_id'].rsplit('-p', 1)[1]) % 4}"},
    )
    plots, out = tmp_path / "deep" / "plots", tmp_path / "r.json"
    sites = ",".join(["s1", *(f"site-{i:02d}-of-a-long-list" for i in range(24))])
    args = ["evaluate", "--features", str(path.parent), "--head", "logreg", "--test-where"]
    result = runner.invoke(
        app,
        [*args, f"site={sites}", "--bootstrap", "20", "--jobs", "1", "--plots", str(plots),
         "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = [Path(p) for p in json.loads(out.read_text())["plots"]]
    written += [Path(p) for r in json.loads(out.read_text())["results"] for p in r["plots"]]
    assert written and all(p.parent == plots and p.is_file() for p in written)
    assert all(len(p.name.encode()) <= 255 for p in written)
    assert not list(tmp_path.glob("**/escaped*")) or all(
        p.parent == plots for p in tmp_path.glob("**/escaped*")
    )


def test_the_json_is_written_even_when_the_plots_fail(make_synthetic_store, tmp_path, monkeypatch):
    path = make_synthetic_store()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cxr.classify.plots.write_plots", broken)
    out = tmp_path / "r.json"
    args = ["evaluate", "--features", str(path.parent), "--head", "logreg", "--folds", "3"]
    result = runner.invoke(
        app, [*args, "--bootstrap", "20", "--plots", str(tmp_path / "p"), "--json", str(out)]
    )
    assert result.exit_code == 2
    assert "error: --plots" in result.stderr and "No space left on device" in result.stderr
    assert json.loads(out.read_text())["results"]  # the fits are not lost


@pytest.mark.parametrize(
    "option, message",
    [
        (["--jobs", "100000"], "--jobs 100000: give a number of workers"),
        (["--bootstrap", "1000000000"], "--bootstrap must be 1..100,000 replicates"),
        (["--folds", "5000"], "--folds must be 2..1000"),
        (["--curve-draws", "5000", "--train-sizes", "5,all"], "--curve-draws must be 1..100"),
    ],
)
def test_counts_out_of_bounds_are_refused_before_any_work(tmp_path, option, message):
    """Refused before a store is even looked for (the folder does not exist)."""
    result = runner.invoke(app, ["evaluate", "--features", str(tmp_path / "none"), *option])
    assert result.exit_code == 2 and message in result.stderr, result.output


CONFIG_READ = """
import sys
from pathlib import Path
from cxr.classify.heads import parse_params
from cxr.errors import CxrError
from cxr.store.exclusions import Exclusions
for read in (lambda p: Exclusions.read(p), lambda p: parse_params([], p)):
    try:
        read(Path(sys.argv[1]))
    except CxrError as exc:
        print(exc)
"""


def test_an_exclusion_or_config_path_that_is_a_fifo_is_one_line(tmp_path):
    fifo = tmp_path / "audit.json"
    os.mkfifo(fifo)
    try:
        done = subprocess.run(
            [sys.executable, "-c", CONFIG_READ, str(fifo)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO named as --exclude or --config hung")
    assert done.stdout.splitlines() == [
        f"{fifo}: cannot read the exclusion file: not a regular file (a FIFO)",
        f"{fifo}: cannot read the TOML file of hyper-parameters: not a regular file (a FIFO)",
    ]


def test_a_utf16_config_is_read_and_a_latin1_one_is_one_line(tmp_path):

    config = tmp_path / "heads.toml"
    config.write_text("[logreg]\nC = 0.5\n", encoding="utf-16")  # Windows Notepad's 'Unicode'
    assert parse_params([], config) == {"logreg": {"C": 0.5}}
    config.write_bytes("# réglages\n[logreg]\nC = 0.5\n".encode("latin-1"))
    with pytest.raises(CxrError, match=r"is not UTF-8 text .*save it as UTF-8"):
        parse_params([], config)


def test_an_audit_whose_films_all_changed_since_still_reports(make_synthetic_store, tmp_path):
    """Every film replaced since the store was built: no hash is usable, and the audit said
    nothing but a ValueError from the hash search."""
    from cxr.store import load

    path = make_synthetic_store()  # its ids are not the files' sha256: every file 'changed'
    for n, stored in enumerate(load(path).rows["path"]):
        save_png(tmp_path / "data" / stored, n)
    out = tmp_path / "audit.json"
    args = ["audit", "--features", str(path.parent), "--data", str(tmp_path / "data")]
    result = runner.invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["counts"]["hashed_rows"] == 0 and report["notes"]


# ---- traps a user met (issue 15; moved from tests/test_traps.py) --------------------


def evaluate_cli(store: Path, *args: str, bootstrap: str = "20"):
    """`cxr evaluate` on a synthetic store: 3 folds and a short bootstrap, for speed."""
    base = ["evaluate", "--features", str(store.parent), "--folds", "3", "--bootstrap", bootstrap]
    return runner.invoke(app, [*base, *args])


def test_repeated_merge_reaches_the_report(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    result = evaluate_cli(
        path, "--head", "logreg", "--merge", "pneumonia=bacterial", "--merge", "pneumonia=viral",
        "--json", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [r] = json.loads(result.stdout)["results"]
    assert r["task"]["merge"] == {"pneumonia": ["bacterial", "viral"]}
    assert r["classes"] == ["covid", "normal", "pneumonia"]


def test_classes_are_reported_in_the_order_given(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    report = evaluate(
        path.parent,
        heads=["logreg"],
        folds=3,
        bootstrap=20,
        classes=["viral", "covid", "normal"],
    )
    [r] = report["results"]
    assert r["classes"] == ["viral", "covid", "normal"]
    assert list(r["metrics"]["per_class"]) == ["viral", "covid", "normal"]


def test_the_best_result_comes_with_a_caution(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    result = evaluate_cli(path, "--head", "logreg", "--head", "knn", bootstrap="50")
    assert result.exit_code == 0, result.output
    assert "caution: the best of 2 results picked on the same test rows" in result.output


def test_a_two_class_roc_draws_one_curve():
    y = np.array([0, 1, 0, 1])
    assert roc_classes(["non-covid", "covid"], y) == [1]
    assert roc_classes(["a", "b", "c"], np.array([0, 1, 2, 0])) == [0, 1, 2]


def test_evaluate_reports_progress_to_a_progress_object(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    seen = []

    class Recording:
        from contextlib import contextmanager

        @contextmanager
        def step(self, description, total):
            done = []
            yield done.append
            seen.append((description, total, sum(done)))

    evaluate(path.parent, heads=["logreg", "knn"], folds=3, bootstrap=20, progress=Recording())
    assert seen[0] == ("mobilenet_v2: 2 head(s) x 3 fits", 6, 6)
    assert all(total == done for _, total, done in seen)


def test_cli_is_quiet_off_a_terminal(make_synthetic_store):
    path = make_synthetic_store(FOUR)
    result = evaluate_cli(path, "--head", "logreg")
    assert result.exit_code == 0 and "fits" not in result.output


def test_the_table_shows_the_pooled_value_beside_its_own_interval(make_synthetic_store, tmp_path):
    """AUC 0.930 in the table and 0.925 in the plot: a fold mean beside a pooled CI. Now the
    table's number is the pooled value its interval belongs to, as in the forest plot."""
    path = make_synthetic_store(FOUR, separation=1.0)
    out = tmp_path / "r.json"
    result = evaluate_cli(path, "--head", "logreg", "--json", str(out), bootstrap="100")
    assert result.exit_code == 0, result.output
    [r] = json.loads(out.read_text())["results"]
    auc = r["metrics"]["roc_auc"]
    assert round(auc["mean"], 3) != round(auc["pooled"], 3)  # the two differ here
    lo, hi = auc["ci95"]
    assert f"{auc['pooled']:.3f} [{lo:.3f}, {hi:.3f}]" in result.output
