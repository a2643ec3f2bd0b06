#!/usr/bin/env bash
# Start chat and batch routes in one process for local development (`make run`).
#
# One worker only: the batch job registry lives in the process. Production runs the two services
# apart (scripts/run_chat.sh, scripts/run_batch.sh) behind nginx; see nginx/README.md.
#
# Environment (a `.env` in the repository root is read too, through the settings model):
#   PORT   listening port; default CHAT_PORT from the settings (8010)
#   HOST   listening address; default 127.0.0.1
#   SHUTDOWN_GRACE_SECONDS, LOG_LEVEL, ... : see .env.example
# Extra arguments are passed to uvicorn unchanged (for example --reload).
set -euo pipefail

die() {
    echo "run_dev.sh: $*" >&2
    exit 2
}

cd "$(dirname "$0")/.."

for arg in "$@"; do
    case $arg in
    --workers | --workers=*) die "the unified app runs exactly one worker; drop '$arg'" ;;
    esac
done
unset WEB_CONCURRENCY # uvicorn reads it as the default worker count

if ! command -v uvicorn >/dev/null; then
    [[ -x .venv/bin/uvicorn ]] || die "uvicorn not found on PATH; run 'make setup' (or 'make run')"
    PATH="$PWD/.venv/bin:$PATH"
fi

settings=$(python -c 'import sys; from wordlist_generation.settings import Settings; s = Settings()
print(*(getattr(s, name) for name in sys.argv[1:]))' \
    CHAT_PORT SHUTDOWN_GRACE_SECONDS LOG_LEVEL) ||
    die "could not read the settings (see the error above)"
read -r chat_port grace log_level <<<"$settings"

port=${PORT:-$chat_port}
host=${HOST:-127.0.0.1}

echo "run_dev.sh: starting wordlist_generation.main:app (chat + batch) on http://$host:$port" \
    "with 1 worker, graceful shutdown ${grace}s"

# --no-access-log: the app writes its own access line, with any ?token= redacted.
exec uvicorn wordlist_generation.main:app \
    --host "$host" --port "$port" --workers 1 \
    --timeout-graceful-shutdown "$grace" \
    --log-level "${log_level,,}" --no-access-log \
    "$@"
