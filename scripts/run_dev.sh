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

SCRIPT=run_dev.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"

refuse_workers_arg "the unified app" "$@"
unset WEB_CONCURRENCY # uvicorn reads it as the default worker count

enter_repo

settings=$(read_settings CHAT_PORT SHUTDOWN_GRACE_SECONDS LOG_LEVEL)
read -r chat_port grace log_level <<<"$settings"

port=${PORT:-$chat_port}
host=${HOST:-127.0.0.1}

echo "run_dev.sh: starting wordlist_generation.main:app (chat + batch) on http://$host:$port" \
    "with 1 worker, graceful shutdown ${grace}s"

exec_uvicorn wordlist_generation.main:app "$host" "$port" 1 "$grace" "$log_level" "$@"
