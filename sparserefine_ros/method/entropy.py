"""Prediction entropy and the choice of pixels to refine."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

from .selection import block_spans, source_positions

Statistics = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def entropy(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Natural-log entropy ``-sum_c p_c ln p_c`` of ``softmax(logits)`` along ``dim``.

    Computed from ``log_softmax`` so saturated logits give 0, not NaN (``0 * log 0``).
    Maximum is ``ln C`` (2.944 for Cityscapes' 19 classes).
    """
    log_probs = F.log_softmax(logits, dim=dim)
    return -(log_probs.exp() * log_probs).sum(dim=dim)


def class_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer type of class maps: uint8 up to 256 classes (a 2048x1024 map is 2 MB
    to copy off the GPU and publish, not int64's 16 MB), else int32."""
    return torch.uint8 if num_classes <= 256 else torch.int32


def class_map(logits: torch.Tensor) -> torch.Tensor:
    """Argmax class map (B, h, w) ``class_dtype`` of logits (B, C, h, w), ties to the lower class.

    One comparison per class plane against the maximum: on the CPU several times faster than
    ``argmax`` over NCHW's strided channels, same result.
    """
    return _class_map(logits, logits.amax(dim=1))


def _class_map(logits: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    classes = torch.zeros(peak.shape, dtype=class_dtype(logits.shape[1]), device=logits.device)
    hit = torch.empty(peak.shape, dtype=torch.bool, device=logits.device)
    for c in reversed(range(logits.shape[1])):  # the lowest class at the maximum writes last
        classes.masked_fill_(torch.eq(logits[:, c], peak, out=hit), c)
    return classes


def pixel_statistics(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (B, h, w) float32 and class map of dense logits (B, C, h, w): everything the
    method reads at every dense pixel.

    ``H = ln S - sum_c e_c d_c / S`` with ``d_c = z_c - max z``, ``e_c = exp(d_c)``,
    ``S = sum_c e_c``, accumulated one class plane at a time: eagerly on the CPU about 4x
    faster than ``log_softmax`` and ``argmax`` over the strided class dimension (the same
    values to float rounding), and ``torch.compile`` fuses it into one pass over the logits.
    """
    peak = logits.amax(dim=1)
    total, weighted = torch.zeros_like(peak), torch.zeros_like(peak)
    diff, exp = torch.empty_like(peak), torch.empty_like(peak)
    for c in range(logits.shape[1]):
        torch.sub(logits[:, c], peak, out=diff)
        torch.exp(diff, out=exp)
        total.add_(exp)
        weighted.addcmul_(exp, diff)
    weighted.div_(total)
    return total.log_().sub_(weighted), _class_map(logits, peak)


def upsampled_statistics(
    logits: torch.Tensor,
    size: Sequence[int],
    statistics: Statistics = pixel_statistics,
    static: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy and class map (B, *size) of logits (B, C, h, w) at the model's output stride,
    without resizing the logits.

    The class map is the argmax of the logits upsampled bilinearly to ``size``, exactly
    (``upsampled_class_map``). The entropy is the output-stride entropy upsampled bilinearly:
    one plane resized instead of C, and the statistics run on a sixteenth of the pixels at
    output stride 4. It is not the entropy of the upsampled logits, which peaks on every class
    boundary however sure both sides are; the model's own output is already unsure where a
    boundary crosses one of its cells. ``statistics`` is ``pixel_statistics`` or its compiled
    form; ``static`` computes the class map over every pixel (fixed shapes, same classes).
    """
    size = (int(size[0]), int(size[1]))
    if tuple(logits.shape[-2:]) == size:
        return statistics(logits)
    low_entropy, low_classes = statistics(logits)
    entropy = F.interpolate(low_entropy[:, None], size, mode="bilinear", align_corners=False)
    if static:
        upsampled = F.interpolate(logits, size, mode="bilinear", align_corners=False)
        return entropy[:, 0], class_map(upsampled)
    return entropy[:, 0], upsampled_class_map(logits, low_classes, size)


def upsampled_class_map(
    logits: torch.Tensor, classes: torch.Tensor | None, size: Sequence[int]
) -> torch.Tensor:
    """Class map (B, *size) of logits (B, C, h, w) upsampled bilinearly to ``size``
    (``align_corners=False``), given their own class map ``classes`` (or None).

    Exact without resizing the logits: a convex combination of logit vectors that share their
    argmax has that argmax, so a pixel whose four source pixels agree takes their class; only
    where they differ (class boundaries, about a tenth of the pixels) are the upsampled logits
    computed. Ties go to the lower class, as in ``class_map``.
    """
    height, width = int(size[0]), int(size[1])
    if tuple(logits.shape[-2:]) == (height, width):
        return class_map(logits)
    if classes is None:
        classes = class_map(logits)
    device, (low_h, low_w) = logits.device, logits.shape[-2:]
    # Output row i reads source rows (r, min(r + 1, h - 1)), r = rows[i], and likewise for
    # columns: source cell (r, q) holds the output pixels whose four sources start at (r, q).
    rows = source_positions(torch.arange(height, device=device), low_h, height)[0]
    cols = source_positions(torch.arange(width, device=device), low_w, width)[0]
    below = torch.arange(1, low_h + 1, device=device).clamp_(max=low_h - 1)
    right = torch.arange(1, low_w + 1, device=device).clamp_(max=low_w - 1)
    down = classes.index_select(1, below)
    differ = classes != classes.index_select(2, right)
    differ |= classes != down
    differ |= classes != down.index_select(2, right)
    # Columns first, as rows of a 2-D view: a 3-D index_select on the last dimension is slow.
    upsampled = classes.flatten(0, 1).index_select(1, cols).view(-1, low_h, width)
    upsampled = upsampled.index_select(1, rows)
    cells = torch.nonzero(differ)
    if cells.shape[0]:
        b, y, x, cell_classes = _cell_classes(logits, cells, rows, cols, (height, width))
        upsampled[b, y, x] = cell_classes.to(upsampled.dtype)
    return upsampled


def _cell_classes(
    logits: torch.Tensor,
    cells: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch, row, column and class of every output pixel of the source cells ``cells`` (n, 3)
    [batch, r, q]: each cell's four logit vectors gathered once and interpolated to all its
    pixels at once, classes last, so the argmax reads contiguous rows (a gather per pixel, or a
    pass per class plane, is slower on the CPU)."""
    (height, width), (low_h, low_w) = size, logits.shape[-2:]
    b, r, q = cells.unbind(1)
    r1, q1 = (r + 1).clamp(max=low_h - 1), (q + 1).clamp(max=low_w - 1)
    corners = [logits[b, :, r, q], logits[b, :, r, q1], logits[b, :, r1, q], logits[b, :, r1, q1]]
    corners = [corner[:, None, None, :] for corner in corners]  # (n, 1, 1, C)

    def axis(cell: torch.Tensor, index: torch.Tensor, low: int, full: int):
        start, span = block_spans(index, low)
        steps = torch.arange(int(span.max()), device=logits.device)
        at = (start[cell][:, None] + steps).clamp_(max=full - 1)  # (n, most pixels per cell)
        weight = source_positions(at.flatten(), low, full)[2].view_as(at)
        return at, steps < span[cell][:, None], weight

    y, inside_y, wy = axis(r, rows, low_h, height)
    x, inside_x, wx = axis(q, cols, low_w, width)
    wy, wx = wy[:, :, None, None], wx[:, None, :, None]
    top = torch.lerp(corners[0], corners[1], wx)  # (n, 1, j, C)
    bottom = torch.lerp(corners[2], corners[3], wx)
    # argmax takes the first maximum: ties go to the lower class.
    classes = torch.lerp(top, bottom, wy).argmax(dim=3).to(class_dtype(logits.shape[1]))
    cell, i, j = torch.nonzero(inside_y[:, :, None] & inside_x[:, None, :], as_tuple=True)
    return b[cell], y[cell, i], x[cell, j], classes[cell, i, j]


def select_uncertain(
    entropy: torch.Tensor,
    tau: float,
    max_fraction: float | None = None,
    areas: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean mask of the pixels to refine: ``entropy > tau``, optionally within a budget.

    ``entropy`` is (B, ...) with one image per leading index. With ``max_fraction`` in (0, 1],
    the kept pixels of each image cover at most ``ceil(max_fraction * total area)``: those of
    highest entropy, ties going to the lower flat (raster) index, so the result is deterministic.
    ``areas`` (the shape of one image) says how many output pixels each entry stands for, 1 by
    default: a low-resolution pixel covers a block of full-resolution ones, and is kept or
    dropped whole. The budget bounds the refinement cost of a frame whatever the scene.
    """
    mask = entropy > tau
    if max_fraction is None:
        return mask
    if not 0.0 < max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    flat_mask = mask.reshape(mask.shape[0], -1)
    flat_entropy = entropy.reshape(flat_mask.shape)
    if areas is None:
        areas = torch.ones(flat_mask.shape[1], dtype=torch.int64, device=entropy.device)
    smallest = int(areas.min())
    if areas.numel() != flat_mask.shape[1] or smallest < 1:
        raise ValueError(f"areas must be >= 1, one per pixel of an image: {tuple(areas.shape)}")
    areas = areas.reshape(-1).long()
    budget = math.ceil(max_fraction * int(areas.sum()))
    # Enough entries to overflow the budget, and one more: a tie at the cut that the partial
    # selection does not hold whole shows as the last entry's equal.
    most_entries = budget // smallest + 2
    for image in range(flat_mask.shape[0]):
        keep, values = flat_mask[image], flat_entropy[image]
        kept = int(keep.sum())
        count = min(kept, most_entries)
        if count == 0:
            continue
        # The entropy at which the budget overflows, from the top few entries only (a partial
        # selection, not a sort of the image): everything above it stays, and of the entries
        # equal to it those first in raster order that still fit. Only a tie group cut off by
        # the partial selection needs a pass over the image.
        top, index = _highest(values, keep, kept, count)
        filled = torch.cumsum(areas[index], 0)
        if count == kept and int(filled[-1]) <= budget:
            continue
        cut = top[int((filled <= budget).sum())]
        above = index[top > cut]
        if count < kept and bool(top[-1] == cut):
            ties = torch.nonzero(keep & (values == cut)).flatten()
        else:
            ties = torch.sort(index[top == cut]).values
        room = budget - int(areas[above].sum())
        chosen = torch.cat((above, ties[torch.cumsum(areas[ties], 0) <= room]))
        flat_mask[image] = torch.zeros_like(keep).index_fill_(0, chosen, True)
    return flat_mask.reshape(mask.shape)


def _highest(
    values: torch.Tensor, keep: torch.Tensor, kept: int, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk`` of the ``count`` highest ``values`` (1-D) where ``keep`` (``kept`` of
    them): values and flat indices.

    When far more are kept than needed, every ``_SAMPLE_STRIDE``-th value estimates a floor
    with about twice ``count`` values above it, and the top-k runs on those only; should fewer
    than ``count`` lie above it, the top-k runs on all (same result). At tau 0.3 and a 0.5 %
    budget on 2048x1024: 2.6k of 210k kept."""
    if kept > 8 * count:
        sample = values[::_SAMPLE_STRIDE]
        within = min(2 * count // _SAMPLE_STRIDE + 1, sample.numel())
        sample = torch.where(keep[::_SAMPLE_STRIDE], sample, -math.inf)
        floor = torch.topk(sample, within).values[-1]
        candidates = torch.nonzero(keep & (values >= floor)).flatten()
        if candidates.numel() >= count:
            top, at = torch.topk(values.index_select(0, candidates), count)
            return top, candidates.index_select(0, at)
    return torch.topk(torch.where(keep, values, -math.inf), count)


_SAMPLE_STRIDE = 8
