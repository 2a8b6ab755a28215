"""Winograd F(4x4, 3x3) convolutions (slam.matching.loftr.winograd); LoFTR's winograd backbone is
tested in test_loftr.py.

The identity is restated in float64 on one tile; the module is checked against a float64 direct
convolution at sizes that are not multiples of the tile and with a short last chunk."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slam.matching.loftr import winograd
from slam.matching.loftr.winograd import WinogradConv3x3, filter_transform

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_one_tile_by_the_transforms_equals_the_correlation_in_float64():
    """A^T [(G g G^T) * (B^T d B)] A is the 4x4 valid correlation of a 6x6 tile d with a 3x3 g."""
    g64 = torch.Generator().manual_seed(0)
    d = torch.randn(6, 6, dtype=torch.float64, generator=g64)
    g = torch.randn(3, 3, dtype=torch.float64, generator=g64)
    bt, gm, at = (torch.tensor(m, dtype=torch.float64) for m in (winograd._BT, winograd._G, winograd._AT))
    y = at @ ((gm @ g @ gm.T) * (bt @ d @ bt.T)) @ at.T
    want = torch.stack([torch.stack([(d[i:i + 3, j:j + 3] * g).sum() for j in range(4)]) for i in range(4)])
    torch.testing.assert_close(y, want, rtol=0, atol=1e-12)
    # the module's (36, Cin, Cout) filter layout: U[6a + b, c, o] = (G g_oc G^T)[a, b]
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=g64)
    u = filter_transform(w)
    assert u.shape == (36, 3, 2) and u.dtype == torch.float32
    torch.testing.assert_close(u[:, 1, 0].double().view(6, 6), gm @ w[0, 1] @ gm.T, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch,cin,cout,h,w,bias,channels_last", [
    (1, 5, 7, 13, 22, True, True),     # neither side a multiple of 4
    (3, 8, 4, 9, 4, False, False),     # contiguous input, no bias
    (2, 16, 16, 57, 21, True, True),   # 15 tile rows in chunks of 2: the last chunk has one
])
def test_winograd_conv_equals_a_direct_conv(batch, cin, cout, h, w, bias, channels_last, monkeypatch):
    monkeypatch.setattr(winograd, "TARGET_TILES", 24)  # force several chunks at these sizes
    torch.manual_seed(1)
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    x = torch.randn(batch, cin, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = WinogradConv3x3(conv)(x)
        want = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double(), padding=1)
    assert y.shape == want.shape and y.dtype == torch.float32
    assert y.permute(0, 2, 3, 1).is_contiguous()  # channels-last memory
    err = ((y.double() - want).abs().max() / want.abs().max()).item()
    assert err < 3e-5, err


def test_winograd_conv_refuses_other_convs_and_autocast():
    with pytest.raises(ValueError, match="stride 1"):
        WinogradConv3x3(nn.Conv2d(4, 4, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match="stride 1"):
        WinogradConv3x3(nn.Conv2d(4, 4, 1))
    wc = WinogradConv3x3(nn.Conv2d(4, 4, 3, padding=1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RuntimeError, match="float32"):
        wc(torch.randn(1, 4, 8, 8))


def test_the_one_axis_transforms_multiply_by_bt_and_at():
    """The vectorised passes (common subexpressions) equal B^T and A^T applied along one axis."""
    g64 = torch.Generator().manual_seed(2)
    d = torch.randn(6, 5, 3, dtype=torch.float64, generator=g64)
    out, tmp = torch.empty(6, 5, 3, dtype=torch.float64), torch.empty(3, 5, 3, dtype=torch.float64)
    winograd._input_1d(list(d), list(out), list(tmp))
    torch.testing.assert_close(out, torch.einsum("ai,ixy->axy", torch.tensor(winograd._BT, dtype=torch.float64), d))
    y = torch.empty(4, 5, 3, dtype=torch.float64)
    winograd._output_1d(list(d), list(y), list(tmp))
    torch.testing.assert_close(y, torch.einsum("ai,ixy->axy", torch.tensor(winograd._AT, dtype=torch.float64), d))
