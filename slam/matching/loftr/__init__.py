"""LoFTR: detector-free local feature matching with transformers (Sun et al., CVPR 2021).

Modules: ``config`` (LoFTRConfig, no torch), ``backbone`` (ResNet-FPN), ``transformer``
(positional encoding, linear attention), ``coarse`` (confidence matrix, mutual selection),
``fine`` (window refinement), ``model`` (LoFTRNet, checkpoint loading), ``matcher`` (LoFTR,
LoFTRMatches: the two-image API). Import the names from those modules; this package file
imports nothing, so ``slam.matching.loftr.config`` stays light.
"""
