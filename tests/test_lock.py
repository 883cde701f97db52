"""The locked environment: `make install` installs requirements.lock, which pins every
dependency pyproject.toml declares (with `make install`'s extras), and every store, model and
report says whether it was made in that environment (`lock` beside the versions)."""

from __future__ import annotations

import re
import sys
from importlib import metadata

from helpers import ROOT

from cxr.store import provenance
from cxr.store.provenance import lock_state

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", re.M)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_pins_every_dependency_and_extra_that_make_install_installs():
    """Adding a dependency without `make lock` fails here, not on a user's machine."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = re.search(r"^EXTRAS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert extras is not None
    wanted = list(project["dependencies"])
    for extra in extras[1].split():
        wanted += project["optional-dependencies"][extra]
    pinned = {_normal(n) for n in PINNED.findall((ROOT / "requirements.lock").read_text())}
    names = {_normal(re.split(r"[<>=!~;\[ ]", w, maxsplit=1)[0]) for w in wanted}
    assert names - pinned == set()
    assert "--hash=sha256:" in (ROOT / "requirements.lock").read_text()


def _lock(tmp_path, text: str):
    path = tmp_path / "requirements.lock"
    path.write_text(text)
    lock_state.cache_clear()
    return lock_state(path)


def test_the_lock_state_says_what_differs_from_the_pins(tmp_path):
    numpy = metadata.version("numpy")
    pytest_version = metadata.version("pytest")
    same = f"numpy=={numpy} \\\n    --hash=sha256:00\npytest=={pytest_version}\n"
    state = _lock(tmp_path, same)
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", state)
    other = same.replace(f"numpy=={numpy}", "numpy==0.0.1")
    assert _lock(tmp_path, other).endswith(f", but installed: numpy {numpy}")
    # a pin for another platform or Python does not apply here
    elsewhere = same + "numpy==0.0.1 ; sys_platform == 'nonexistent'\n"
    assert "but installed" not in _lock(tmp_path, elsewhere)
    absent = same + "no-such-distribution-here==1.0\n"
    assert _lock(tmp_path, absent).endswith("no-such-distribution-here missing")
    lock_state.cache_clear()
    assert lock_state(tmp_path / "nothing.lock") == "none (not installed from a lock)"
    lock_state.cache_clear()


def test_every_record_of_versions_carries_the_lock():
    assert provenance.library_versions("numpy")["lock"] == lock_state()
    from cxr.classify.provenance import library_versions

    assert library_versions()["lock"] == lock_state()
    assert ROOT.resolve() / "requirements.lock" == sys.modules["cxr.store.provenance"].LOCK
