#!/usr/bin/env bash
# GPU readiness check (issue 18): the CUDA paths in one script, every figure as JSON under $OUT.
#
#   OUT=/tmp/gpu bash tools/gpu_check.sh                 # on a CUDA machine (< 8 minutes)
#   OUT=/tmp/gpu bash tools/gpu_check.sh --device cpu --quick   # dry run of the same steps on a CPU
#                                                               # (--quick: 256 keypoints, 30 frames, one call per figure)
#
# Steps (each under its own time limit; a failing step is recorded and the next one runs):
#   1. the `gpu`-marked tests (pytest -m gpu)
#   2. SuperPoint front-end, 1024 keypoints, single and batched, fp16 (fp32 on CPU)
#   3. SuperGlue, 1024 keypoints, one pair and one frame against 4 keyframes, fp16
#   4. LightGlue (ALIKED weights when installed, else its synthetic pairs), 1024 keypoints, pair and batched
#   5. XFeat and LighterGlue, 1024 keypoints, single and batched, fp16
#   6. SLAM on 200 frames of TUM fr1_xyz with SuperPoint + SuperGlue, when their weights are installed
#      (and 200 frames with the default learned pair, XFeat + LighterGlue, when those are)
# $OUT/gpu_check.json lists every step: command, exit code, seconds, and the JSON file it wrote.
# Environment: OUT (default runs/gpu_check), SLAM_DATA (datasets; default ../shared/data/tum, else
# ./sequences), SLAM_WEIGHTS_DIR (weights cache), PYTHON (default python).
# A GPU machine without network has no weights cache: copy the weights into an ignored folder of the
# checkout (e.g. .weights/, carried with the working tree) and set SLAM_WEIGHTS_DIR=.weights; steps
# whose weights are missing use random weights (benchmarks) or are skipped (SLAM runs).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#*=}"; shift ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | grep '^#'; exit 0 ;;
    *) echo "error: unknown argument $1 (use --device cpu|cuda, --quick)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "error: --device must be cpu or cuda, got $DEVICE" >&2; exit 2 ;; esac
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the tools import the slam package of this checkout
DATA=${SLAM_DATA:-}
if [ -z "$DATA" ] && [ -d "$ROOT/../shared/data/tum" ]; then DATA="$ROOT/../shared/data/tum"; fi
if [ "$DEVICE" = cuda ]; then PREC=fp16; else PREC=fp32; fi
if [ "$QUICK" = 1 ]; then  # a check of the plumbing: 256 keypoints, one or two calls per figure
  KP=256; FRAMES=2; SP_CALLS=1; SLAM_FRAMES=30; SP_BATCH=2; XF_FRAMES=1; SG_REPEAT=1; LG_PAIRS=1; LG_REPEATS=1; BATCH=2
else
  KP=1024; FRAMES=50; SP_CALLS=3; SLAM_FRAMES=200; SP_BATCH=32; XF_FRAMES=30; SG_REPEAT=10; LG_PAIRS=4; LG_REPEATS=3; BATCH=32
fi
# time limits per step (s): on a GPU they add up to 480 s (8 min), most steps take a fraction; a CPU dry run gets 4x
SCALE=1
if [ "$DEVICE" = cpu ]; then SCALE=4; fi
lim() { echo $(( $1 * SCALE )); }
START=$(date +%s)
STEPS="$OUT/steps.jsonl"
: > "$STEPS"
echo "gpu_check: device $DEVICE, precision $PREC, quick $QUICK, figures in $OUT"

# step NAME LIMIT_S JSON_FILE COMMAND... : run one step, record it
step() {
  local name=$1 limit=$2 json=$3; shift 3
  local t0 rc
  t0=$(date +%s)
  echo "== $name ($limit s at most): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  tail -n 5 "$OUT/$name.log"
  "$PY" - "$STEPS" "$name" "$rc" "$(( $(date +%s) - t0 ))" "$json" "$*" <<'EOF'
import json, sys
path, name, rc, secs, js, cmd = sys.argv[1:]
row = {"step": name, "rc": int(rc), "timed_out": int(rc) in (124, 137), "seconds": int(secs), "command": cmd,
       "json": js if js and __import__("os").path.isfile(js) else None}
open(path, "a").write(json.dumps(row) + "\n")
EOF
}

skip() {  # skip NAME REASON
  echo "== $1 skipped: $2"
  "$PY" -c 'import json,sys; open(sys.argv[1],"a").write(json.dumps({"step": sys.argv[2], "skipped": sys.argv[3]})+"\n")' \
    "$STEPS" "$1" "$2"
}

has_weights() { "$PY" -m slam weights path "$1" > /dev/null 2>&1; }

# 1. gpu-marked tests (they skip themselves without CUDA)
GPU_TEST_FILES=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
# shellcheck disable=SC2086
step gpu_tests "$(lim 120)" "$OUT/gpu_tests.xml" "$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml "$OUT/gpu_tests.xml" $GPU_TEST_FILES

