"""cxr audit: planted copies must be found, distinct images must not be paired (both ways)."""

from __future__ import annotations

import hashlib
import io
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from helpers import CXR_DATA, SYNTHETIC_ATTRS, xray_like
from PIL import Image
from typer.testing import CliRunner

from cxr.audit import duplicates
from cxr.audit.cache import cache_path
from cxr.audit.phash import LEVELS, WORDS, distance, phash
from cxr.audit.probe import probe
from cxr.audit.run import audit
from cxr.audit.thresholds import HASH_THRESHOLD
from cxr.classify.tasks import TaskSpec, select
from cxr.cli import app
from cxr.errors import CxrError
from cxr.extract.images import decode
from cxr.store import load
from cxr.store.schema import ROW_COLUMNS, StoreContent, Table, write_atomic


def jpeg(rgb: np.ndarray, quality: int = 70) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return decode(buf.getvalue())


def planted(rgb: np.ndarray, gamma: float = 0.7) -> dict[str, np.ndarray]:
    """The copies the issue names, with crops of 1 % and 5 % per side and 10 % off one side.

    The synthetic pictures are half flat black, where a gamma change creates new structure out of
    grey levels 0..6; they get a linear contrast change only (real images get gamma 0.7 too).
    """
    image = Image.fromarray(rgb)
    w, h = image.size

    def crop(left: float, top: float, right: float, bottom: float) -> np.ndarray:
        box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
        return np.asarray(image.crop(box))

    shifted = 255 * (rgb.astype(float) / 255) ** gamma * 0.85 + 20
    return {
        "re-encoded": jpeg(rgb),
        "resized": np.asarray(image.resize((w // 2, h // 2), Image.Resampling.BILINEAR)),
        "cropped 1%": crop(0.01, 0.01, 0.01, 0.01),
        "cropped": crop(0.05, 0.05, 0.05, 0.05),
        "cropped 10% top": crop(0, 0.10, 0, 0),
        "contrast": np.clip(shifted, 0, 255).astype(np.uint8),
    }


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def real_images(label: str, n: int) -> list[np.ndarray]:
    files = sorted((CXR_DATA / label).glob("kermany__*"))[:n]
    if len(files) < n:
        pytest.skip(f"{CXR_DATA} not available")
    return [decode(f.read_bytes(), f.name) for f in files]


@pytest.mark.parametrize("kind", ["synthetic", "real"])
def test_planted_copies_within_threshold_and_distinct_images_beyond(kind):
    if kind == "real":
        images = real_images("bacterial", 12)
    else:
        images = [rgb(xray_like(seed, (400, 360))) for seed in range(12)]
    hashes = [phash(im) for im in images]
    for im, h in zip(images, hashes, strict=True):
        for name, copy in planted(im, 0.7 if kind == "real" else 1.0).items():
            assert distance(phash(copy), h) <= HASH_THRESHOLD, name
    distinct = [distance(a, b) for a, b in combinations(hashes, 2)]
    assert min(distinct) > HASH_THRESHOLD


# The closest distinct films in ../shared/data/cxr under the crop-level distance: two films of
# one patient (28 bits), one patient under two ids (32) and the closest films of different
# patients (40). The threshold must stay below them, the crop levels must not pull them closer.
CLOSEST_DISTINCT = [
    ("covid/ieee8023__nejmoa2001191_f4.jpeg", "covid/ieee8023__nejmoa2001191_f5-PA.jpeg"),
    ("covid/ieee8023__2-chest-filmc.jpg", "covid/ieee8023__7-fatal-covid19.jpg"),
    ("normal/kermany__IM-0371-0001.jpeg", "normal/kermany__NORMAL2-IM-0533-0001.jpeg"),
]


@pytest.mark.parametrize(("first", "second"), CLOSEST_DISTINCT)
def test_closest_distinct_real_films_are_not_paired(first, second):
    files = [CXR_DATA / first, CXR_DATA / second]
    if not all(f.is_file() for f in files):
        pytest.skip(f"{CXR_DATA} not available")
    a, b = (phash(decode(f.read_bytes(), f.name)) for f in files)
    assert HASH_THRESHOLD < distance(a, b) <= 44  # close, yet beyond the threshold


def test_contrast_and_resize_do_not_move_a_real_hash_far():
    image = real_images("normal", 1)[0]
    copies = planted(image)
    assert distance(phash(copies["contrast"]), phash(image)) <= 16
    assert distance(phash(copies["resized"]), phash(image)) <= 16
    assert distance(phash(copies["cropped"]), phash(image)) <= 16


# ---- end to end on a small data set ------------------------------------------------------


def write_image(root: Path, rel: str, image: np.ndarray) -> bytes:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if rel.endswith(".jpg") else "PNG"
    Image.fromarray(image).save(path, fmt, **({"quality": 70} if fmt == "JPEG" else {}))
    return path.read_bytes()


def build(tmp_path: Path, extra: list[tuple[str, str, str, np.ndarray]] = ()) -> tuple[Path, dict]:
    """10 distinct images per class (covid/normal), one patient each, plus planted copies.

    Returns the features folder and the planted copies by name. Embeddings are random (distinct)
    except where a test asks for a twin, so only the pHash can pair the planted copies.
    """
    data, features = tmp_path / "data", tmp_path / "features"
    originals, records = {}, []
    for c, label in enumerate(("covid", "normal")):
        for i in range(10):
            image = rgb(xray_like(100 * c + i, (200, 180)))
            rel = f"{label}/img{i}.png"
            originals[rel] = image
            records.append((rel, label, f"{label}-p{i}", "siteA" if c else "siteB", image))
    base = originals["covid/img0.png"]
    copies = planted(base, gamma=1.0)
    records += [
        ("covid/copy_jpeg.jpg", "covid", "covid-p0", "siteB", copies["re-encoded"]),
        ("covid/copy_small.png", "covid", "covid-p0", "siteB", copies["resized"]),
        ("covid/copy_crop.png", "covid", "other-patient", "siteB", copies["cropped"]),
        ("normal/copy_contrast.png", "normal", "normal-p9", "siteA", copies["contrast"]),
    ]
    records += list(extra)
    rows = []
    for rel, label, patient, source, image in records:
        digest = hashlib.sha256(write_image(data, rel, image)).hexdigest()
        rows.append(
            {"id": digest, "path": rel, "label": label, "patient_id": patient, "source": source}
        )
    X = np.random.default_rng(0).normal(size=(len(rows), 16)).astype(np.float32)
    features.mkdir()
    write_atomic(
        features / "mobilenet_v2.h5",
        StoreContent(
            attrs={
                **SYNTHETIC_ATTRS,
                "backbone": "mobilenet_v2",
                "dim": 16,
                "data_root": str(data),
            },
            rows=Table.from_records(rows, ROW_COLUMNS),
            meta=Table({}),
            X=X,
        ),
    )
    return features, {r["path"]: r for r in rows}


def test_audit_finds_the_planted_cluster_and_only_it(tmp_path):
    features, rows = build(tmp_path)
    result = audit(features, probes=["source"])
    assert result["counts"]["clusters"] == 1
    (cluster,) = result["clusters"]
    paths = {m["path"] for m in cluster["members"]}
    assert paths == {
        "covid/img0.png",
        "covid/copy_jpeg.jpg",
        "covid/copy_small.png",
        "covid/copy_crop.png",
        "normal/copy_contrast.png",
    }
    assert set(cluster["conflicts"]) == {"label", "patient_id"}
    assert cluster["methods"] == ["phash"]
    # all copies of a two-label picture are dropped; the other patients' rows are untouched
    assert set(result["exclusions"]["exclude"]) == {rows[p]["id"] for p in paths}
    assert len(result["exclusions"]["groups"]) == 5 + 1  # cluster rows + normal-p9's own image


def test_exclusion_file_is_read_by_evaluate(tmp_path):
    twin = rgb(xray_like(7, (200, 180)))  # same picture as covid/img7, another patient id
    features, rows = build(tmp_path, [("covid/twin.jpg", "covid", "stranger", "siteB", jpeg(twin))])
    result = audit(features, probes=[])
    out = tmp_path / "audit.json"
    runner = CliRunner()
    cli = runner.invoke(
        app, ["audit", "--features", str(features), "--exclude-out", str(out), "--probe", "source"]
    )
    assert cli.exit_code == 0, cli.output
    assert json.loads(out.read_text()) == result["exclusions"]
    data = select(load(features / "mobilenet_v2.h5"), TaskSpec(exclude=out))
    group = dict(zip(data.ids, data.groups, strict=True))
    assert (
        group[rows["covid/twin.jpg"]["id"]]
        == group[rows["covid/img7.png"]["id"]]
        == "audit:covid-p7"
    )
    assert rows["covid/img0.png"]["id"] not in group  # label conflict: dropped
    assert group[rows["covid/img1.png"]["id"]] == "covid-p1"
    # the file's content, not its name, says what it is
    renamed = out.rename(tmp_path / "audit-exclusions.txt")
    again = select(load(features / "mobilenet_v2.h5"), TaskSpec(exclude=renamed))
    assert again.ids.tolist() == data.ids.tolist() and again.groups.tolist() == data.groups.tolist()


def test_hashes_are_cached_incrementally(tmp_path):
    features, _ = build(tmp_path)
    first = audit(features, probes=[])
    assert first["timing"]["hashes_computed"] == 24
    assert cache_path(features).is_file() and cache_path(features).parent.name == ".audit"
    assert audit(features, probes=[])["timing"]["hashes_computed"] == 0


def test_cosine_pairs_images_the_hash_cannot(tmp_path):
    features, rows = build(tmp_path)
    fs = load(features / "mobilenet_v2.h5")
    X = fs.X.copy()
    a, b = list(rows).index("covid/img3.png"), list(rows).index("normal/img5.png")
    X[b] = X[a] * 1.01
    write_atomic(fs.path, StoreContent(fs.attrs, fs.rows, fs.meta, X))
    result = audit(features, probes=[])
    cosine = [c for c in result["clusters"] if c["methods"] == ["cosine"]]
    assert len(cosine) == 1 and cosine[0]["conflicts"] == ["label", "patient_id"]


def test_moved_images_give_one_line_error(tmp_path):
    features, _ = build(tmp_path)
    with pytest.raises(CxrError, match="image folder not found"):
        audit(features, data=tmp_path / "nowhere")
    (tmp_path / "data" / "covid" / "img2.png").unlink()
    with pytest.raises(CxrError, match=r"img2\.png: image not found"):
        audit(features)
    result = CliRunner().invoke(app, ["audit", "--features", str(features)])
    assert result.exit_code == 2 and "img2.png: image not found" in result.stderr


def test_probe_reports_signal_and_chance():
    rng = np.random.default_rng(0)
    source = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 30, dtype=object)
    patients = np.array([f"p{i // 2}" for i in range(120)], dtype=object)
    signal = (
        rng.normal(size=(120, 8))
        + 4 * (source[:, None] == np.array(["a", "b", "c"]))[:, [0, 1, 2] * 2 + [0, 1]]
    )
    strong = probe(signal, source, patients)
    assert strong["accuracy"] > 0.9 and strong["chance_accuracy"] == 0.5
    assert strong["chance_balanced_accuracy"] == pytest.approx(1 / 3)
    noise = probe(rng.normal(size=(120, 8)), source, patients)
    assert noise["balanced_accuracy"] < 0.6
    rare = probe(signal, np.array(["a"] * 117 + ["z"] * 3, dtype=object), patients)
    assert "skipped" in rare and rare["left_out_values"] == ["z"]


# ---- the FAISS searches against an all-pairs reference --------------------------------------


def all_pairs_hash(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """Every pair, every level, both ways: phash.distance by brute force."""
    n = len(hashes)
    d = np.array([[distance(hashes[i], hashes[j]) for j in range(n)] for i in range(n)])
    return [(i, j, int(d[i, j])) for i, j in combinations(range(n), 2) if d[i, j] <= threshold]


def all_pairs_cosine(X: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    sim = Z.astype(np.float64) @ Z.T.astype(np.float64)
    return [(i, j) for i, j in combinations(range(len(X)), 2) if sim[i, j] >= threshold]


def test_hash_search_equals_all_pairs_on_real_films_and_their_copies():
    """Real films of many patients plus their planted copies (crops, re-encodings): the same
    pairs, with the same distances, as comparing everything with everything."""
    images = real_images("bacterial", 24) + real_images("normal", 24)
    hashes = [phash(im) for im in images]
    for im in images[:6]:
        hashes += [phash(copy) for copy in planted(im).values()]
    H = np.stack(hashes)
    for threshold in (HASH_THRESHOLD, 40):
        found = duplicates.hash_pairs(H, threshold)
        assert found == all_pairs_hash(H, threshold)
        assert len(found) >= 6 * 6  # each planted copy pairs with its original at least


def test_hash_search_equals_all_pairs_on_random_hashes_with_planted_neighbours():
    rng = np.random.default_rng(1)
    H = rng.integers(0, 2**63, size=(150, LEVELS, WORDS), dtype=np.uint64)
    H[..., -1] &= np.uint64(2**63 - 1)  # 255 bits: the top bit is padding
    for k in range(20):  # image 100 + k is a crop of image k, a few bits off
        level = int(rng.integers(LEVELS))
        flips = rng.choice(255, size=int(rng.integers(0, 30)), replace=False)
        copy = H[k, 0].copy()
        for bit in flips:
            copy[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
        H[100 + k, level] = copy
    assert duplicates.hash_pairs(H, HASH_THRESHOLD) == all_pairs_hash(H, HASH_THRESHOLD)


def test_cosine_search_is_exact_through_its_projection():
    """Low-rank vectors (as embeddings are) wider than the projection, with planted near
    copies at cosines around the threshold: the same pairs as scoring every pair."""
    rng = np.random.default_rng(2)
    n, dim = 600, 300
    X = rng.normal(size=(n, 20)) @ rng.normal(size=(20, dim)) + 0.3 * rng.normal(size=(n, dim))
    for k in range(40):
        X[n - 1 - k] = X[k] + rng.uniform(0.05, 0.6) * np.linalg.norm(X[k]) / np.sqrt(dim) * (
            rng.normal(size=dim)
        )
    X = X.astype(np.float32)
    assert dim > duplicates.PROJECTED_DIMS
    for threshold in (0.9, 0.96, 0.99):
        found = duplicates.cosine_pairs(X, threshold)
        expected = all_pairs_cosine(X, threshold)
        assert [(i, j) for i, j, _ in found] == expected
        assert 0 < len(expected) < 40


def test_audit_plots_each_cluster_side_by_side(tmp_path):
    """The audit's numbers say two files are one picture; the figure shows them."""
    from typer.testing import CliRunner

    from cxr.cli import app

    features, _ = build(tmp_path)
    out, plots = tmp_path / "audit.json", tmp_path / "plots"
    args = ["audit", "--features", str(features), "--plots", str(plots), "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    drawn = json.loads(out.read_text())
    landscape, figure = drawn["plots"]
    assert figure.endswith("cluster-001-phash.png") and Path(figure).stat().st_size > 5000
    assert landscape == drawn["neighbourhood"]["map"]["figure"]
    assert landscape.endswith("-embedding-map.png") and Path(landscape).stat().st_size > 5000
