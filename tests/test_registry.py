"""Every registry entry builds, frozen, and gives its documented embedding dimension."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cxr.extract.registry import PAPER_BACKBONES, REGISTRY


def test_registry_covers_the_paper_and_small_real_weight_backbones():
    assert set(PAPER_BACKBONES) | {"mobilenet_v2_035", "mobilenet_025"} <= set(REGISTRY)
    assert len({spec.weights_file for spec in REGISTRY.values()}) == len(REGISTRY)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_backbone_builds_with_random_weights(name):
    import keras

    from cxr.extract.model import Embedder
    from cxr.extract.weights import ResolvedWeights

    spec = REGISTRY[name]
    embed = Embedder(spec, ResolvedWeights("random", None, "", 0), batch_size=2)
    out = embed(np.zeros((1, spec.input_size, spec.input_size, 3), np.uint8))
    assert out.shape == (1, spec.dim) and out.dtype == np.float32
    assert not embed.model.trainable
    keras.backend.clear_session()


def test_help_and_registry_do_not_import_tensorflow():
    code = (
        "import sys; from typer.testing import CliRunner; import cxr.extract.registry, cxr.store;"
        "from cxr.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "r = CliRunner().invoke(app, ['backbones']); assert r.exit_code == 0, r.output;"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
