"""Values tuned once on validation data and written here by
``python benchmarks/evaluate.py --tune tv|latent_dps`` and ``python benchmarks/volume.py --tune resample|tv``
(do not edit by hand; rerun the tuning instead)."""

TV_WEIGHT = 0.01
"""TV weight ``w`` of :class:`resample_med.sampling.baselines.tv.TVConfig` (normalised problem)."""
TV_WEIGHT_PROVENANCE = "benchmarks/evaluate.py --tune-tv on 2026-11-26: grid ['1.0e-04', '3.2e-04', '1.0e-03', '3.2e-03', '1.0e-02', '3.2e-02', '1.0e-01'], best mean PSNR 27.97 dB over val slices [1, 14, 27, 40] at ['parallel, 30 views', 'fan, 30 views'], I0 = 100000"
"""How :data:`TV_WEIGHT` was chosen."""

LATENT_DPS_FAST_STEP_SIZE = 10
"""Guidance step ``zeta`` of the ``fast`` (20-step) Latent-DPS preset; the step depends on the step
count, so the 50- and 500-step presets keep DPS's own 1.0."""
LATENT_DPS_FAST_STEP_SIZE_PROVENANCE = "benchmarks/evaluate.py --tune latent_dps on 2026-11-26: grid ['1.0e+00', '3.0e+00', '1.0e+01', '3.0e+01'], best mean PSNR 23.54 dB over val slices [1, 14, 27, 40] at ['parallel, 30 views', 'fan, 30 views'], I0 = 100000, preset fast"
"""How :data:`LATENT_DPS_FAST_STEP_SIZE` was chosen."""

RESAMPLE_Z_WEIGHT = 0.01
"""Volume mode's ``z_weight`` of :class:`resample_med.sampling.ReSampleConfig` (quadratic z-difference
penalty, normalised by ``||A||^2``; written by ``python benchmarks/volume.py --tune resample``)."""
RESAMPLE_Z_WEIGHT_PROVENANCE = "not tuned yet: a documented starting value"
"""How :data:`RESAMPLE_Z_WEIGHT` was chosen."""

TV_Z_WEIGHT = 1.0
"""Volume mode's ``z_weight`` of :class:`resample_med.sampling.baselines.tv.TVConfig` (z differences in
3-D TV relative to in-plane ones; written by ``python benchmarks/volume.py --tune tv``)."""
TV_Z_WEIGHT_PROVENANCE = "not tuned yet: isotropic 3-D TV"
"""How :data:`TV_Z_WEIGHT` was chosen."""
