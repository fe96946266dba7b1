"""rvsl's Hydra configs, installed as the package ``rvsl.conf``.

Importing it (Hydra does, to read ``pkg://rvsl.conf``) registers the configs written in code:
the ``stage`` group, generated from the stage table :data:`rvsl.training.stages.STAGES`.
"""

from rvsl.training.stages import register_stage_configs

register_stage_configs()
