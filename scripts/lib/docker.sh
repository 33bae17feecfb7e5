# shellcheck shell=bash
# scripts/lib/docker.sh: a real Docker engine for tests and demos, sourced by ./scripts/test
# and ./scripts/demo. Machines here (and CI) have no engine running and no registry, so we
# install Debian's docker.io when missing, start dockerd ourselves, and build the sandbox
# image locally. We stop only an engine that we started.
#
# Functions (all return non-zero on failure, print progress to stderr):
#   gz_docker_install              apt-get install docker.io debootstrap when dockerd/debootstrap are missing
#   gz_docker_ping [HOST]          true when an engine answers at HOST (default: $DOCKER_HOST or the local socket)
#   gz_docker_start                start dockerd in the background unless an engine answers; waits for the socket
#   gz_docker_stop                 stop the dockerd that gz_docker_start started in this shell (no-op
#                                  otherwise); trap-able
#   gz_docker_start_extra NAME [ARGS...]
#                                  start a second dockerd on its own socket and data root (extra
#                                  dockerd ARGS passed on); echoes its DOCKER_HOST
#   gz_docker_start_runsc [NAME]   install gVisor (runsc) when missing and start a second engine
#                                  with it registered as runtime "runsc"; echoes its DOCKER_HOST
#   gz_docker_stop_extra NAME      stop that second engine (only if gz_docker_start_extra started it;
#                                  may be called from another shell, e.g. a test's teardown)
#   gz_docker_image [--minimal]    build the sandbox image via `gleitzeit-sandbox image build` (cached
#                                  by the kernel's numpy/pandas/pyarrow/matplotlib versions)
#   gz_docker_copy_image HOST [IMAGE]
#                                  copy IMAGE (default both sandbox images) from the main engine to
#                                  HOST, unless HOST has that very image already
#   gz_docker_cleanup_containers   remove containers labelled gleitzeit.sandbox=1
#   gz_docker_up                   install + start + both images (default and --minimal), in one call
#
# Typical use:
#   source scripts/lib/docker.sh
#   trap gz_docker_stop EXIT
#   gz_docker_up
#
# Variables: GZ_DOCKER_STATE (default /tmp/gleitzeit-docker) holds logs and pid files;
# GZ_PYTHON (default .venv/bin/python or python3) runs the image-build CLI.

GZ_DOCKER_STATE="${GZ_DOCKER_STATE:-/tmp/gleitzeit-docker}"
GZ_DOCKER_SOCKET="${GZ_DOCKER_SOCKET:-/var/run/docker.sock}"

_gz_log() { echo "[docker.sh] $*" >&2; }

_gz_sudo() {
    # Root in CI containers and here; elsewhere use sudo when it is available.
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi
}

gz_docker_install() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    _gz_log "installing ${missing[*]}"
    _gz_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        _gz_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            docker.io debootstrap >/dev/null
}

gz_docker_ping() {
    local host="${1:-${DOCKER_HOST:-unix://$GZ_DOCKER_SOCKET}}"
    DOCKER_HOST="$host" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# _gz_dockerd_launch NAME SOCKET DATA_ROOT EXEC_ROOT PIDFILE [extra dockerd args...]
_gz_dockerd_launch() {
    local name="$1" socket="$2" data_root="$3" exec_root="$4" pidfile="$5"
    shift 5
    mkdir -p "$GZ_DOCKER_STATE"
    local log="$GZ_DOCKER_STATE/$name.log"
    _gz_log "starting dockerd ($name) on unix://$socket, log $log"
    # setsid: the engine must survive the shell's job control and not get our terminal's signals.
    # shellcheck disable=SC2086  # GZ_DOCKERD_WRAP is a command prefix, split on purpose
    _gz_sudo setsid ${GZ_DOCKERD_WRAP:-} dockerd --host "unix://$socket" --data-root "$data_root" \
        --exec-root "$exec_root" --pidfile "$pidfile" "$@" >"$log" 2>&1 </dev/null &
    echo $! >"$GZ_DOCKER_STATE/$name.launcher"
    local i
    for i in $(seq 1 60); do
        if [ -S "$socket" ] && gz_docker_ping "unix://$socket"; then
            echo started >"$GZ_DOCKER_STATE/$name.ours"
            # Remembered in this shell too: only the shell that started the main engine may
            # stop it (another ./scripts/test running meanwhile must leave it alone).
            eval "_GZ_STARTED_$name=1"
            return 0
        fi
        sleep 1
    done
    _gz_log "dockerd ($name) did not answer within 60 s; last log lines:"
    tail -n 20 "$log" >&2
    return 1
}

_gz_dockerd_stop() {
    local name="$1" pidfile="$2"
    [ -f "$GZ_DOCKER_STATE/$name.ours" ] || return 0
    local pid=""
    # (|| true: these files may be gone, and callers run under set -e)
    [ -f "$pidfile" ] && pid="$(cat "$pidfile" 2>/dev/null || true)"
    [ -n "$pid" ] || pid="$(cat "$GZ_DOCKER_STATE/$name.launcher" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        _gz_log "stopping dockerd ($name, pid $pid)"
        _gz_sudo kill -TERM "$pid"
        local i
        for i in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        kill -0 "$pid" 2>/dev/null && _gz_sudo kill -KILL "$pid"
    fi
    rm -f "$GZ_DOCKER_STATE/$name.ours" "$GZ_DOCKER_STATE/$name.launcher"
}

gz_docker_start() {
    if gz_docker_ping; then
        _gz_log "a docker engine already answers; using it"
        return 0
    fi
    if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != "unix://$GZ_DOCKER_SOCKET" ]; then
        _gz_log "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local engine for it"
        return 1
    fi
    command -v dockerd >/dev/null || { _gz_log "dockerd missing: run gz_docker_install"; return 1; }
    _gz_dockerd_launch main "$GZ_DOCKER_SOCKET" /var/lib/docker /var/run/docker \
        /var/run/docker.pid
}

