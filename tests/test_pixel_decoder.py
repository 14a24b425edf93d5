"""The deformable sampling of the pixel decoder against the official CPU path (``grid_sample``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deris_core.model.pixel_decoder import deformable_sample


def grid_sample_reference(value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                          weights: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-scale deformable attention as the official code computes it on a CPU."""
    b, _, c = value.shape
    _, lq, m, nl, p, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for level, (h, w) in enumerate(shapes):
        v = per_level[level].flatten(2).transpose(1, 2).reshape(b * m, c // m, h, w)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B*M, Lq, P, 2]
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    a = weights.transpose(1, 2).reshape(b * m, 1, lq, nl * p)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * a).sum(-1).view(b, c, lq)
    return out.transpose(1, 2)


def test_deformable_sampling_equals_grid_sample_inside_and_outside_the_picture() -> None:
    g = torch.Generator().manual_seed(3)
    for b, shapes in [(1, [(12, 16), (6, 8), (3, 4)]), (2, [(5, 7), (10, 13), (20, 25), (1, 1)])]:
        lv, nl = sum(h * w for h, w in shapes), len(shapes)
        value = torch.randn(b, lv, 64, generator=g, dtype=torch.float64)
        locations = torch.rand(b, 40, 4, nl, 4, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3  # some outside
        weights = torch.rand(b, 40, 4, nl, 4, generator=g, dtype=torch.float64)
        ours = deformable_sample(value, shapes, locations, weights, 4)
        torch.testing.assert_close(ours, grid_sample_reference(value, shapes, locations, weights, 4), rtol=1e-10, atol=1e-10)


def test_deformable_sampling_gradients_reach_values_locations_and_weights() -> None:
    g = torch.Generator().manual_seed(4)
    shapes = [(6, 8), (3, 4)]
    value = torch.randn(1, 60, 32, generator=g, dtype=torch.float64, requires_grad=True)
    locations = torch.rand(1, 9, 2, 2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(1, 9, 2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ours = torch.autograd.grad(deformable_sample(value, shapes, locations, weights, 2).square().sum(), (value, locations, weights))
    ref = torch.autograd.grad(grid_sample_reference(value, shapes, locations, weights, 2).square().sum(), (value, locations, weights))
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)
