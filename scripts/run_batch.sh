#!/usr/bin/env bash
# Start the batch service (/v1/batch/jobs, /v1/files, /v1/batches) in exactly one worker.
#
# The job registry and the worker loop live in one process, so this service never runs more than
# one uvicorn worker: UVICORN_WORKERS (or WEB_CONCURRENCY) larger than 1 is ignored with a message,
# and a --workers argument is refused.
#
# Environment (a `.env` in the repository root is read too, through the settings model):
#   PORT   listening port; default BATCH_PORT from the settings (8011). Prefer setting BATCH_PORT:
#          scripts/render_nginx.py reads that one, so nginx cannot drift.
#   HOST   listening address; default 127.0.0.1 (nginx in front, see nginx/README.md)
#   SHUTDOWN_GRACE_SECONDS, LOG_LEVEL, BATCH_* ... : see .env.example
# Extra arguments are passed to uvicorn unchanged.
#
# On SIGTERM the worker loop stops at once and abandons the batch of items in flight; those items
# are generated again on the next start (a job's results are only ever appended for finished
# items). HTTP requests in flight (uploads, downloads) get up to SHUTDOWN_GRACE_SECONDS.
set -euo pipefail

die() {
    echo "run_batch.sh: $*" >&2
    exit 2
}

cd "$(dirname "$0")/.."

for arg in "$@"; do
    case $arg in
    --workers | --workers=*) die "the batch service runs exactly one worker; drop '$arg'" ;;
    esac
done
for var in UVICORN_WORKERS WEB_CONCURRENCY; do
    if [[ -n ${!var:-} && ${!var} != 1 ]]; then
        echo "run_batch.sh: ignoring $var=${!var}: the batch service keeps its job registry" \
            "in one process and always runs exactly one worker" >&2
    fi
done
unset WEB_CONCURRENCY # uvicorn reads it as the default worker count

if ! command -v uvicorn >/dev/null; then
    [[ -x .venv/bin/uvicorn ]] || die "uvicorn not found on PATH; run 'make setup' (or 'make run')"
    PATH="$PWD/.venv/bin:$PATH"
fi

# Values the settings model resolves from the environment and .env, so that the port and the
# grace period here are the ones nginx was rendered with.
settings=$(python -c 'import sys; from wordlist_generation.settings import Settings; s = Settings()
print(*(getattr(s, name) for name in sys.argv[1:]))' \
    BATCH_PORT SHUTDOWN_GRACE_SECONDS LOG_LEVEL BATCH_JOB_DIR) ||
    die "could not read the settings (see the error above)"
read -r batch_port grace log_level job_dir <<<"$settings"

port=${PORT:-$batch_port}
host=${HOST:-127.0.0.1}

echo "run_batch.sh: starting wordlist_generation.app_batch:app on http://$host:$port" \
    "with 1 worker, jobs in $job_dir, graceful shutdown ${grace}s"

# --no-access-log: the app writes its own access line, with any ?token= redacted.
exec uvicorn wordlist_generation.app_batch:app \
    --host "$host" --port "$port" --workers 1 \
    --timeout-graceful-shutdown "$grace" \
    --log-level "${log_level,,}" --no-access-log \
    "$@"
