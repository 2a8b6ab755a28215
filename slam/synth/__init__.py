"""Synthetic RGB-D sequences with exact ground truth: the renderer that is our test bed.

A small, exact ray caster renders procedural scenes through the same camera model as a real
sequence (pinhole with OpenCV 5-coefficient distortion), with exact depth (z in the camera frame)
and exact poses, and writes them as TUM RGB-D folders that every reader of the project reads.

Modules, by concern (each imports only those above it):

- :mod:`~slam.synth.config`: scene and motion types, stereo and sensor-effect parameters (light);
- :mod:`~slam.synth.textures`, :mod:`~slam.synth.items`: procedural textures (materials; things);
- :mod:`~slam.synth.scene`: textures with mip pyramids, faces, boxes, cylinders, quads, lights;
- :mod:`~slam.synth.raycast`: the ray caster (``Renderer``, ``render_view``);
- :mod:`~slam.synth.office`: the furnished office room (``make_office(seed)``);
- :mod:`~slam.synth.corridor`: a long office corridor (``make_corridor(seed, params)``);
- :mod:`~slam.synth.motion`: camera trajectories ``world_from_cam(t)`` (``Trajectory``, ``look_at``):
  sweep, xyz, orbit, rotation (office desk), loop (round the room), forward (along a corridor);
- :mod:`~slam.synth.effects`: sensor effects (motion blur, exposure, vignetting, noise, depth holes);
- :mod:`~slam.synth.profiles`, :mod:`~slam.synth.manifest`: embedded profiles; loading and
  validating manifests (``sequences/synthetic/<name>.yaml``);
- :mod:`~slam.synth.dataset`: rendering a sequence folder (TUM layout, optional right camera) and
  the cache (``render_sequence``, ``ensure_sequence``).

Training pairs sampled from these scenes are in :mod:`slam.training.synthetic_pairs`; exact
correspondences from depth and poses in :mod:`slam.geometry.depth_warp`.

Cache rule
----------
``ensure_sequence`` reuses ``<root>/synthetic/<name>`` when its ``stamp.json`` holds the current
cache key (:func:`slam.synth.dataset.cache_key`): a hash of what determines the written data and
nothing else, namely

1. the resolved manifest (frames, fps, seed, camera, scene, motion, realism, stereo, name; not
   the description),
2. the renderer's fixed parameters (depth factor, timestamp base, near plane),
3. ``slam.synth.dataset.PIXELS_VERSION``.

Source files are NOT hashed: editing a docstring or refactoring re-renders nothing. Whoever
changes code so that any written image, depth value, pose or timestamp changes (textures, scene
layout, ray casting, motions, effects, file format) bumps ``PIXELS_VERSION`` in the same commit;
a change that keeps the output identical must be checked to do so (render and compare) and
leaves it alone.

Conventions: world frame z up (metres); camera frame OpenCV (x right, y down, z forward); poses
are (4, 4) float64 ``dst_from_src``; images (H, W, 3) uint8 BGR; depth (H, W) float32 metres,
0 = invalid; depth PNGs uint16 with depth factor 5000.
"""
