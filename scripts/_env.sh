# Shared by scripts/serve and scripts/test: a project virtualenv with the package installed.
# Sourced, not run. Honours PYTHON (default python3) and VENV (default .venv in the repo).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV" || {
            echo "error: cannot create a virtualenv; install python3-venv (apt-get install -y python3-venv)" >&2
            exit 1
        }
    fi
    local stamp="$VENV/.installed-$extras"
    # The page's browser libraries, bundled from frontend/ (npm) by the package build (setup.py).
    local vendor="$ROOT/src/piping_server/pages/static/vendor"
    # reinstall only when pyproject.toml or the frontend changed since the last install, or the bundles are gone
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/frontend/package-lock.json" -nt "$stamp" ] \
        || [ ! -f "$vendor/novnc.js" ] || [ ! -f "$vendor/openpgp.js" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT$extras"
        touch "$stamp"
    fi
    if [ ! -f "$vendor/novnc.js" ] || [ ! -f "$vendor/openpgp.js" ]; then
        echo "error: the install did not bundle the web page's libraries into $vendor (see frontend/ and setup.py)" >&2
        exit 1
    fi
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "error: need root (or sudo) to run: $*" >&2; exit 1
    fi
}

# apt_ensure PACKAGE... : install the Debian packages that are not installed yet
apt_ensure() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
