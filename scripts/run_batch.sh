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

SCRIPT=run_batch.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"

refuse_workers_arg "the batch service" "$@"
for var in UVICORN_WORKERS WEB_CONCURRENCY; do
    if [[ -n ${!var:-} && ${!var} != 1 ]]; then
        echo "run_batch.sh: ignoring $var=${!var}: the batch service keeps its job registry" \
            "in one process and always runs exactly one worker" >&2
    fi
done
unset WEB_CONCURRENCY # uvicorn reads it as the default worker count

enter_repo

settings=$(read_settings BATCH_PORT SHUTDOWN_GRACE_SECONDS LOG_LEVEL BATCH_JOB_DIR)
read -r batch_port grace log_level job_dir <<<"$settings"

port=${PORT:-$batch_port}
host=${HOST:-127.0.0.1}

echo "run_batch.sh: starting wordlist_generation.app_batch:app on http://$host:$port" \
    "with 1 worker, jobs in $job_dir, graceful shutdown ${grace}s"

exec_uvicorn wordlist_generation.app_batch:app "$host" "$port" 1 "$grace" "$log_level" "$@"
