"""Errors of the method library."""


class CheckpointError(RuntimeError):
    """A refiner checkpoint is missing, unreadable or does not match the model it describes."""
