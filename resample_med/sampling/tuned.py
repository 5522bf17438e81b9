"""Values tuned once on the validation split and written here by
``python benchmarks/evaluate.py --tune-tv`` (do not edit by hand; rerun the tuning instead)."""

TV_WEIGHT = 0.01
"""TV weight ``w`` of :class:`resample_med.sampling.baselines.tv.TVConfig` (normalised problem)."""
TV_WEIGHT_PROVENANCE = "benchmarks/evaluate.py --tune-tv on 2026-11-26: grid ['1.0e-04', '3.2e-04', '1.0e-03', '3.2e-03', '1.0e-02', '3.2e-02', '1.0e-01'], best mean PSNR 27.97 dB over val slices [1, 14, 27, 40] at ['parallel, 30 views', 'fan, 30 views'], I0 = 100000"
"""How :data:`TV_WEIGHT` was chosen."""
