"""Method facts have one home, :mod:`resample_med.sampling.registry`, and every front end asks it."""

from __future__ import annotations

import dataclasses

import pytest

from resample_med.cli import common
from resample_med.config import ConfigError
from resample_med.sampling import METHODS, resolve_method_config
from resample_med.sampling.registry import configure, default_preset, needs_prior


def test_exactly_the_classical_baselines_run_without_a_prior():
    assert [m for m in METHODS if not needs_prior(m)] == ["fbp", "cgls", "tv"]
    with pytest.raises(ValueError, match="unknown method 'sart'; choose from fbp"):
        needs_prior("sart")


def test_the_widget_asks_the_registry_which_methods_need_a_prior():
    from napari_plugin._job import uses_prior

    assert [uses_prior(m) for m in METHODS] == [needs_prior(m) for m in METHODS]


def test_default_preset_is_fast_on_cpu_and_default_on_cuda():
    import torch

    assert default_preset("cpu") == "fast" and default_preset(torch.device("cuda:1")) == "default"
    assert common.resolve_preset("auto", torch.device("cpu")) == "fast"
    assert common.resolve_preset("paper", torch.device("cpu")) == "paper"


def test_configure_applies_nested_overrides_and_refuses_unknown_names():
    config = configure("resample", "fast", {"num_steps": 7, "latent": {"max_iter": 3}})
    assert config.num_steps == 7 and config.latent.max_iter == 3
    assert config.gamma == resolve_method_config("resample", "fast").gamma
    with pytest.raises(ValueError, match=r"\['num_steps'\] are not fields of tv's config; known: "):
        configure("tv", "fast", {"num_steps": 7})


def test_cli_and_widget_configs_come_from_the_same_rule():
    from napari_plugin._job import ReconstructionRequest
    from resample_med.pipeline.acquisition import AcquisitionConfig

    for method in ("resample", "tv", "fbp"):
        request = ReconstructionRequest(AcquisitionConfig(), method, "fast", steps=9, gamma=12.0)
        overrides = {
            k: v
            for k, v in {"num_steps": 9, "gamma": 12.0}.items()
            if k in {f.name for f in dataclasses.fields(resolve_method_config(method, "fast"))}
        }
        assert request.method_config() == configure(method, "fast", overrides)
    assert (
        common.sampler_config("resample", "fast", {"steps": 9, "gamma": 12.0})
        == ReconstructionRequest(AcquisitionConfig(), "resample", "fast", steps=9, gamma=12.0).method_config()
    )
    with pytest.raises(
        ConfigError, match=r"\['max_iters'\] are not fields of resample.latent's config; known: \['lr', 'max_iter'"
    ):
        common.sampler_config("resample", "fast", {"latent": {"max_iters": 3}})


def _sampler_from_command_line(*options: str):
    from resample_med.cli import build_parser
    from resample_med.cli.reconstruct import config_from_args

    args = build_parser(with_train=False).parse_args(["reconstruct", "in", "out", *options])
    return common.sampler_config("resample", "fast", config_from_args(args).sampler)


def test_the_resampling_variance_is_gamma_and_sigma2_still_works_with_a_warning(capsys):
    assert _sampler_from_command_line("--gamma", "12").gamma == 12.0
    assert capsys.readouterr().err == ""
    assert _sampler_from_command_line("--sigma2", "13").gamma == 13.0
    assert "--sigma2 / sampler.sigma2 is deprecated; use --gamma / sampler.gamma" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="keep only --gamma"):
        _sampler_from_command_line("--sigma2", "13", "--gamma", "12")


def test_widget_layer_names_call_the_variance_gamma():
    from napari_plugin._job import ReconstructionRequest
    from resample_med.pipeline.acquisition import AcquisitionConfig

    parts = ReconstructionRequest(AcquisitionConfig(), "resample", "fast", steps=9, gamma=12.0).describe()
    assert "gamma 12" in parts and not any("s2=" in p or "sigma" in p for p in parts)
