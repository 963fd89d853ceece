"""Data generation, run once before (or at the first use of) a dataset, never inside a
training step: the synthetic street scenes and their clear -> foggy shift
(scenes.py, synthetic_shift.py), and fog rendered onto real images (fog.py, used by
datasets/make_foggy.py and the CCTV benchmark shift)."""
