"""Choose a baseline's knob (TV weight, Latent-DPS step size) once on spare val slices.

    python benchmarks/tune.py tv --n-slices 8 --views 30 --tune-slices 4
    python benchmarks/tune.py latent_dps --preset fast --n-slices 8 --views 30 --tune-slices 4

Writes the value and its provenance to ``resample_med/sampling/tuned.json``
(:mod:`resample_med.evaluation.tuning`).
"""

from resample_med.evaluation.tuning import main

if __name__ == "__main__":
    main()