# 2. SuperPoint (our weights when installed, else random ones: the timing is the same network)
SPW=""
for w in superpoint_ours superpoint_v1; do if has_weights $w; then SPW=$w; break; fi; done
step superpoint "$(lim 60)" "$OUT/superpoint.json" "$PY" tools/bench_superpoint.py --device "$DEVICE" --precisions "$PREC" \
  --max-keypoints "$KP" --frames "$FRAMES" --warmup 1 --batch "$SP_BATCH" --batch-calls "$SP_CALLS" ${SPW:+--weights $SPW} \
  --out "$OUT/superpoint.json"

# 3. SuperGlue (random weights in the official configuration)
step superglue "$(lim 60)" "$OUT/superglue.json" "$PY" tools/bench_superglue.py --device "$DEVICE" --precision "$PREC" \
  --sizes "$KP" --keyframes 4 --kf-sizes "$KP" --repeat "$SG_REPEAT" --warmup 1 --out "$OUT/superglue.json"

# 4. LightGlue
LG_SYN=""
if ! has_weights aliked-n16 || [ ! -d "${DATA:-/nonexistent}/rgbd_dataset_freiburg1_xyz" ]; then LG_SYN="--synthetic"; fi
if has_weights aliked_lightglue; then
  step lightglue "$(lim 50)" "$OUT/lightglue.json" "$PY" tools/bench_lightglue.py --device "$DEVICE" --sizes "$KP" \
    --pairs "$LG_PAIRS" --repeats "$LG_REPEATS" --batch 4 $LG_SYN --out "$OUT/lightglue.json"
else
  skip lightglue "aliked_lightglue weights not installed (python -m slam weights install aliked_lightglue)"
fi

# 5. XFeat + LighterGlue (random weights when not installed)
step xfeat "$(lim 50)" "$OUT/xfeat.json" "$PY" tools/bench_xfeat.py --device "$DEVICE" --precisions "$PREC" \
  --max-keypoints "$KP" --frames "$XF_FRAMES" --warmup 1 --batch "$BATCH" --keyframes 3 --out "$OUT/xfeat.json"

# 6. SLAM on fr1_xyz
if [ -z "$DATA" ] || [ ! -d "$DATA/rgbd_dataset_freiburg1_xyz" ]; then
  skip slam_sp_sg "fr1_xyz not found (set SLAM_DATA to the folder holding rgbd_dataset_freiburg1_xyz)"
else
  SGW=""
  for w in superglue_ours superglue_indoor; do if has_weights $w; then SGW=$w; break; fi; done
  if [ -n "$SPW" ] && [ -n "$SGW" ]; then
    step slam_sp_sg "$(lim 90)" "$OUT/slam_sp_sg.json" "$PY" -m slam bench --seq tum/fr1_xyz --data-root "$DATA" --modes rgbd \
      --max-frames "$SLAM_FRAMES" --device "$DEVICE" --features superpoint --matcher superglue \
      superpoint.weights=$SPW superglue.weights=$SGW --out "$OUT/runs" --json "$OUT/slam_sp_sg.json"
  else
    skip slam_sp_sg "SuperPoint/SuperGlue weights not installed (superpoint_ours + superglue_ours, or Magic Leap's superpoint_v1 + superglue_indoor)"
  fi
  if has_weights xfeat && has_weights xfeat_lighterglue; then
    step slam_xfeat "$(lim 50)" "$OUT/slam_xfeat.json" "$PY" -m slam bench --seq tum/fr1_xyz --data-root "$DATA" --modes rgbd \
      --max-frames "$SLAM_FRAMES" --device "$DEVICE" --features xfeat --matcher lightglue --out "$OUT/runs" \
      --json "$OUT/slam_xfeat.json"
  else
    skip slam_xfeat "XFeat weights not installed (python -m slam weights install xfeat xfeat_lighterglue)"
  fi
fi

# summary: every step and the figures of every JSON written
"$PY" - "$STEPS" "$OUT/gpu_check.json" "$DEVICE" "$QUICK" "$(( $(date +%s) - START ))" <<'EOF'
import json, platform, sys
steps_path, out_path, device, quick, secs = sys.argv[1:]
steps = [json.loads(line) for line in open(steps_path) if line.strip()]
for s in steps:
    if s.get("json") and s["json"].endswith(".json"):
        try:
            s["figures"] = json.load(open(s["json"]))
        except (OSError, ValueError) as exc:
            s["figures_error"] = str(exc)
try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    tv = torch.__version__
except Exception as exc:  # the summary must still be written
    gpu, tv = f"torch failed: {exc}", None
summary = {"device": device, "quick": quick == "1", "gpu": gpu, "torch": tv, "host": platform.node(),
           "seconds": int(secs), "failed": [s["step"] for s in steps if s.get("rc", 0) != 0], "steps": steps}
open(out_path, "w").write(json.dumps(summary, indent=2, default=str))
print(f"gpu_check: {len(steps)} steps in {secs} s, failed: {summary['failed'] or 'none'}; {out_path}")
sys.exit(1 if summary["failed"] else 0)
EOF
