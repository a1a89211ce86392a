# Shared by scripts/serve and scripts/test: a project virtualenv with the package installed.
# Sourced, not run. Honours PYTHON (default python3) and VENV (default .venv in the repo).
# Each set-up step prints one line ("==> ...") before it runs, so a first run never looks stuck.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# step WHAT...: name the set-up step about to run
step() {
    echo "==> $*" >&2
}

# The page's browser libraries, bundled from frontend/ (npm) into this folder (see setup.py).
VENDOR="$ROOT/src/piping_server/pages/static/vendor"

# bundles_stale: whether the page's bundles are missing or older than their sources in frontend/
# (the build writes versions.json after every bundle: it dates the whole build)
bundles_stale() {
    [ -f "$VENDOR/novnc.js" ] && [ -f "$VENDOR/openpgp.js" ] && [ -f "$VENDOR/ssh.js" ] \
        && [ -f "$VENDOR/versions.json" ] || return 0
    [ -d "$ROOT/frontend" ] || return 1
    [ -n "$(find "$ROOT/frontend/package.json" "$ROOT/frontend/package-lock.json" "$ROOT/frontend/build.mjs" \
        "$ROOT/frontend/src" -newer "$VENDOR/versions.json" -print -quit 2>/dev/null)" ]
}

ensure_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        step "creating the virtualenv $VENV"
        "$PYTHON" -m venv "$VENV" || {
            echo "error: cannot create a virtualenv; install python3-venv (apt-get install -y python3-venv)" >&2
            exit 1
        }
    fi
    local stamp="$VENV/.installed-$extras"
    if bundles_stale; then
        # done here rather than inside pip's build, whose output --quiet hides for a minute
        step "building the web page's bundles (npm ci && npm run build in frontend/)"
        (cd "$ROOT/frontend" && npm ci --no-audit --no-fund && npm run --silent build)
    fi
    # reinstall only when the packaging changed since the last install (the bundles are rebuilt above)
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ]; then
        step "upgrading pip in $VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        step "installing piping-server${extras:+ with $extras} and its dependencies into $VENV (editable)"
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT$extras"
        touch "$stamp"
    fi
    # the transfer path is compiled by mypyc at install (setup.py): an edited source makes the package
    # run every compiled module from source (src/piping_server/_compiled.py) until it is compiled again
    if "$VENV/bin/python" -c 'import sys, piping_server._compiled as c; sys.exit(0 if c.needs_rebuild() else 1)' 2>/dev/null; then
        step "compiling the transfer path again (mypyc): one of its sources changed"
        "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT"
    fi
    if [ ! -f "$VENDOR/novnc.js" ] || [ ! -f "$VENDOR/openpgp.js" ] || [ ! -f "$VENDOR/ssh.js" ]; then
        echo "error: the install did not bundle the web page's libraries into $VENDOR (see frontend/ and setup.py)" >&2
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
        # another apt (automatic updates on a fresh machine) may hold the lock: wait for it, up to 10 minutes
        local wait_lock=(-o DPkg::Lock::Timeout=600)
        step "updating the Debian package lists (apt-get update)"
        as_root apt-get "${wait_lock[@]}" update
        step "installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y \
            "${missing[@]}"
    fi
}
