"""Data: FVRID folders (fvrid), datasets, paired transforms, PK sampler, the LightningDataModule.

Import from the submodules, e.g. ``from rvsl.data.datamodule import RVSLDataModule``; this package
stays import-light so tools that only read folders do not load Lightning.
"""
