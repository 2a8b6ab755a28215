"""deform_conv2d against a slow, direct reference (loops over output pixels and kernel taps)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slam.features.deform_conv import DeformableConv2d, DeformConv2d, deform_conv2d


def _bilinear_zero_pad(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """img (C,H,W); value at (y, x) with out-of-image pixels = 0 (torchvision's rule)."""
    c, h, w = img.shape
    out = torch.zeros(c, dtype=img.dtype)
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return out
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def reference_deform_conv2d(inp, offset, weight, bias, stride, padding, dilation, mask=None):
    """Direct definition of DCN: one output pixel, one tap at a time."""
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    b, c, h, w = inp.shape
    o, cg, kh, kw = weight.shape
    groups = c // cg
    k = kh * kw
    n_off = offset.shape[1] // (2 * k)
    c_off = c // n_off
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = torch.zeros(b, o, ho, wo, dtype=inp.dtype)
    for bi in range(b):
        for oy in range(ho):
            for ox in range(wo):
                col = torch.zeros(c, kh, kw, dtype=inp.dtype)
                for g in range(n_off):
                    for i in range(kh):
                        for j in range(kw):
                            t = i * kw + j
                            dy = float(offset[bi, g * 2 * k + 2 * t, oy, ox])
                            dx = float(offset[bi, g * 2 * k + 2 * t + 1, oy, ox])
                            y = oy * sh - ph + i * dh + dy
                            x = ox * sw - pw + j * dw + dx
                            val = _bilinear_zero_pad(inp[bi, g * c_off:(g + 1) * c_off], y, x)
                            if mask is not None:
                                val = val * mask[bi, g * k + t, oy, ox]
                            col[g * c_off:(g + 1) * c_off, i, j] = val
                og = o // groups
                for gr in range(groups):
                    wgt = weight[gr * og:(gr + 1) * og]
                    out[bi, gr * og:(gr + 1) * og, oy, ox] = (wgt * col[gr * cg:(gr + 1) * cg][None]).sum((1, 2, 3))
                if bias is not None:
                    out[bi, :, oy, ox] += bias
    return out


CASES = [
    # (B, C, H, W, O, kh, kw, stride, padding, dilation, offset_groups, groups, use_mask)
    (2, 4, 5, 6, 3, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, False),
    (1, 4, 6, 5, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, True),
    (2, 4, 5, 5, 4, 3, 3, (1, 1), (1, 1), (1, 1), 2, 2, True),
    (1, 6, 7, 8, 4, 2, 3, (2, 1), (2, 1), (2, 2), 3, 2, False),
    (1, 2, 9, 7, 2, 3, 3, (2, 2), (0, 2), (1, 2), 1, 1, True),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_direct_reference(case):
    b, c, h, w, o, kh, kw, stride, padding, dilation, n_off, groups, use_mask = case
    gen = torch.Generator().manual_seed(hash(case) % 2**31)
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    inp = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    # Offsets up to +-3 px: many samples fall partly or fully outside the image.
    offset = 3.0 * (2 * torch.rand(b, 2 * n_off * kh * kw, ho, wo, generator=gen, dtype=torch.float64) - 1)
    weight = torch.randn(o, c // groups, kh, kw, generator=gen, dtype=torch.float64)
    bias = torch.randn(o, generator=gen, dtype=torch.float64)
    mask = torch.rand(b, n_off * kh * kw, ho, wo, generator=gen, dtype=torch.float64) if use_mask else None

    got = deform_conv2d(inp, offset, weight, bias, stride, padding, dilation, mask)
    want = reference_deform_conv2d(inp, offset, weight, bias, stride, padding, dilation, mask)
    assert got.shape == want.shape == (b, o, ho, wo)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_integer_and_border_offsets_match_reference():
    """Integer offsets, samples exactly on y=-1 / x=W and just inside the border."""
    gen = torch.Generator().manual_seed(3)
    inp = torch.randn(1, 3, 4, 5, generator=gen, dtype=torch.float64)
    weight = torch.randn(2, 3, 3, 3, generator=gen, dtype=torch.float64)
    choices = torch.tensor([-1.0, 0.0, 1.0, 2.0, -2.0, 0.5, -0.999, 4.0], dtype=torch.float64)
    idx = torch.randint(0, len(choices), (1, 18, 4, 5), generator=gen)
    offset = choices[idx]
    got = deform_conv2d(inp, offset, weight, None, 1, 1, 1)
    want = reference_deform_conv2d(inp, offset, weight, None, (1, 1), (1, 1), (1, 1))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 0, 1, 1), (1, 2, 2, 2), (2, 3, 3, 4)])
