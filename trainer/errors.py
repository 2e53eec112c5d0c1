"""Errors of the trainer, with messages a user can act on."""

from schema.errors import SkinflowError


class TrainerError(SkinflowError):
    """A training or prediction request cannot be carried out (bad export, config, checkpoint)."""
