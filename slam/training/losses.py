"""Training losses of SuperPoint (DeTone et al. 2018) and SuperGlue (Sarlin et al. 2020).

SuperPoint
    * :func:`points_to_labels`: keypoint map (B, H, W) -> per-cell class (B, H/8, W/8) in
      0..64 (64 = "no interest point" dustbin); with several points in a cell one is chosen at
      random (torch generator), as in the paper.
    * :func:`detector_loss`: cross-entropy over the 65 bins, averaged over valid cells.
    * :func:`descriptor_loss`: the hinge loss over all pairs of cells (h, w) x (h', w')::

          l_d = lambda_d * s * max(0, m_p - d^T d') + (1 - s) * max(0, d^T d' - m_n)

      with s = 1 when the warped centre of cell (h, w) lies within ``cell - 0.5`` px of the
      centre of cell (h', w') (the paper writes 8 px; the reference implementation's 7.5 px
      keeps the 4 neighbours of an exactly aligned cell negative), averaged over the pairs
      whose second cell is valid. Defaults m_p = 1, m_n = 0.2, lambda_d = 250.
    * :func:`superpoint_loss`: L = L_p(X) + L_p(X') + lambda * L_d with lambda = 1e-4.

SuperGlue
    * :func:`superglue_nll`: negative log-likelihood of the assignment: true matches (i, j),
      unmatched points of image 0 against the dustbin column and unmatched points of image 1
      against the dustbin row. Ground truth labels: j >= 0 matched, -1 unmatched (dustbin),
      -2 ignored (ambiguous; no loss term).

Cell centres: cell (i, j) covers pixels [8j, 8j + 7] x [8i, 8i + 7]; its centre is at pixel
(8j + 3.5, 8i + 3.5) (pixel-centre convention, top-left pixel centre at (0, 0)).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE", "UNMATCHED", "points_to_labels", "keypoint_map", "cell_valid_mask", "detector_loss",
    "cell_centres", "descriptor_loss", "superpoint_loss", "superglue_nll",
]

UNMATCHED = -1  # ground truth label: the point belongs to the dustbin
IGNORE = -2  # ground truth label: ambiguous, excluded from the loss


def keypoint_map(points: list[torch.Tensor], height: int, width: int, device=None) -> torch.Tensor:
    """List of B (N_b, 2) float (x, y) pixel arrays -> (B, H, W) float32 map with 1 at the
    rounded positions inside the image."""
    out = torch.zeros(len(points), height, width, device=device)
    for b, p in enumerate(points):
        if p is None or len(p) == 0:
            continue
        p = torch.as_tensor(p, dtype=torch.float32, device=device).reshape(-1, 2)
        xy = torch.round(p).long()
        ok = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        xy = xy[ok]
        out[b, xy[:, 1], xy[:, 0]] = 1.0
    return out


def points_to_labels(kmap: torch.Tensor, cell: int = 8, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Keypoint map (B, H, W) (non-zero = keypoint) -> labels (B, H/cell, W/cell) int64 in
    [0, cell^2]: index of the keypoint's position in its cell (row-major, matching the
    depth-to-space order of the detector head), or cell^2 (dustbin) for cells without one.
    Cells with several keypoints pick one uniformly at random (``generator``)."""
    b, h, w = kmap.shape
    if h % cell or w % cell:
        raise ValueError(f"keypoint map size {(h, w)} must be a multiple of the cell size {cell}")
    cells = F.pixel_unshuffle((kmap > 0).float()[:, None], cell)  # (B, cell^2, h/c, w/c)
    noise = torch.rand(cells.shape, generator=generator, device="cpu").to(cells.device)
    scores = cells * (2.0 + noise)  # any keypoint (>= 2) beats the dustbin (1); ties broken randomly
    dust = torch.ones_like(scores[:, :1])
    return torch.cat([scores, dust], dim=1).argmax(dim=1)


