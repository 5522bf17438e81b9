"""The evaluation harness: method quality and cost on validation slices, and baseline tuning.

Modules: :mod:`.data` (split slices, settings, simulated measurements with per-slice noise
streams), :mod:`.runner` (methods run through :func:`resample_med.pipeline.reconstruct_slices`,
their configs, cost and scores), :mod:`.report` (``quality.md`` / ``quality.json`` / figure,
merging runs), :mod:`.tuning` (baseline knobs chosen on spare slices, stored in
``resample_med/sampling/tuned.json``), :mod:`.options` (shared command-line options) and
:mod:`.harness` (the evaluate / merge command: ``benchmarks/evaluate.py``, ``resample-med
evaluate``).
"""
