#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Debian packages, the .venv, torch==2.13.0 first, then the
# project with its pipeline, test and lerobot extras. Re-runs are a no-op until pyproject.toml or this
# script changes. Called by scripts/quickstart.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. Debian packages: libosmesa6 renders MuJoCo offscreen on the CPU; chromium is the browser the
#    report test drives (Playwright's own browser download cannot work offline).
missing=()
for pkg in libosmesa6 libgl1 chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]} with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The virtual environment, at .venv in the repo root.
python=${PYTHON:-}
if [ -z "$python" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then python=$cand; break; fi
  done
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "vla-rft needs Python 3.11"'
  "$python" -m venv .venv
fi

# 3. Packages. torch first: any other route pulls a multi-GB CUDA build. dvc[s3] before the rest,
#    then boto3 pinned to the botocore aiobotocore wants: one big install backtracks for minutes.
stamp=.venv/.vla-rft-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
  echo "setup: installing torch==2.13.0 and the project into .venv (about a minute)"
  "${pip[@]}" torch==2.13.0 2> >(grep -v "is ignored" >&2)
  "${pip[@]}" "dvc[s3]==3.67.1" 2> >(grep -v "is ignored" >&2)
  "${pip[@]}" boto3==1.43.117 -e ".[pipeline,dev,lerobot]" 2> >(grep -v "is ignored" >&2)
  # LeRobot for the interop tests: its own pins (torch<2.11, torchvision<0.26, datasets<5, hub<0.36) would
  # replace torch 2.13.0, so these go in without dependencies (the lerobot extra holds the rest) and pip's
  # report of the pins they declare is filtered out as expected. torchvision (a CUDA build on PyPI) goes
  # to .venv/lerobot-site, outside site-packages: where transformers sees it, transformers imports it and
  # fails; vla_rft.data.lerobot.prepare_lerobot_import() puts it on sys.path for LeRobot code only.
  "${pip[@]}" --no-deps lerobot==0.4.4 datasets==4.8.5 diffusers==0.35.2 \
    2> >(grep -v -e "is ignored" -e "dependency resolver" -e "^lerobot 0.4.4 requires" -e "^datasets 4.8.5 requires" >&2)
  "${pip[@]}" --no-deps --upgrade --target .venv/lerobot-site torchvision==0.28.0 2> >(grep -v "is ignored" >&2)
  echo "$want" > "$stamp"
fi
