"""Self-supervised training of our own SuperPoint and SuperGlue weights.

Modules: synthetic_shapes (Synthetic Shapes generator), homographies (random homographies),
homographic_adaptation (pseudo ground truth), losses (SuperPoint detector/descriptor losses,
SuperGlue NLL), ground_truth (SuperGlue assignments from homographies and RGB-D), data
(training pool, augmentation, synthetic renders), checkpoint + loop (resumable, time-boxed
training), superpoint_trainer / superglue_trainer (the recipes), evaluation (two-view metrics).
Entry points: tools/train_superpoint.py, tools/train_superglue.py, tools/eval_pairs.py.
"""
