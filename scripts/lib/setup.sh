# shellcheck shell=bash
# scripts/lib/setup.sh: the shared, idempotent set-up of ./scripts/test and ./scripts/demo.
#
#   gz_apt PKG...        apt-get install the Debian packages that are missing
#   gz_venv [EXTRAS]     .venv with the package installed editable (re-installs only when
#                        pyproject.toml or the labextension sources changed)
#
# Every step is cheap when already done, so both scripts can run it every time.

GZ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
GZ_PYTHON="${GZ_PYTHON:-$GZ_ROOT/.venv/bin/python}"
export GZ_PYTHON

_gz_step() { echo "==> $*" >&2; }

gz_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    _gz_step "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null
}

_gz_system_python() {
    # The newest python3 >= 3.11 on PATH (asyncio.timeout and TimeoutError from wait_for need it).
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    echo "python3 >= 3.11 not found" >&2
    return 1
}

gz_venv() {
    local extras="${1:-test}" stamp="$GZ_ROOT/.venv/.gleitzeit-installed" sources
    if [ ! -x "$GZ_ROOT/.venv/bin/python" ]; then
        _gz_step "creating .venv"
        if ! "$(_gz_system_python)" -m venv "$GZ_ROOT/.venv" 2>/dev/null; then
            gz_apt python3-venv
            "$(_gz_system_python)" -m venv "$GZ_ROOT/.venv"
        fi
        "$GZ_ROOT/.venv/bin/python" -m pip install -q --upgrade pip
    fi
    # Re-install when the project's metadata or the extension's sources changed.
    sources=$(cd "$GZ_ROOT" && cat pyproject.toml $(git ls-files labextension 2>/dev/null) 2>/dev/null |
        sha256sum | cut -c1-16)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sources:$extras" ] &&
        "$GZ_PYTHON" -c 'import gleitzeit_jupyter' 2>/dev/null; then
        return 0
    fi
    # Installing builds the JupyterLab extension, which needs Node.js (Debian's will do).
    command -v node >/dev/null 2>&1 || gz_apt nodejs npm
    _gz_step "installing gleitzeit-jupyter[$extras] into .venv"
    (cd "$GZ_ROOT" && "$GZ_PYTHON" -m pip install -q -e ".[$extras]")
    echo "$sources:$extras" >"$stamp"
}
