"""The README's "Coming from deepinv / tomosipo / ASTRA / torch-radon" snippets run as written and
reconstruct their phantom; ASTRA (a dev dependency) checks the ASTRA snippet's projection."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Coming from deepinv / tomosipo / ASTRA / torch-radon"
FRAMEWORKS = ("deepinv", "tomosipo", "ASTRA", "torch-radon")


def interop_snippets() -> dict[str, str]:
    """The python code blocks of the README section, keyed by the framework named in the line before each."""
    text = README.read_text()
    assert SECTION in text, f"README.md lacks the section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    snippets = {}
    for match in re.finditer(r"^(\S[^\n]*)\n\n```python\n(.*?)```", section, flags=re.S | re.M):
        framework = match.group(1).split()[0]
        snippets[framework] = match.group(2)
    return snippets


def test_every_framework_has_a_snippet():
    assert sorted(interop_snippets()) == sorted(FRAMEWORKS)


def relative_error(image, truth) -> float:
    image = np.asarray(image.detach() if isinstance(image, torch.Tensor) else image, dtype=np.float64).squeeze()
    truth = np.asarray(truth, dtype=np.float64).squeeze()
    return float(np.linalg.norm(image - truth) / np.linalg.norm(truth))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_snippet_runs_and_reconstructs(framework, private_operator_cache):
    namespace: dict = {}
    exec(compile(interop_snippets()[framework], f"README.md ({framework} snippet)", "exec"), namespace)  # noqa: S102
    x = namespace["x"]
    assert relative_error(namespace["x_fbp"], x) < 0.35
    for name in ("x_tv", "x_cgls"):
        if name in namespace:
            assert relative_error(namespace[name], x) < 0.35, name
    y, x_adjoint = namespace["y"], namespace["x_adjoint"]
    assert type(y) is type(x) and type(x_adjoint) is type(x)  # numpy stays numpy, tensors stay tensors
    if framework == "ASTRA":
        assert relative_error(namespace["x_fan_fbp"], x) < 0.35
        astra = pytest.importorskip("astra")
        proj_geom = astra.create_proj_geom("parallel", 1.0, 92, namespace["angles"])
        proj_id = astra.create_projector("linear", proj_geom, astra.create_vol_geom(64, 64))
        try:
            sino_id, reference = astra.create_sino(x, proj_id)
            astra.data2d.delete(sino_id)
        finally:
            astra.projector.delete(proj_id)
        assert relative_error(y, reference) < 0.02
