"""Evaluation: features and the ranking protocol on a test set (``evaluate``), pictures
(``pictures``, ``image_logging``), the pictures after a training stage (``stage_pictures``), the
results report of a chain (``summary``, ``curves``) and the ``rvsl-eval`` run (``run``).

Metrics are fractions in [0, 1] in code and in every JSON file; ``evaluate.percent`` turns
them into percent where a person reads them. It never imports :mod:`rvsl.training`."""
