"""`cxr.files` and discovery read only what the user named: regular files (no FIFO, device
or link unless asked), paths inside the data folder, names that are bytes on POSIX. Hostile
cases moved from tests/test_hostile.py, every case kept."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
from helpers import save_png

from cxr import files
from cxr.extract.discovery import discover
from cxr.extract.layouts import ReadOptions
from cxr.files import UnusableFile, open_regular

# ---- regular files only -------------------------------------------------------------------------

DISCOVER_FIFO = """
import json, sys
from pathlib import Path
from cxr.extract.dataset import Entry
from cxr.extract.discovery import discover
from cxr.extract.manifest import build_manifest
from cxr.extract.reader import _prepare
data, fifo = Path(sys.argv[1]), Path(sys.argv[2])
found = {}
for manifest in (None, data / "list.csv"):
    found[str(manifest)] = sorted([r.path, r.reason] for r in discover(data, manifest).rejects)
found["read"] = _prepare(Entry("x.png", fifo, "covid", sha256="0" * 64), {224}, "squash")[1]
found["manifest"] = build_manifest(data, data.parent / "m.csv", key=None, keep_ids=True).rows
print(json.dumps(found))
"""


def test_fifos_and_devices_are_rejects_not_hangs(tmp_path):
    """A FIFO or a symlink to /dev/zero in a class folder or a manifest hung `cxr features` (and
    `cxr manifest`) before it printed anything; run in a subprocess with a timeout."""
    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    save_png(data / "normal" / "b.png", 2)
    os.mkfifo(data / "covid" / "pipe.png")
    (data / "normal" / "zero.png").symlink_to("/dev/zero")
    (data / "list.csv").write_text(
        "path,label\ncovid/a.png,covid\ncovid/pipe.png,covid\nnormal/zero.png,normal\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", DISCOVER_FIFO, str(data), str(data / "covid" / "pipe.png")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("discovery hung on a FIFO or a device")
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    expected = [
        ["covid/pipe.png", "not a regular file (a FIFO)"],
        ["normal/zero.png", "not a regular file (a character device)"],
    ]
    assert found["None"] == expected and found[str(data / "list.csv")] == expected
    assert found["read"] == "not a regular file (a FIFO)"  # swapped in after hashing
    assert found["manifest"] == 4  # listed; features rejects them with the reasons above


def test_open_regular_refuses_a_link_only_when_told(tmp_path, monkeypatch):
    """The fit cache reads only files it wrote: a link there was planted, even one swapped in
    after the check (``O_NOFOLLOW``)."""
    target = tmp_path / "real.npz"
    target.write_bytes(b"data")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    with open_regular(link) as fh:
        assert fh.read() == b"data"
    with pytest.raises(UnusableFile, match=r"not a regular file \(a symbolic link\)"):
        open_regular(link, follow_links=False)
    monkeypatch.setattr(files, "regular_stat", lambda *a: None)  # the link swapped in meanwhile
    with pytest.raises(OSError) as refused:
        open_regular(link, follow_links=False)
    assert refused.value.errno == errno.ELOOP


def test_manifest_paths_outside_the_data_folder_are_refused_unless_asked(tmp_path):
    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    secret = save_png(tmp_path / "elsewhere" / "s.png", 2)
    (data / "manifest.csv").write_text(
        f"path,label\ncovid/a.png,covid\n../elsewhere/s.png,covid\n{secret},normal\n"
        "covid/../covid/a.png,covid\n"
    )
    found = discover(data, None)
    reasons = {r.path: r.reason for r in found.rejects}
    assert [e.path for e in found.entries] == ["covid/a.png", "covid/../covid/a.png"]
    assert reasons["../elsewhere/s.png"].startswith("outside the data folder (it climbs out")
    assert reasons[str(secret)].startswith("outside the data folder (an absolute path)")
    assert "--allow-outside-data" in reasons[str(secret)]
    allowed = discover(data, None, options=ReadOptions.of(allow_outside=True))
    assert len(allowed.entries) == 4 and not allowed.rejects


def test_a_name_that_is_not_utf8_is_one_reject_at_discovery(tmp_path):
    data = tmp_path / "data"
    save_png(data / "covid" / "a.png", 1)
    save_png(data / "covid" / os.fsdecode(b"caf\xe9.png"), 2)  # a Latin-1 name from a PACS
    save_png(data / "normal" / "b.png", 3)
    found = discover(data, None)
    assert [e.path for e in found.entries] == ["covid/a.png", "normal/b.png"]
    [reject] = found.rejects
    assert reject.path == "covid/caf\\xe9.png"
    assert reject.reason.startswith("file name is not valid UTF-8")
