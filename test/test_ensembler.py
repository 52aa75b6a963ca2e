"""The gated ensembler: gate formula against hand-computed values, sane when untrained."""

import math

import torch

from sparserefine_ros.method import GatedEnsembler


def test_untrained_ensembler_averages_the_two_predictions():
    torch.manual_seed(0)
    ensembler = GatedEnsembler(num_classes=5, hidden=8)
    dense, sparse = torch.randn(7, 5), torch.randn(7, 5)
    logits, gate = ensembler(dense, sparse)
    torch.testing.assert_close(gate, torch.full((7,), 0.5))
    torch.testing.assert_close(logits, 0.5 * dense + 0.5 * sparse)


def test_gate_formula_hand_computed():
    # Two classes. g's one active hidden unit reads e1 - e2, weight 10 into the gate logit:
    # w = sigmoid(10 * relu(e1 - e2)), input order [p1; p2; e1; e2].
    ensembler = GatedEnsembler(num_classes=2, hidden=3)
    with torch.no_grad():
        for layer in (*ensembler.gate, *ensembler.head):
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        ensembler.gate[0].weight[0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -1.0])
        ensembler.gate[2].weight[0, 0] = 10.0
    dense = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # e = ln 2, then H(1/4, 3/4)
    sparse = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    logits, gate = ensembler(dense, sparse)

    e_uniform = math.log(2.0)
    e_skewed = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    w0 = 1.0 / (1.0 + math.exp(-10.0 * (e_uniform - e_skewed)))  # 0.78719...
    w1 = 0.5  # relu(e_skewed - e_uniform) = 0
    torch.testing.assert_close(gate, torch.tensor([w0, w1]))
    expected = torch.tensor([[0.0, (1 - w0) * math.log(3.0)], [0.0, w1 * math.log(3.0)]])
    torch.testing.assert_close(logits, expected)
    assert abs(w0 - 0.78719) < 1e-4


def test_output_head_learns_from_identity_start():
    torch.manual_seed(1)
    ensembler = GatedEnsembler(num_classes=3)
    logits, gate = ensembler(torch.randn(4, 3), torch.randn(4, 3))
    (logits.square().sum() + gate.sum()).backward()
    # Zero-initialised last layers still receive gradients (the start is not a dead end).
    assert ensembler.head[-1].weight.grad.abs().sum() > 0
    assert ensembler.gate[-1].weight.grad.abs().sum() > 0


def test_matches_the_formula_on_the_concatenated_inputs():
    # Trained-like weights everywhere (not the zero start): the gate reads [p1; p2; e1; e2]
    # in that order, the head corrects the blend, and gradients reach every parameter.
    torch.manual_seed(2)
    ensembler = GatedEnsembler(num_classes=4, hidden=6)
    with torch.no_grad():
        for parameter in ensembler.parameters():
            parameter.normal_()
    dense, sparse = torch.randn(9, 4) * 3, torch.randn(9, 4) * 3
    logits, gate = ensembler(dense, sparse)

    p1, p2 = dense.softmax(1), sparse.softmax(1)
    e1, e2 = (-(p * p.log()).sum(1, keepdim=True) for p in (p1, p2))
    w = torch.sigmoid(ensembler.gate(torch.cat((p1, p2, e1, e2), 1)))
    fused = w * dense + (1 - w) * sparse
    torch.testing.assert_close(gate, w.squeeze(1))
    torch.testing.assert_close(logits, fused + ensembler.head(fused))
    (logits.sum() + gate.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ensembler.parameters())
