"""The refiner's training step under DDP (2 gloo processes on the CPU), with one rank whose
batch has nothing to learn from: it must neither hang the all-reduce nor let the replicas drift.
"""

import os
import socket
import time

import pytest
import torch
from test_training import brightness_dense_model, thin_line_batch, toy_model
from torch import distributed as dist
from torch import multiprocessing

from sparserefine_ros.method import make_optimizer, train_step
from sparserefine_ros.training import Distributed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    ddp = Distributed("cpu")
    model = toy_model()
    trained = ddp.wrap(model)
    optimizer = make_optimizer(model, lr=1e-2)
    images, labels = thin_line_batch(2, 32, seed=rank)
    if rank == 1:  # black images: confident background everywhere, no pixel selected
        images, labels = torch.zeros_like(images), torch.zeros_like(labels)
    steps = [train_step(brightness_dense_model(), trained, images, labels, optimizer)
             for _ in range(2)]  # fmt: skip
    weights = {name: p.detach() for name, p in model.named_parameters()}
    torch.save({"weights": weights, "selected": [s.num_selected for s in steps],
                "stepped": [s.stepped for s in steps]}, f"{out}/rank{rank}.pt")  # fmt: skip
    dist.destroy_process_group()


@pytest.mark.slow
def test_rank_with_empty_selection_joins_the_step(tmp_path):
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    ranks = [context.Process(target=_rank, args=(r, port, str(tmp_path))) for r in range(WORLD)]
    for process in ranks:
        process.start()
    deadline = time.monotonic() + 120
    for process in ranks:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = [p.pid for p in ranks if p.is_alive()]
    for process in ranks:
        process.kill()
    assert not hung, "a rank hung in the all-reduce"
    assert [p.exitcode for p in ranks] == [0, 0]

    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert min(first["selected"]) > 0 and second["selected"] == [0, 0]
    assert first["stepped"] == second["stepped"] == [True, True]
    initial = dict(toy_model().named_parameters())
    assert not any(torch.equal(v, initial[k]) for k, v in first["weights"].items())
    for name, tensor in first["weights"].items():  # (BatchNorm statistics are rank 0's)
        torch.testing.assert_close(second["weights"][name], tensor, rtol=0, atol=0, msg=name)
