"""Training of dense models and of the refiner, single process or under ``torchrun`` (DDP).

Both loops are iteration-based with a cosine schedule, log loss and validation mIoU to
``train_log.jsonl`` in the output checkpoint directory, and keep their resumable state (model,
optimizer, schedule, iteration) in ``train_state.pt`` beside it, read back with
``weights_only=True``. Layout: ``runs`` (config, DDP, data order, run files), ``dense``,
``refiner``, ``calibration``, ``losses``, ``cards`` (model cards).
"""

from .calibration import CalibrationRule, calibrate
from .dense import train_dense
from .losses import DENSE_LOSSES
from .refiner import RefinerSettings, train_refiner
from .runs import PRECISIONS, Distributed, TrainConfig

__all__ = [
    "DENSE_LOSSES",
    "PRECISIONS",
    "CalibrationRule",
    "Distributed",
    "RefinerSettings",
    "TrainConfig",
    "calibrate",
    "train_dense",
    "train_refiner",
]
