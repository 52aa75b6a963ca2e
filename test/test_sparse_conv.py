"""The sparse convolutions equal dense convolutions on masked images: outputs and gradients."""

import pytest
import torch
from torch.nn import functional as F

from sparserefine_ros.method.sparse import (
    PER_OFFSET_MIN_DENSITY,
    DownConv2d,
    SparseTensor,
    SubmanifoldConv2d,
    UpConv2d,
    down_conv2x2,
    get_backend,
    submanifold_conv3x3,
    up_conv2x2,
)
from sparserefine_ros.method.sparse.functional import default_strategy
from sparserefine_ros.method.sparse.maps import submanifold_map

SIZES = [(1, 9, 13), (2, 16, 16), (3, 7, 5)]  # (batch, height, width): odd sizes, batch > 1
DENSITIES = [0.04, 0.3, 0.95]


def random_sparse(batch, height, width, channels, density, seed, dtype=torch.float64):
    """A sparse tensor at random active sites (at least one), and its masked dense image."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, height, width, generator=generator) < density
    mask.view(-1)[torch.randint(mask.numel(), (1,), generator=generator)] = True
    coords = torch.nonzero(mask)
    feats = torch.randn(coords.shape[0], channels, generator=generator, dtype=dtype)
    return SparseTensor(coords, feats, batch, (height, width)), mask


def _scatter(dense: torch.Tensor, x: SparseTensor) -> torch.Tensor:
    """The masked dense image of ``x`` (zeros at inactive sites)."""
    b, y, xx = x.coords.unbind(1)
    dense = dense.clone()
    dense[b, :, y, xx] = x.feats
    return dense


def at_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    b, y, x = coords.unbind(1)
    return dense[b, :, y, x]


def assert_grads_match(sparse_out, dense_out, coords, inputs_sparse, inputs_dense, seed):
    """Backpropagate the same random cotangent through both paths and compare gradients."""
    cotangent = torch.randn(
        sparse_out.shape, generator=torch.Generator().manual_seed(seed), dtype=sparse_out.dtype
    )
    dense_cotangent = torch.zeros_like(dense_out)
    b, y, x = coords.unbind(1)
    dense_cotangent[b, :, y, x] = cotangent
    grads_sparse = torch.autograd.grad(sparse_out, inputs_sparse, cotangent)
    grads_dense = torch.autograd.grad(dense_out, inputs_dense, dense_cotangent)
    return grads_sparse, grads_dense


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("strategy", ["per_offset", "im2col"])
@pytest.mark.parametrize(("c_in", "c_out"), [(3, 4), (6, 2)], ids=["widening", "narrowing"])
def test_submanifold_conv_matches_conv2d(size, density, strategy, c_in, c_out):
    x, _ = random_sparse(*size, channels=c_in, density=density, seed=7)
    feats = x.feats.requires_grad_()
    weight = torch.randn(c_out, c_in, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c_out, dtype=torch.float64, requires_grad=True)
    out = submanifold_conv3x3(x.replace(feats), weight, bias, strategy=strategy)

    dense_in = _scatter(torch.zeros(size[0], c_in, *size[1:], dtype=torch.float64), x)
    dense_in.requires_grad_()
    dense_out = F.conv2d(dense_in, weight, bias, padding=1)
    torch.testing.assert_close(out.feats, at_sites(dense_out, x.coords), rtol=0, atol=1e-12)
    assert torch.equal(out.coords, x.coords)

    (g_feats, g_weight, g_bias), (g_dense, g_weight_ref, g_bias_ref) = assert_grads_match(
        out.feats, dense_out, x.coords, (feats, weight, bias), (dense_in, weight, bias), seed=3
    )
    torch.testing.assert_close(g_feats, at_sites(g_dense, x.coords), rtol=0, atol=1e-12)
    torch.testing.assert_close(g_weight, g_weight_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_bias, g_bias_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("threads", "high_density_choice"), [(1, "per_offset"), (2, "im2col")])
def test_strategy_follows_density_and_threads(threads, high_density_choice):
    sparse, _ = random_sparse(1, 64, 64, 2, density=PER_OFFSET_MIN_DENSITY / 2, seed=1)
    dense, _ = random_sparse(1, 64, 64, 2, density=PER_OFFSET_MIN_DENSITY * 4, seed=1)
    assert 0 < sparse.density < PER_OFFSET_MIN_DENSITY <= dense.density
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert default_strategy(sparse) == "im2col"
        assert default_strategy(dense) == high_density_choice
        for x, chosen in ((sparse, "im2col"), (dense, high_density_choice)):
            auto = submanifold_conv3x3(x, weight)
            forced = submanifold_conv3x3(x, weight, strategy=chosen)
            assert torch.equal(auto.feats, forced.feats)
    finally:
        torch.set_num_threads(previous)
    assert ("subm", 1) in sparse.cache  # the map is cached on the level and reused
    assert submanifold_map(sparse) is sparse.cache[("subm", 1)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("density", DENSITIES)
def test_down_conv_matches_strided_conv2d(size, density):
    batch, height, width = size
    x, mask = random_sparse(*size, channels=3, density=density, seed=11)
    feats = x.feats.requires_grad_()
    weight = torch.randn(5, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    out = down_conv2x2(x.replace(feats), weight, bias)

    # Coarse sites are exactly the 2x2 blocks holding an active fine site.
    padded_mask = F.pad(mask[:, None].double(), (0, width % 2, 0, height % 2))
    expected_sites = torch.nonzero(F.max_pool2d(padded_mask, 2)[:, 0] > 0)
    assert torch.equal(out.coords, expected_sites)
    assert out.spatial_shape == ((height + 1) // 2, (width + 1) // 2) and out.stride == 2

    dense_in = _scatter(torch.zeros(batch, 3, height, width, dtype=torch.float64), x)
    dense_in.requires_grad_()
    dense_out = F.conv2d(F.pad(dense_in, (0, width % 2, 0, height % 2)), weight, bias, stride=2)
    torch.testing.assert_close(out.feats, at_sites(dense_out, out.coords), rtol=0, atol=1e-12)

    (g_feats, g_weight, g_bias), (g_dense, g_weight_ref, g_bias_ref) = assert_grads_match(
        out.feats, dense_out, out.coords, (feats, weight, bias), (dense_in, weight, bias), seed=5
    )
    torch.testing.assert_close(g_feats, at_sites(g_dense, x.coords), rtol=0, atol=1e-12)
    torch.testing.assert_close(g_weight, g_weight_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_bias, g_bias_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("density", DENSITIES)
def test_up_conv_matches_conv_transpose2d_at_fine_sites(size, density):
    batch, height, width = size
    x, _ = random_sparse(*size, channels=2, density=density, seed=13)
    coarse = down_conv2x2(x, torch.randn(3, 2, 2, 2, dtype=torch.float64))
    coarse_feats = coarse.feats.detach().requires_grad_()
    weight = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    out = up_conv2x2(coarse.replace(coarse_feats), weight, bias)
    assert torch.equal(out.coords, x.coords) and out.stride == 1
    assert out.spatial_shape == (height, width)

    dense_coarse = _scatter(
        torch.zeros(batch, 3, *coarse.spatial_shape, dtype=torch.float64),
        coarse.replace(coarse_feats.detach()),
    ).requires_grad_()
    dense_out = F.conv_transpose2d(dense_coarse, weight, bias, stride=2)[:, :, :height, :width]
    torch.testing.assert_close(out.feats, at_sites(dense_out, x.coords), rtol=0, atol=1e-12)

    (g_feats, g_weight, g_bias), (g_dense, g_weight_ref, g_bias_ref) = assert_grads_match(
        out.feats,
        dense_out,
        x.coords,
        (coarse_feats, weight, bias),
        (dense_coarse, weight, bias),
        seed=9,
    )
    torch.testing.assert_close(g_feats, at_sites(g_dense, coarse.coords), rtol=0, atol=1e-12)
    torch.testing.assert_close(g_weight, g_weight_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_bias, g_bias_ref, rtol=0, atol=1e-10)


def test_modules_share_dense_weight_layout():
    torch.manual_seed(0)
    x, _ = random_sparse(2, 10, 12, 3, density=0.5, seed=17, dtype=torch.float32)
    pairs = [
        (SubmanifoldConv2d(3, 6, bias=True), torch.nn.Conv2d(3, 6, 3, padding=1)),
        (DownConv2d(3, 6, bias=True), torch.nn.Conv2d(3, 6, 2, stride=2)),
    ]
    for sparse_layer, dense_layer in pairs:
        assert sparse_layer.weight.shape == dense_layer.weight.shape
        sparse_layer.load_state_dict(dense_layer.state_dict())
        out = sparse_layer(x)
        expected = at_sites(dense_layer(_scatter(torch.zeros(2, 3, 10, 12), x)), out.coords)
        torch.testing.assert_close(out.feats, expected, rtol=1e-5, atol=1e-5)
    up, dense_up = UpConv2d(6, 3), torch.nn.ConvTranspose2d(6, 3, 2, stride=2, bias=False)
    assert up.weight.shape == dense_up.weight.shape


def test_up_conv_without_down_map_is_an_error():
    x, _ = random_sparse(1, 8, 8, 2, density=0.5, seed=2)
    with pytest.raises(ValueError, match="down map"):
        up_conv2x2(x, torch.randn(2, 2, 2, 2, dtype=torch.float64))


def test_backend_registry():
    assert get_backend("torch").submanifold_conv3x3 is submanifold_conv3x3
    with pytest.raises(ValueError, match="unknown sparse conv backend"):
        get_backend("spconv")
    with pytest.raises(ValueError, match="unknown sparse conv backend"):
        SubmanifoldConv2d(3, 3, backend="torchsparse")
