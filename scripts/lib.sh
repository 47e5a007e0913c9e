# shellcheck shell=bash
# Shared shell helpers for scripts/*. Sourced, not run.

# Where long-lived build state goes: outside the clone, so fresh clones (CI) reuse it.
# Exported: deny.toml's advisory db-path is "$SECURETEXT_CACHE/advisory-dbs".
export SECURETEXT_CACHE="${SECURETEXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/securetext}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SECURETEXT_CACHE}/target}"
VECTOR_VENV="${SECURETEXT_CACHE}/vector-venv"
# Pinned Python packages of shared/tests/vectors/verify_vectors.py.
VECTOR_REQUIREMENTS=(cryptography==50.0.2 argon2-cffi==25.1.0 argon2-cffi-bindings==26.2.0 cffi==2.1.1 pycparser==3.12 spake2==0.9)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_vector_venv() {
  local stamp="${VECTOR_VENV}/.requirements"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "${VECTOR_REQUIREMENTS[*]}" ]]; then
    return 0
  fi
  python3 -m venv "${VECTOR_VENV}"
  "${VECTOR_VENV}/bin/pip" install --quiet --disable-pip-version-check "${VECTOR_REQUIREMENTS[@]}"
  echo "${VECTOR_REQUIREMENTS[*]}" > "$stamp"
}

SCHEMATHESIS_VENV="${SECURETEXT_CACHE}/schemathesis-venv"

# The Python environment of scripts/schemathesis, exactly as pinned in its requirements file.
ensure_schemathesis_venv() {
  local requirements="scripts/schemathesis-requirements.txt" stamp="${SCHEMATHESIS_VENV}/.requirements"
  if [[ -f "$stamp" ]] && cmp -s "$stamp" "$requirements"; then
    return 0
  fi
  python3 -m venv "${SCHEMATHESIS_VENV}"
  "${SCHEMATHESIS_VENV}/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
}

# Runs a command as root, through sudo when not already root.
sudo_if_needed() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}
