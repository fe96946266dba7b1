"""Evaluation: features, the ranking protocol on a test set, dehazing quality, pictures, the
results report and the evaluation run. It never imports :mod:`rvsl.training`."""
