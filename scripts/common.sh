# Shared by scripts/run_*.sh (sourced, not executed). The caller sets SCRIPT to its own name.
# shellcheck shell=bash

die() {
    echo "${SCRIPT:-run}: $*" >&2
    exit 2
}

# Run from the repository root, with uvicorn on PATH (the project's .venv when it is not).
enter_repo() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || die "cannot enter the repository"
    if ! command -v uvicorn >/dev/null; then
        [[ -x .venv/bin/uvicorn ]] || die "uvicorn not found on PATH; run 'make setup' (or 'make run')"
        PATH="$PWD/.venv/bin:$PATH"
    fi
}

# Refuse a --workers argument: the caller's service runs exactly one worker.
refuse_workers_arg() {
    local what=$1
    shift
    for arg in "$@"; do
        case $arg in
        --workers | --workers=*) die "$what runs exactly one worker; drop '$arg'" ;;
        esac
    done
}

# Print the named settings as the settings model resolves them from the environment and .env,
# so that ports and the grace period here are the ones nginx was rendered with.
read_settings() {
    python -c 'import sys; from wordlist_generation.settings import Settings; s = Settings()
print(*(getattr(s, name) for name in sys.argv[1:]))' "$@" ||
        die "could not read the settings (see the error above)"
}

# Connections: an idle keep-alive connection is closed after 5 s (nginx's upstream pool closes its
# own after 4 s, so it never reuses one being closed), and one worker holds at most 1024
# connections and requests at once (beyond, uvicorn answers 503 at once). uvicorn has no timeout
# for a request whose headers never finish: nginx in front bounds those (nginx/README.md).
readonly UVICORN_KEEP_ALIVE_SECONDS=5
readonly UVICORN_MAX_CONNECTIONS=1024

# exec uvicorn for APP on HOST:PORT with WORKERS workers, GRACE seconds of graceful shutdown and
# LOG_LEVEL; further arguments go to uvicorn unchanged. --no-access-log: the app writes its own
# access line, with any ?token= redacted.
exec_uvicorn() {
    local app=$1 host=$2 port=$3 workers=$4 grace=$5 log_level=$6
    shift 6
    exec uvicorn "$app" \
        --host "$host" --port "$port" --workers "$workers" \
        --timeout-graceful-shutdown "$grace" \
        --timeout-keep-alive "$UVICORN_KEEP_ALIVE_SECONDS" \
        --limit-concurrency "$UVICORN_MAX_CONNECTIONS" \
        --log-level "${log_level,,}" --no-access-log \
        "$@"
}