def cell_valid_mask(pixel_mask: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """(B, H, W) bool pixel validity -> (B, H/cell, W/cell) bool: a cell is valid only if all its
    pixels are."""
    cells = F.pixel_unshuffle(pixel_mask.float()[:, None], cell)
    return cells.min(dim=1).values > 0.5


def detector_loss(logits: torch.Tensor, labels: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy over the 65 bins. logits (B, 65, h, w), labels (B, h, w) int64, valid (B, h, w)
    bool or None. Mean over the valid cells (0 if none)."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")  # (B, h, w)
    if valid is None:
        return ce.mean()
    v = valid.float()
    return (ce * v).sum() / v.sum().clamp_min(1.0)


def cell_centres(h: int, w: int, cell: int = 8, device=None) -> torch.Tensor:
    """(h*w, 2) float32 (x, y) pixel centres of the cells, row-major."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2).float() * cell + (cell / 2 - 0.5)


def descriptor_loss(desc0: torch.Tensor, desc1: torch.Tensor, h1_from_0: torch.Tensor,
                    valid1: Optional[torch.Tensor] = None, pos_margin: float = 1.0, neg_margin: float = 0.2,
                    lambda_d: float = 250.0, cell: int = 8, pos_radius: Optional[float] = None) -> tuple[torch.Tensor, dict]:
    """Hinge descriptor loss of SuperPoint.

    desc0, desc1: (B, D, h, w) raw descriptor maps of image 0 and image 1 (L2-normalised here).
    h1_from_0:    (B, 3, 3) homography mapping image-0 pixels to image-1 pixels.
    valid1:       (B, h, w) bool cells of image 1 whose content is visible in image 0 (None = all).
    pos_radius:   correspondence radius in px (default cell - 0.5).
    Returns (loss scalar, stats dict with 'positive_dist' and 'negative_dist' mean similarities).
    """
    b, d, h, w = desc0.shape
    if desc1.shape != desc0.shape:
        raise ValueError(f"descriptor maps differ in shape: {tuple(desc0.shape)} vs {tuple(desc1.shape)}")
    radius = cell - 0.5 if pos_radius is None else pos_radius
    c = cell_centres(h, w, cell, desc0.device)  # (n, 2)
    hom = torch.cat([c, torch.ones_like(c[:, :1])], 1)  # (n, 3)
    warped = torch.einsum("bij,nj->bni", h1_from_0.to(c), hom)
    z = warped[..., 2:]
    warped = torch.where(z > 1e-8, warped[..., :2] / z.clamp_min(1e-8), torch.full_like(warped[..., :2], 1e6))
    dist = torch.cdist(warped, c[None].expand(b, -1, -1))  # (B, n0, n1)
    s = (dist <= radius).float()
    d0 = F.normalize(desc0.float().reshape(b, d, -1), dim=1)
    d1 = F.normalize(desc1.float().reshape(b, d, -1), dim=1)
    dot = torch.einsum("bdn,bdm->bnm", d0, d1)
    loss = lambda_d * s * F.relu(pos_margin - dot) + (1 - s) * F.relu(dot - neg_margin)
    if valid1 is None:
        weight = torch.ones_like(loss)
    else:
        weight = valid1.reshape(b, 1, -1).float().expand_as(loss)
    total = (loss * weight).sum() / weight.sum().clamp_min(1.0)
    with torch.no_grad():
        pos = (dot * s * weight).sum() / (s * weight).sum().clamp_min(1.0)
        neg = (dot * (1 - s) * weight).sum() / ((1 - s) * weight).sum().clamp_min(1.0)
    return total, {"positive_sim": float(pos), "negative_sim": float(neg)}


def superpoint_loss(out0: dict, out1: dict, labels0: torch.Tensor, labels1: torch.Tensor, h1_from_0: torch.Tensor,
                    valid0: Optional[torch.Tensor] = None, valid1: Optional[torch.Tensor] = None,
                    lambda_loss: float = 1e-4, **desc_kwargs) -> tuple[torch.Tensor, dict]:
    """Joint loss L = L_p(X, Y) + L_p(X', Y') + lambda * L_d (SuperPoint eq. 1).

    out0/out1: SuperPointNet outputs ({'logits', 'descriptors_dense'}) of the image and its warp;
    labels0/1: (B, h, w) cell labels; valid0/1: (B, h, w) bool valid cells. Returns (loss, stats)."""
    l0 = detector_loss(out0["logits"], labels0, valid0)
    l1 = detector_loss(out1["logits"], labels1, valid1)
    ld, st = descriptor_loss(out0["descriptors_dense"], out1["descriptors_dense"], h1_from_0, valid1, **desc_kwargs)
    total = l0 + l1 + lambda_loss * ld
    return total, {"det0": float(l0.detach()), "det1": float(l1.detach()), "desc": float(ld.detach()), **st}


def superglue_nll(log_assignment: torch.Tensor, gt0: torch.Tensor, gt1: torch.Tensor,
                  normalize: str = "terms") -> tuple[torch.Tensor, dict]:
    """Negative log-likelihood of SuperGlue's assignment (paper eq. 10).

    log_assignment: (B, N+1, M+1) float (dustbin row/column last).
    gt0: (B, N) int64: j >= 0 = match with point j of image 1, -1 = unmatched (dustbin), -2 = ignore
         (also for padding). gt1: (B, M) int64 likewise for image 1 (only its -1 entries are used:
         the matches are taken from gt0).
    normalize: "terms"    - per pair: the sum of all terms divided by their count, then the mean
                            over pairs (the paper's sum, made independent of the point count);
               "balanced" - per pair: 0.5 * mean over matches + 0.5 * mean over unmatched terms.
    Returns (loss scalar, stats: nll_matched, nll_unmatched (means over the batch), n_matches).
    """
    if normalize not in ("terms", "balanced"):
        raise ValueError(f"normalize must be 'terms' or 'balanced', got {normalize!r}")
    b, n1, m1 = log_assignment.shape
    n, m = n1 - 1, m1 - 1
    la = log_assignment.float()
    matched = gt0 >= 0
    j = gt0.clamp_min(0)
    pos = -la[:, :n, :m].gather(2, j[..., None])[..., 0] * matched  # (B, N)
    un0 = gt0 == UNMATCHED
    un1 = gt1 == UNMATCHED
    neg0 = -la[:, :n, m] * un0
    neg1 = -la[:, n, :m] * un1
    # keep -inf * 0 (padded entries) from becoming nan
    pos, neg0, neg1 = (torch.nan_to_num(t, nan=0.0, posinf=0.0) for t in (pos, neg0, neg1))
    n_pos = matched.sum(1).float()
    n_neg = un0.sum(1).float() + un1.sum(1).float()
    s_pos = pos.sum(1)
    s_neg = neg0.sum(1) + neg1.sum(1)
    if normalize == "terms":
        per_pair = (s_pos + s_neg) / (n_pos + n_neg).clamp_min(1.0)
    else:
        per_pair = 0.5 * s_pos / n_pos.clamp_min(1.0) + 0.5 * s_neg / n_neg.clamp_min(1.0)
    loss = per_pair.mean()
    s_pos, s_neg = s_pos.detach(), s_neg.detach()
    stats = {"nll_matched": float((s_pos / n_pos.clamp_min(1.0)).mean()),
             "nll_unmatched": float((s_neg / n_neg.clamp_min(1.0)).mean()),
             "n_matches": float(n_pos.mean())}
    return loss, stats
