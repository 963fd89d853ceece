"""The benchmarks behind ``tools/benchmark.py``, one concept per module.

Accuracy (``accuracy``): which shifts and methods exist and the data they need
(``shifts``), the train_net runs and their reuse (``plan``), what a run depends on
besides its settings (``environment``), the tables and the chart (``report``), and the
files all of them share (``files``). Cost (``speed``): seconds per step and memory of
the real training step. Kept in the package rather than in tools/ so that the tool and
the tests import one copy, without putting tools/ on sys.path.
"""
