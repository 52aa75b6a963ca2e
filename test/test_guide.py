"""The colour-guided upsampling: a site takes the logits of the neighbouring cell it matches."""

import pytest
import torch

from sparserefine_ros.method import SparseRefine
from sparserefine_ros.method.guide import GuidedUpsampling, GuideInputs

NUM_CLASSES = 2


def two_cell_grid() -> GuideInputs:
    """One image, a 1x2 grid of cells: a red cell of class 0 and a green cell of class 1, and
    two sites, both in the left (red) cell: a red one and a green one."""
    cell_rgb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])[None, :, None, :]  # (1, 3, 1, 2)
    low_logits = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])[None, :, None, :]  # (1, 2, 1, 2)
    zeros = torch.zeros(2, dtype=torch.int64)
    return GuideInputs(
        cell_rgb,
        low_logits.contiguous(memory_format=torch.channels_last),
        low_logits.softmax(dim=1),
        (zeros, zeros, zeros),
    )


def colour_matching_module() -> GuidedUpsampling:
    """Keys are the cells' colours, queries the sites' colours (the features), scaled up: the
    dot product is largest for the cell of the site's own colour."""
    module = GuidedUpsampling(NUM_CLASSES, features=3, window=3, dim=3)
    with torch.no_grad():
        module.key.weight.zero_()
        module.key.bias.zero_()
        module.key.weight[:, :3] = torch.eye(3)
        module.query.weight.copy_(20.0 * torch.eye(3))
    return module


def test_a_site_takes_the_logits_of_the_cell_whose_colour_it_has():
    inputs = two_cell_grid()
    site_colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # red site, green site
    logits = colour_matching_module()(site_colours, inputs)
    # Both sites lie in the red cell; the green site still takes the green cell's class.
    assert logits.argmax(dim=1).tolist() == [0, 1]
    torch.testing.assert_close(logits[1], inputs.low_logits[0, :, 0, 1], atol=1e-3, rtol=0)


def test_untrained_module_weighs_by_position_bias_and_keys_only():
    module = GuidedUpsampling(NUM_CLASSES, features=3, window=3, dim=3)
    with torch.no_grad():
        module.query.weight.zero_()  # every cell scores the same: the window's plain mean
    logits = module(torch.randn(2, 3), two_cell_grid())
    # The 3x3 window around the left cell repeats the grid's edges: 6 red reads, 3 green.
    expected = (6 * torch.tensor([4.0, -4.0]) + 3 * torch.tensor([-4.0, 4.0])) / 9
    torch.testing.assert_close(logits, expected.expand(2, -1))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"guide": 4}, "guide must be an odd number"),
        ({"guide": 3, "residual": True}, "excludes residual"),
        ({"stem_kernel": 2}, "stem_kernel must be 1"),
        ({"blocks": -1}, "block count >= 0"),
    ],
)
def test_refiner_settings_are_validated(settings, message):
    with pytest.raises(ValueError, match=message):
        SparseRefine(NUM_CLASSES, **settings)


def test_guided_refiner_reads_position_and_cell_colours_and_keeps_its_config():
    model = SparseRefine(
        NUM_CLASSES, use_probs=True, patch=3, widths=(8,), blocks=0, stem_kernel=1, guide=3
    )
    # RGB 3x3, probabilities, position inside the cell, mean colours of the 3x3 cells.
    assert model.refiner.in_channels == 27 + NUM_CLASSES + 2 + 27
    assert not model.refiner.uses_maps  # per site: no neighbour maps to build
    assert SparseRefine.from_config(model.config).config == model.config
