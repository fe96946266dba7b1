"""Running a trained network: the :class:`Reidentifier` for Python users, and the embedding
engine (:mod:`rvsl.inference.engine`) that ``rvsl-search``, ``rvsl-eval`` and the
Reidentifier all embed images with."""

from rvsl.inference.reidentifier import DEFAULT_IMAGE_SIZE, Reidentifier

__all__ = ["DEFAULT_IMAGE_SIZE", "Reidentifier"]
