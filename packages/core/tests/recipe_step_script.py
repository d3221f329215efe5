"""A recipe step for tests: copies --model (a folder) to --output_dir as its new model, logs the call."""

import argparse
import shutil
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--output_dir", required=True)
ap.add_argument("--tag", default="")
ap.add_argument("--fail", default="false")
args = ap.parse_args()
if args.fail == "true":
    raise SystemExit(3)
out = Path(args.output_dir) / "model"
shutil.copytree(args.model, out)
with open(Path(args.output_dir).parent / "calls.txt", "a") as f:
    f.write(f"{args.tag} {args.model}\n")
