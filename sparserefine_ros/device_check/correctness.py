"""The device path against the CPU: dense and fused logits, class maps of the sequential and
streamed pipelines, and each importable sparse backend against the torch one."""

from __future__ import annotations

import torch

from sparserefine_ros.method.pipeline import SparseRefinePipeline
from sparserefine_ros.method.selection import Selection
from sparserefine_ros.method.sparse import available_backends
from sparserefine_ros.method.sparserefine import SparseRefine
from sparserefine_ros.method.streaming import StreamedPipeline


@torch.inference_mode()
def check_correctness(
    cpu: SparseRefinePipeline,
    device: SparseRefinePipeline,
    scenes: list[torch.Tensor],
    max_in_flight: int,
) -> dict:
    images = torch.cat(scenes)  # one batch: more selected pixels to compare
    model_cpu, model_dev = cpu.model, device.model
    full_cpu, low_cpu = model_cpu.preprocess(images)
    logits_cpu = model_cpu.run_dense(cpu.dense_model, low_cpu)
    full_dev, low_dev = model_dev.preprocess(images.to(device.device))
    logits_dev = model_dev.run_dense(device.dense_model, low_dev)
    # Refine both on the CPU's selection, so the logits compare pixel for pixel.
    selection = model_cpu.select(logits_cpu, full_cpu.shape[-2:])
    fused_cpu = model_cpu.ensembler(*model_cpu.refine(full_cpu, logits_cpu, selection))[0]
    moved = selection.to(device.device)
    fused_dev = model_dev.ensembler(*model_dev.refine(full_dev, logits_dev, moved))[0]
    result_cpu = cpu(images)
    result_dev = device(images)
    streamed = list(StreamedPipeline(device, max_in_flight).run_stream(scenes))
    sequential = [device(s) for s in scenes]
    return {
        "dense_logits_max_abs_diff": max_abs_diff(logits_dev, logits_cpu),
        "fused_logits_max_abs_diff": max_abs_diff(fused_dev, fused_cpu),
        "selected_pixels": int(selection.coords.shape[0]),
        "classes_agreement_vs_cpu": agreement_share(result_dev.classes, result_cpu.classes),
        "refine_mask_agreement_vs_cpu": agreement_share(
            result_dev.refine_mask, result_cpu.refine_mask
        ),
        "streamed_equals_sequential": all(
            torch.equal(s.classes, q.classes) for s, q in zip(streamed, sequential, strict=True)
        ),
        "streamed_classes_agreement": agreement_share(
            torch.cat([s.classes for s in streamed]), torch.cat([q.classes for q in sequential])
        ),
        "sparse_backends": check_backends(model_dev, full_dev, logits_dev, moved, fused_dev),
    }


def check_backends(
    model: SparseRefine,
    full: torch.Tensor,
    low_logits: torch.Tensor,
    selection: Selection,
    reference: torch.Tensor,
) -> dict:
    """Each registered non-reference backend's fused logits against the torch backend's."""
    results = {}
    for name in available_backends():
        if name == model.refiner.backend:
            continue
        other = SparseRefine.from_config({**model.config, "backend": name})
        other.load_state_dict(model.state_dict())
        other = other.to(full.device).eval()
        fused = other.ensembler(*other.refine(full, low_logits, selection))[0]
        results[name] = {
            "fused_logits_max_abs_diff": max_abs_diff(fused, reference),
            "classes_agreement": agreement_share(fused.argmax(1), reference.argmax(1)),
        }
    return results


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max()) if a.numel() else 0.0


def agreement_share(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.cpu() == b.cpu()).float().mean()) if a.numel() else 1.0
