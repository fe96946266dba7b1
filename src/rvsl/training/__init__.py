"""Training: the LightningModule, the stage table and objectives, optimisation, checkpoints,
the run and the chain of stages. Calls :mod:`rvsl.evaluation` for its reports."""
