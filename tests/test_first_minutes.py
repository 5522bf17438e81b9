"""The first minutes of a new user: light imports, readable --help, no third-party noise."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resample_med.cli import build_parser, main

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "monai", "diffusers", "SimpleITK", "nibabel", "scipy")
SPHINX_MARKUP = (":mod:`", ":func:`", ":class:`", ":data:`", ":meth:`", "``")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that imports this checkout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_package_cli_parser_help_and_version_import_no_heavy_module():
    code = f"""
import contextlib, io, sys
import resample_med, resample_med.io, resample_med.pipeline, resample_med.sampling, resample_med.operators
from resample_med.cli import build_parser, main
build_parser(with_train=False)
for argv in (["--help"], ["--version"], ["reconstruct", "--help"], ["demo", "--help"], ["cache", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as done:
            assert done.code == 0, (argv, done.code)
heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]
print("HEAVY", heavy)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


def test_lazy_namespaces_still_export_everything():
    import resample_med.io
    import resample_med.operators
    import resample_med.pipeline
    import resample_med.sampling

    for package in (resample_med.io, resample_med.pipeline, resample_med.sampling, resample_med.operators):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        assert set(package.__all__) <= set(dir(package))
        with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
            package.not_a_name  # noqa: B018


def _subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("command", ["", "demo", "reconstruct", "simulate", "cache", "train"])
def test_help_has_no_sphinx_markup_and_every_option_is_explained(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"] if command else ["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: resample-med {command}".rstrip())
    for markup in SPHINX_MARKUP:
        assert markup not in text, f"{markup!r} in resample-med {command} --help"
    if command and command != "train":
        sub = _subcommand_parsers(build_parser(with_train=False))[command]
        unexplained = [a.dest for a in sub._actions if not a.help]
        assert not unexplained, f"resample-med {command}: options without help: {unexplained}"


def test_evaluate_help_names_its_command_and_explains_every_option(capsys):
    from resample_med.evaluation import harness, tuning

    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: resample-med evaluate")
    for parser in (harness.build_parser("resample-med evaluate"), tuning.build_parser("benchmarks/tune.py")):
        unexplained = [a.dest for a in parser._actions if not a.help]
        assert not unexplained, f"{parser.prog}: options without help: {unexplained}"


def test_dicom_reads_and_model_loads_print_only_our_messages():
    code = """
import warnings
warnings.simplefilter("default")
from resample_med.io import load_sample_ct
from resample_med.io.errors import DicomInputWarning
from resample_med.models import load_default_model
from resample_med.quiet import third_party_quiet
load_sample_ct("chest")
load_sample_ct("head")
load_default_model()
with third_party_quiet():
    warnings.warn("our own warning stays visible", DicomInputWarning)
print("DONE")
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "DONE" in result.stdout
    err = result.stderr
    assert "nvImageCodec" not in err and "NvImgCodec" not in err, err
    assert "Loading checkpoint shards" not in err, err
    assert "our own warning stays visible" in err