gz_docker_stop() {
    [ "${_GZ_STARTED_main:-}" = 1 ] || return 0
    _gz_dockerd_stop main /var/run/docker.pid
    _GZ_STARTED_main=
}

gz_docker_start_extra() {
    local name="${1:-extra}"
    shift || true
    local base="$GZ_DOCKER_STATE/engine-$name"
    local socket="$base/docker.sock"
    mkdir -p "$base"
    if gz_docker_ping "unix://$socket"; then
        echo "unix://$socket"
        return 0
    fi
    # Its own network namespace: a second dockerd in ours would fight the main engine over
    # docker0 and iptables (and --bridge=none would even delete docker0).
    GZ_DOCKERD_WRAP="unshare --net" _gz_dockerd_launch "$name" "$socket" "$base/data" \
        "$base/exec" "$base/docker.pid" "$@" || return 1
    echo "unix://$socket"
}

gz_docker_start_runsc() {
    local name="${1:-gzrunsc}"
    if ! command -v runsc >/dev/null 2>&1; then
        _gz_log "installing runsc (gVisor)"
        _gz_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            _gz_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null ||
            return 1
    fi
    mkdir -p "$GZ_DOCKER_STATE"
    local config="$GZ_DOCKER_STATE/daemon-$name.json"
    printf '{"runtimes": {"runsc": {"path": "%s", "runtimeArgs": ["--network=none"]}}}\n' \
        "$(command -v runsc)" >"$config"
    gz_docker_start_extra "$name" --config-file "$config"
}

gz_docker_stop_extra() {
    local name="${1:-extra}"
    _gz_dockerd_stop "$name" "$GZ_DOCKER_STATE/engine-$name/docker.pid"
}

_gz_python() {
    if [ -n "${GZ_PYTHON:-}" ]; then echo "$GZ_PYTHON"
    elif [ -x .venv/bin/python ]; then echo .venv/bin/python
    else echo python3; fi
}

gz_docker_image() {
    # Cached: the CLI returns at once when the image exists and holds this kernel's data stack
    # (its label records a hash of the versions); it rebuilds only when they changed.
    local py
    py="$(_gz_python)"
    "$py" -m gleitzeit_jupyter.providers.sandbox.cli image build "$@"
}

gz_docker_copy_image() {
    # Copied when missing there or different (the image is rebuilt when the kernel's data
    # stack changes, so an older copy under the same name must be replaced). Without IMAGE:
    # both variants (the hostile tests use the minimal one too).
    if [ $# -lt 2 ]; then
        gz_docker_copy_image "$1" gleitzeit-sandbox:latest || return 1
        if docker image inspect gleitzeit-sandbox:minimal >/dev/null 2>&1; then
            gz_docker_copy_image "$1" gleitzeit-sandbox:minimal || return 1
        fi
        return 0
    fi
    local host="$1" image="$2" here there
    here="$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
    there="$(DOCKER_HOST="$host" docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
    if [ -n "$there" ] && [ "$there" = "$here" ]; then
        return 0
    fi
    _gz_log "copying $image to $host"
    docker save "$image" | DOCKER_HOST="$host" docker load >/dev/null
}

gz_docker_cleanup_containers() {
    local ids
    ids="$(docker ps -aq --filter label=gleitzeit.sandbox=1 2>/dev/null || true)"
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
}

gz_docker_up() {
    # Both variants: the several-engines test copies the small minimal image to its second
    # engine (no registry to pull from); everything else uses the default one.
    gz_docker_install && gz_docker_start && gz_docker_image && gz_docker_image --minimal
}
