"""The method's own diagnostic: how much of what the selection could fix does refinement fix?

SparseRefine can only change the pixels it selects. Setting those pixels to the ground truth
gives the **oracle** mIoU, the ceiling of any refiner at that selection. From it:

* ``efficiency = (refined - dense) / (oracle - dense)``: the share of the reachable mIoU gain
  that refinement delivers (None when the selection can gain nothing);
* ``error_share``: the share of the dense prediction's wrong pixels that the selection holds
  (a better selector or a larger budget raises it);
* ``accuracy_before`` / ``accuracy_after``: pixel accuracy inside the selection, of the dense
  prediction and of the refined one (a better refiner raises the second).

A low efficiency with a high error share asks for a better refiner; a low error share asks for
more budget or a better threshold. Pixels labelled ``ignore_index`` count nowhere.

Given the dense model's full-resolution prediction as well, the **full-resolution oracle** sets
the selected pixels to it instead: the mIoU of a refiner that recovers exactly what the low
resolution lost there (``full_oracle_miou``, with ``accuracy_full`` inside the selection). Most
of the ground-truth oracle's gain is the dense model's errors at any resolution; this one is the
gain the method promises.
"""

from __future__ import annotations

import numpy as np

from .metrics import IGNORE_INDEX, _to_numpy, confusion_matrix, scores_from_confusion


class SelectionDiagnostic:
    """Accumulates the counts over images; ``update`` one batch, ``compute`` the figures."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.shape = (num_classes, num_classes + 1)
        self.confusion = {k: np.zeros(self.shape, np.int64) for k in ("dense", "refined", "oracle")}
        self.errors = self.errors_selected = 0
        self.selected = self.correct_before = self.correct_after = self.correct_full = 0

    def update(self, dense, refined, mask, gt, full=None) -> None:
        """Class maps of the dense and the refined prediction, the selection mask, the labels
        and optionally the dense model's full-resolution prediction (all of one shape; give
        ``full`` for every image or for none)."""
        dense, refined, gt = _to_numpy(dense), _to_numpy(refined), _to_numpy(gt)
        mask = _to_numpy(mask).astype(bool)
        preds = {"dense": dense, "refined": refined, "oracle": np.where(mask, gt, dense)}
        if full is not None:
            full = _to_numpy(full)
            preds["full_oracle"] = np.where(mask, full, dense)
            self.confusion.setdefault("full_oracle", np.zeros(self.shape, np.int64))
        for name, pred in preds.items():
            self.confusion[name] += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        valid = gt != self.ignore_index
        wrong = valid & (dense != gt)
        chosen = valid & mask
        self.errors += int(wrong.sum())
        self.errors_selected += int((wrong & mask).sum())
        self.selected += int(chosen.sum())
        self.correct_before += int((chosen & (dense == gt)).sum())
        self.correct_after += int((chosen & (refined == gt)).sum())
        if full is not None:
            self.correct_full += int((chosen & (full == gt)).sum())

    def compute(self) -> dict:
        """mIoUs and accuracies in percent; efficiency and shares as fractions."""
        miou = {k: 100.0 * scores_from_confusion(v).miou for k, v in self.confusion.items()}
        reachable = miou["oracle"] - miou["dense"]
        has_full = "full_oracle" in miou

        def inside(correct: int) -> float | None:
            return 100.0 * correct / self.selected if self.selected else None

        return {
            "dense_miou": miou["dense"],
            "refined_miou": miou["refined"],
            "oracle_miou": miou["oracle"],
            "full_oracle_miou": miou["full_oracle"] if has_full else None,
            "efficiency": (miou["refined"] - miou["dense"]) / reachable if reachable > 0 else None,
            "error_share": self.errors_selected / self.errors if self.errors else None,
            "accuracy_before": inside(self.correct_before),
            "accuracy_after": inside(self.correct_after),
            "accuracy_full": inside(self.correct_full) if has_full else None,
        }


def selection_sentence(selection: dict) -> str:
    """One line of :meth:`SelectionDiagnostic.compute`'s figures, for reports and printouts."""

    def share(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f} %"

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} %"

    full = selection.get("full_oracle_miou")
    return (
        f"Selection: oracle mIoU {selection['oracle_miou']:.2f} (selected pixels set to the "
        "ground truth"
        + ("" if full is None else f"; {full:.2f} set to the full-resolution prediction")
        + f"), refinement efficiency {share(selection['efficiency'])}, "
        f"{share(selection['error_share'])} of the dense errors selected, accuracy inside the "
        f"selection {percent(selection['accuracy_before'])} dense -> "
        f"{percent(selection['accuracy_after'])} refined"
        + ("." if full is None else f" ({percent(selection['accuracy_full'])} full resolution).")
    )
