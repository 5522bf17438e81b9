"""Values tuned once on the validation split and written here by
``python benchmarks/evaluate.py --tune-tv`` (do not edit by hand; rerun the tuning instead)."""

TV_WEIGHT = 1e-3
"""TV weight ``w`` of :class:`resample_med.sampling.baselines.tv.TVConfig` (normalised problem)."""
TV_WEIGHT_PROVENANCE = "initial guess, not yet tuned"
"""How :data:`TV_WEIGHT` was chosen."""
