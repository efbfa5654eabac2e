#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Debian packages, the .venv, torch==2.13.0 first, then the
# project with its pipeline and test extras. Re-runs are a no-op until pyproject.toml or this
# script changes. Called by scripts/quickstart.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. Debian packages: libosmesa6 renders MuJoCo offscreen on the CPU.
missing=()
for pkg in libosmesa6 libgl1; do
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
  "${pip[@]}" boto3==1.43.117 -e ".[pipeline,dev]" 2> >(grep -v "is ignored" >&2)
  echo "$want" > "$stamp"
fi
