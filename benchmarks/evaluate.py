"""Quality and speed of every reconstruction method on the validation slices (and merging runs).

The harness is :mod:`resample_med.evaluation.harness` (``resample-med evaluate`` runs the same);
``python benchmarks/evaluate.py --help`` lists its options. Tuning lives in ``benchmarks/tune.py``.
"""

from resample_med.evaluation.harness import main

if __name__ == "__main__":
    main()
