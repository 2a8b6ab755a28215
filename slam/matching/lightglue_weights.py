"""LightGlue weight files: cvg's key layouts mapped to our parameter names, and the network's
sizes read from a state dict (slam.matching.lightglue builds the network from them)."""
from __future__ import annotations

import re

from slam.errors import WeightsError

_OLD_KEY = re.compile(r"^(self_attn|cross_attn)\.(\d+)\.(.*)$")
#: keys present in some released files that this model does not use.
_IGNORED_KEY = re.compile(r"^(log_assignment\.\d+\.r|confidence_thresholds)$")
#: LighterGlue's file (xfeat_lighterglue) nests the matcher under ``matcher.`` and also carries a
#: copy of the XFeat network under ``extractor.`` (BatchNorm statistics differ from xfeat.pt; the
#: reference pipeline describes with xfeat.pt and uses only the matcher part of this file).
_MATCHER_PREFIX = "matcher."
_EXTRACTOR_PREFIX = "extractor."


def convert_state_dict(state_dict: dict) -> dict:
    """Map a cvg LightGlue state dict to our parameter names.

    Old layout ``self_attn.N.X`` / ``cross_attn.N.X`` -> ``transformers.N.self_attn.X`` /
    ``transformers.N.cross_attn.X``; the new layout is already ours. A ``module.`` prefix
    (DataParallel) is stripped; unused extras (``log_assignment.N.r``) are dropped. LighterGlue's
    layout (``matcher.*`` plus a bundled ``extractor.*``) keeps the matcher keys only.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith(_EXTRACTOR_PREFIX):
            continue
        if key.startswith(_MATCHER_PREFIX):
            key = key[len(_MATCHER_PREFIX):]
        if _IGNORED_KEY.match(key):
            continue
        m = _OLD_KEY.match(key)
        if m:
            key = f"transformers.{m.group(2)}.{m.group(1)}.{m.group(3)}"
        out[key] = value
    return out


#: key prefixes of the feature checkpoints a user may pass to lightglue.weights by mistake
_FEATURE_KEYS = (("block1.", "ALIKED"), ("unet.", "DISK"), ("extractor", "DISK"), ("conv1a.", "SuperPoint"),
                 ("backbone.", "SuperPoint"), ("kenc.", "SuperGlue"), ("gnn.", "SuperGlue"))


def check_is_lightglue(state_dict: dict, source: str) -> None:
    """WeightsError unless the (converted) state dict has LightGlue transformer layers; names the
    model the file seems to be for (a feature or SuperGlue checkpoint passed by mistake)."""
    if count_layers(state_dict) > 0:
        return
    keys = [str(k) for k in state_dict]
    looks = next((name for prefix, name in _FEATURE_KEYS if any(k.startswith(prefix) for k in keys)), None)
    what = f"it looks like a checkpoint of {looks}" if looks else f"its keys are {', '.join(keys[:3]) or 'none'}"
    raise WeightsError(f"{source} is not a LightGlue checkpoint (no transformer layers; {what}); set lightglue.weights "
                       f"to a LightGlue file, e.g. python -m slam weights install aliked_lightglue, or leave it "
                       f"empty to use the weights for lightglue.features")


def count_layers(state_dict: dict) -> int:
    """Number of transformer layers in a (converted) state dict."""
    idx = {int(m.group(1)) for k in state_dict for m in [re.match(r"^transformers\.(\d+)\.", k)] if m}
    return max(idx) + 1 if idx else 0


def architecture(state_dict: dict, source: str = "state dict") -> dict:
    """Sizes of the network a (converted) state dict was saved from.

    Returns {"n_layers", "num_heads", "descriptor_dim", "input_dim"}: d from ``final_proj``, the
    head size from the rotary encoding (``posenc.Wr`` has head_size / 2 rows), input_dim from
    ``input_proj`` (d when absent). LightGlue: 9, 4, 256, 128 (256 for SuperPoint); LighterGlue:
    6, 1, 96, 64."""
    try:
        d = int(state_dict["log_assignment.0.final_proj.weight"].shape[0])
        head = 2 * int(state_dict["posenc.Wr.weight"].shape[0])
    except KeyError as exc:
        raise WeightsError(f"{source} is not a LightGlue checkpoint (no {exc}); pass a cvg LightGlue or "
                           f"LighterGlue file") from None
    if head <= 0 or d % head:
        raise WeightsError(f"{source}: descriptor width {d} is not a multiple of the head size {head}")
    inp = state_dict.get("input_proj.weight")
    return {"n_layers": count_layers(state_dict), "num_heads": d // head, "descriptor_dim": d,
            "input_dim": int(inp.shape[1]) if inp is not None else d}
