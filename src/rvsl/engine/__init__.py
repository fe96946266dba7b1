"""Training engine: the RVSL LightningModule, its loss recipes, image pools and LR schedules."""