def test_zero_offset_equals_conv2d(stride, padding, dilation, groups):
    gen = torch.Generator().manual_seed(0)
    inp = torch.randn(2, 8, 11, 9, generator=gen)
    weight = torch.randn(12, 8 // groups, 3, 3, generator=gen)
    bias = torch.randn(12, generator=gen)
    want = F.conv2d(inp, weight, bias, stride, padding, dilation, groups)
    offset = torch.zeros(2, 18, *want.shape[-2:])
    got = deform_conv2d(inp, offset, weight, bias, stride, padding, dilation)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # A mask of ones is the identity modulation.
    got_m = deform_conv2d(inp, offset, weight, bias, stride, padding, dilation, torch.ones(2, 9, *want.shape[-2:]))
    torch.testing.assert_close(got_m, want, rtol=1e-4, atol=1e-4)


def test_unit_shift_equals_conv_of_shifted_input():
    """dx = +1 everywhere samples one pixel to the right: padding moves from left to right."""
    gen = torch.Generator().manual_seed(1)
    inp = torch.randn(1, 2, 6, 7, generator=gen)
    weight = torch.randn(3, 2, 3, 3, generator=gen)
    offset = torch.zeros(1, 18, 6, 7)
    offset[:, 1::2] = 1.0  # dx channels
    want = F.conv2d(F.pad(inp, (0, 2, 1, 1)), weight)
    got = deform_conv2d(inp, offset, weight, padding=1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gradients_flow_to_all_inputs():
    gen = torch.Generator().manual_seed(2)
    inp = torch.randn(1, 2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    offset = (0.3 + 0.4 * torch.rand(1, 18, 4, 4, generator=gen, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(1, 9, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, o, wt, m: deform_conv2d(a, o, wt, None, 1, 1, 1, m), (inp, offset, weight, mask)
    )


def test_bad_shapes_raise_clear_errors():
    inp = torch.randn(1, 4, 5, 5)
    weight = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="offset must be"):
        deform_conv2d(inp, torch.zeros(1, 18, 4, 4), weight, padding=1)
    with pytest.raises(ValueError, match="multiple of 2\\*kh\\*kw"):
        deform_conv2d(inp, torch.zeros(1, 17, 5, 5), weight, padding=1)
    with pytest.raises(ValueError, match="mask must be"):
        deform_conv2d(inp, torch.zeros(1, 18, 5, 5), weight, padding=1, mask=torch.ones(1, 8, 5, 5))


def test_modules():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    layer = DeformConv2d(4, 6, 3, padding=1)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    torch.testing.assert_close(layer(x, torch.zeros(2, 18, 8, 8)), F.conv2d(x, layer.weight, layer.bias, padding=1), rtol=1e-4, atol=1e-4)

    for use_mask in (False, True):
        dcn = DeformableConv2d(4, 6, mask=use_mask)
        names = sorted(n for n, _ in dcn.named_parameters())
        assert names == ["offset_conv.bias", "offset_conv.weight", "regular_conv.weight"]
        assert dcn.offset_conv.out_channels == (27 if use_mask else 18)
        with torch.no_grad():
            dcn.offset_conv.weight.zero_()
            dcn.offset_conv.bias.zero_()
            if use_mask:  # sigmoid(large) ~ 1 -> plain conv
                dcn.offset_conv.bias[18:] = 50.0
        torch.testing.assert_close(dcn(x), F.conv2d(x, dcn.regular_conv.weight, padding=1), rtol=1e-4, atol=1e-4)

    # Offsets are clamped to max(H, W) / 4 = 2 px: a huge predicted offset acts like +2 px.
    dcn = DeformableConv2d(4, 6)
    with torch.no_grad():
        dcn.offset_conv.weight.zero_()
        dcn.offset_conv.bias.fill_(100.0)
    want = deform_conv2d(x, torch.full((2, 18, 8, 8), 2.0), dcn.regular_conv.weight, None, 1, 1)
    torch.testing.assert_close(dcn(x), want)
