#!/usr/bin/env bash
# Run the test suite against the oldest dependency versions setup.cfg declares.
#
#   bash tools/min_versions.sh            # the tests of the code that uses each dependency
#   bash tools/min_versions.sh -x tests   # or any pytest arguments
#
# Builds a throwaway virtual environment (VENV, default /tmp/panns-min-versions) with exactly
# the minimum of every runtime dependency setup.cfg declares (torch==2.6.0, numpy==1.23.2,
# soundfile, av, resampy, requests, platformdirs, filelock) and the test tools, then runs
# pytest with this checkout first on the path. pip picks the newest release of what those
# need in turn (requests 2.19.0 brings urllib3 1.23; resampy brings numba, which also passes
# at 0.57.0, the first with Python 3.11 wheels). It downloads torch from
# PyPI (several GB with its CUDA libraries on Linux), so it is not part of the default CI run.
# PYTHON picks the interpreter (default: python3); the minimums were verified with Python 3.11.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-/tmp/panns-min-versions}"
PYTHON="${PYTHON:-python3}"
TORCH_MIN="2.6.0"
NUMPY_MIN="1.23.2"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH_MIN" "numpy==$NUMPY_MIN" "soundfile==0.12.0" "av==12.0.0" \
    "resampy==0.3.1" "requests==2.19.0" "platformdirs==2.0.0" "filelock==2.0.0" pytest hypothesis
"$VENV/bin/python" -c "import torch, numpy, soundfile, av, resampy, requests, platformdirs, filelock as f
print('torch', torch.__version__, 'numpy', numpy.__version__, 'soundfile', soundfile.__version__, 'av', av.__version__,
      'resampy', resampy.__version__, 'requests', requests.__version__, 'platformdirs', platformdirs.__version__,
      'filelock', f.__version__)"

cd "$ROOT"
if [ "$#" -eq 0 ]; then
    set -- -q -p no:cacheprovider tests/test_checkpoint.py tests/test_fast.py tests/test_parity.py \
        tests/test_tagger.py tests/test_windows.py tests/test_audio.py tests/test_events.py tests/test_hub.py \
        tests/test_hostile.py tests/test_resampling.py tests/test_decoders.py tests/test_stream.py \
        tests/test_cli_outputs.py
fi
PYTHONPATH="$ROOT" "$VENV/bin/python" -m pytest "$@"
