#!/usr/bin/env bash
# Start the chat service (/v1/chat/completions, /v1/models, /v1/wordlists) with several workers.
#
# Environment (a `.env` in the repository root is read too, through the settings model):
#   PORT             listening port; default CHAT_PORT from the settings (8010). Prefer setting
#                    CHAT_PORT: scripts/render_nginx.py reads that one, so nginx cannot drift.
#   HOST             listening address; default 127.0.0.1 (nginx in front, see nginx/README.md)
#   UVICORN_WORKERS  worker processes; default 2. Each worker loads its own copy of the model and
#                    prebuilds its own constraints: size it with nginx/README.md ("Workers").
#   SHUTDOWN_GRACE_SECONDS, LOG_LEVEL, TORCH_NUM_THREADS, ... : see .env.example
# Extra arguments are passed to uvicorn unchanged.
#
# On SIGTERM uvicorn stops accepting connections and lets in-flight requests (streams included)
# finish for up to SHUTDOWN_GRACE_SECONDS before cancelling them. SIGHUP replaces the workers one
# at a time (a rolling restart; see nginx/README.md).
set -euo pipefail

readonly DEFAULT_WORKERS=2

SCRIPT=run_chat.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"

enter_repo

settings=$(read_settings CHAT_PORT SHUTDOWN_GRACE_SECONDS LOG_LEVEL TORCH_NUM_THREADS)
read -r chat_port grace log_level torch_threads <<<"$settings"

port=${PORT:-$chat_port}
host=${HOST:-127.0.0.1}
workers=${UVICORN_WORKERS:-$DEFAULT_WORKERS}
[[ $workers =~ ^[1-9][0-9]*$ ]] || die "UVICORN_WORKERS must be a positive integer, got '$workers'"

if ((workers > 1 && torch_threads == 0)); then
    echo "run_chat.sh: note: TORCH_NUM_THREADS=0 lets each of the $workers workers use every core;" \
        "set it to about cores / (workers + 1) (see nginx/README.md)" >&2
fi

echo "run_chat.sh: starting wordlist_generation.app_chat:app on http://$host:$port" \
    "with $workers worker(s), graceful shutdown ${grace}s, torch threads ${torch_threads} (0 = all)"

exec_uvicorn wordlist_generation.app_chat:app "$host" "$port" "$workers" "$grace" "$log_level" "$@"
