#!/usr/bin/env bash
# Installs everything webllm-widget needs on a Debian machine, as root; safe to run again.
#
#   1. apt: chromium (headless WebGPU via SwiftShader) and emscripten (links TVM's wasm),
#      plus nodejs/npm when missing
#   2. js/: npm dependencies and the JS bundle (src/webllm_widget/static/)
#   3. python: this package in editable mode with its compile and test extras
#   4. the TVM web runtime (~3 min once per TVM version, cached under the user cache dir)
#
# Each step checks first and skips what is already done, saying so. When a step cannot be done
# (not root, no apt) it stops with the reason and the command to run by hand.
# Environment: PYTHON=<interpreter> to choose Python (default: .venv/bin/python if present, else python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAMPS="$ROOT/build/setup"
mkdir -p "$STAMPS"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. system packages
want=(chromium emscripten)
command -v node >/dev/null 2>&1 || want+=(nodejs)
command -v npm >/dev/null 2>&1 || want+=(npm)
command -v make >/dev/null 2>&1 || want+=(make)  # the TVM runtime build runs the wheel's Makefile
missing=()
for pkg in "${want[@]}"; do
  if command -v dpkg-query >/dev/null 2>&1 && \
     dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    continue
  fi
  missing+=("$pkg")
done
# Debian's python3 is "externally managed": pip then needs a virtual environment.
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3 || true)"; fi
fi
[[ -n "$PY" ]] || missing+=(python3)
need_venv=0
if [[ -n "$PY" ]] && "$PY" - <<'PYEOF'
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
PYEOF
then
  need_venv=1
  "$PY" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
fi

if ((${#missing[@]} == 0)); then
  say "apt: ${want[*]} already installed"
else
  cmd="apt-get update && apt-get install -y ${missing[*]}"
  command -v apt-get >/dev/null 2>&1 || \
    die "missing system packages: ${missing[*]}, and this machine has no apt-get. Install them with your package manager (Debian: $cmd)."
  [[ "$(id -u)" == 0 ]] || \
    die "missing system packages: ${missing[*]}; installing them needs root. Run as root: $cmd   (or: sudo make setup)"
  say "apt: installing ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

if ((need_venv)); then
  if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
    say "python: $PY is externally managed (PEP 668); creating $ROOT/.venv"
    "$PY" -m venv "$ROOT/.venv"
  fi
  PY="$ROOT/.venv/bin/python"
fi
say "python: $PY ($("$PY" --version 2>&1))"

# ---------------------------------------------------------------- 2. JavaScript
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
((node_major >= 18)) || \
  die "node $(node --version 2>/dev/null || echo missing) is too old: the JS build and tests (npm test: node --test) need Node 18 or newer. Install a newer nodejs (e.g. from nodejs.org or Debian 12+), then run setup again."
if [[ -f js/package.json ]]; then
  lock_hash="$(cat js/package.json js/package-lock.json 2>/dev/null | sha256sum | cut -c1-16)"
  if [[ -d js/node_modules && "$(cat "$STAMPS/npm" 2>/dev/null)" == "$lock_hash" ]]; then
    say "npm: js/node_modules up to date"
  elif [[ -f js/package-lock.json ]]; then
    say "npm: npm ci in js/"
    (cd js && npm ci --no-audit --no-fund)
    echo "$lock_hash" >"$STAMPS/npm"
  else
    say "npm: npm install in js/ (no package-lock.json)"
    (cd js && npm install --no-audit --no-fund)
    echo "$lock_hash" >"$STAMPS/npm"
  fi
  say "npm: npm run build in js/"
  (cd js && npm run build)
else
  say "npm: js/package.json does not exist yet; skipping the JS build (the widgets need it)"
fi

# ---------------------------------------------------------------- 3. Python package
py_hash="$( (cat pyproject.toml; "$PY" -c 'import sys; print(sys.executable)') | sha256sum | cut -c1-16)"
if [[ "$(cat "$STAMPS/pip" 2>/dev/null)" == "$py_hash" ]] && \
   "$PY" -c "import webllm_widget, sys; sys.exit(0 if webllm_widget.__file__.startswith('$ROOT/') else 1)" 2>/dev/null; then
  say "pip: webllm-widget[compile,test] already installed in editable mode"
else
  say "pip: pip install -e '.[compile,test]'"
  "$PY" -m pip install --disable-pip-version-check -e ".[compile,test]"
  echo "$py_hash" >"$STAMPS/pip"
fi

# ---------------------------------------------------------------- 4. TVM web runtime
say "tvm: web runtime (built once per TVM version; ~3 min the first time)"
"$PY" -m webllm_widget.compile.runtime

say "done. Check with: $PY -m webllm_widget.cli doctor"
