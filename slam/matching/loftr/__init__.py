"""LoFTR: detector-free local feature matching with transformers (Sun et al., CVPR 2021).

Settings: ``LoFTRConfig`` in the light ``slam.matching.config`` (re-exported by ``matcher``).
Modules: ``backbone`` (ResNet-FPN), ``transformer``
(positional encoding, linear attention), ``coarse`` (confidence matrix, mutual selection),
``fine`` (window refinement), ``model`` (LoFTRNet, checkpoint loading), ``matcher`` (LoFTR,
LoFTRMatches: the two-image API). Import the names from those modules; this package file
imports nothing.
"""
