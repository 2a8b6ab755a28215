"""Turn the camera of a recorded TUM RGB-D sequence by a known fast shake (with motion blur) and
write it as a new TUM-layout sequence with exact ground truth (slam.synth.shake).

    PYTHONPATH=. python tools/shake_sequence.py --seq tum/fr1_xyz --data-root /work/shared/data/tum \
        --out /tmp/fr1_xyz_shaken [--rate 70] [--amplitude 6] [--zoom 1.4] [--exposure-ms 10]

Then: python -m slam run --seq /tmp/fr1_xyz_shaken --mode rgbd
"""
from __future__ import annotations

import argparse
from pathlib import Path

from slam.errors import SlamError
from slam.geometry.camera import PinholeCamera
from slam.io.sequences import find_sequence
from slam.synth.shake import Shake, shake_sequence


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", required=True, help="a TUM sequence name, e.g. tum/fr1_xyz")
    ap.add_argument("--data-root")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--rate", type=float, default=70.0, help="peak yaw rate, deg/s")
    ap.add_argument("--amplitude", type=float, default=6.0, help="yaw amplitude, deg (pitch 0.6x, roll 0.3x)")
    ap.add_argument("--phase", type=float, default=0.0, help="start offset of the shake, s")
    ap.add_argument("--zoom", type=float, default=1.4, help="focal length of the new camera / the source's")
    ap.add_argument("--exposure-ms", type=float, default=10.0, help="motion-blur exposure, ms (0 = none)")
    ap.add_argument("--blur-samples", type=int, default=7)
    ap.add_argument("--max-frames", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        info, folder = find_sequence(a.seq, a.data_root)
        camera = PinholeCamera.from_dict(info.camera, source=str(info.manifest_path))
        depth_factor = info.depth_factor
        rep = shake_sequence(folder, a.out, camera, Shake(a.amplitude, a.rate, a.phase), zoom=a.zoom,
                             exposure_s=a.exposure_ms / 1000.0, blur_samples=a.blur_samples, depth_factor=depth_factor,
                             max_frames=a.max_frames)
    except (SlamError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    print(f"{a.out}: {rep.frames} frames ({rep.with_groundtruth} with ground truth), peak rate {rep.peak_rate_deg_s:.1f} deg/s, "
          f"blur up to {rep.blur_px_max:.1f} px, at most {100 * rep.outside_share_max:.1f} % of a frame outside the source view")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
