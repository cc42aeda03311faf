#!/usr/bin/env bash
# Downloads into .whl/ the pure-Python wheels that scripts/gpu_check.py needs on the lent GPU machine,
# whose image has torch, transformers and safetensors but not tyro (imported by remix.config) and has no
# package registry. The versions are the ones this project's .venv resolved. typing_extensions travels too:
# typeguard 4.6 needs its Sentinel (>= 4.14) and tyro 1.0 its TypeForm, which the image's copy may lack
# (gpu_check.py's preflight names what is missing). See scripts/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 typing-extensions==4.16.0
ls -l .whl
