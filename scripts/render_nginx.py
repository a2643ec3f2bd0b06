"""Render the nginx site config from the settings the services run with.

The ports and body limits come from `wordlist_generation.settings.Settings` (environment and
`.env`), exactly as `scripts/run_chat.sh` and `scripts/run_batch.sh` read them, so nginx and the
services cannot disagree. Two shapes:

* default: the site file for nginx's `http` context (`/etc/nginx/sites-available/...`);
* `--standalone --prefix DIR`: a complete nginx.conf (DIR/nginx.conf unless `-o` says otherwise)
  whose pid file, logs and temp files all lie in DIR, to run nginx without touching /etc (tests,
  one-off runs):
  `nginx -p DIR -e DIR/error.log -c DIR/nginx.conf -g 'daemon off;'`.

Usage:
    python scripts/render_nginx.py -o /etc/nginx/sites-available/wordlist-generation
    python scripts/render_nginx.py --chat-server 10.0.0.12:8010 --chat-server 10.0.0.13:8010 ...
    python scripts/render_nginx.py --standalone --prefix /tmp/wg-nginx --listen 127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from wordlist_generation.settings import Settings  # noqa: E402

TEMPLATE = REPO_ROOT / "nginx" / "wordlist-generation.conf.template"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Z_]+)\s*\}\}")
#: Room for the multipart envelope (boundaries, part headers) around an upload of the largest
#: accepted size, so the service, not nginx, decides about a file near the limit. The batch
#: router allows the same margin (`routers.batch.MULTIPART_OVERHEAD`; a test keeps them equal).
MULTIPART_MARGIN_BYTES = 65_536
DEFAULT_ACCESS_LOG = "/var/log/nginx/wordlist-generation.access.log"
#: A chat server that fails 3 times within 30 s is left out of the pool for 30 s.
CHAT_SERVER_OPTIONS = " max_fails=3 fail_timeout=30s"

STANDALONE = """\
# A complete nginx.conf around the wordlist-generation site, written by scripts/render_nginx.py.
# Every file nginx writes lies under {prefix}; run it with
#   nginx -p {prefix} -e {prefix}/error.log -c {conf} -g 'daemon off;'
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;

events {{
    worker_connections 256;
}}

http {{
    default_type application/octet-stream;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;

{site}}}
"""


def template_values(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    """Every placeholder of the template, from the settings and the command line."""
    return {
        "BATCH_PORT": str(settings.BATCH_PORT),
        "UPSTREAM_HOST": args.upstream_host,
        "CHAT_SERVERS": "\n".join(
            f"    server {address}{CHAT_SERVER_OPTIONS};"
            for address in [f"{args.upstream_host}:{settings.CHAT_PORT}", *args.chat_server]
        ),
        "LISTEN": args.listen,
        "SERVER_NAME": args.server_name,
        "ACCESS_LOG": args.access_log,
        "MAX_REQUEST_BYTES": str(settings.MAX_REQUEST_BYTES),
        "BATCH_MAX_UPLOAD_BYTES": str(settings.BATCH_MAX_UPLOAD_BYTES),
        "UPLOAD_BODY_BYTES": str(settings.BATCH_MAX_UPLOAD_BYTES + MULTIPART_MARGIN_BYTES),
        "READ_TIMEOUT": str(args.read_timeout),
    }


def render(template: str, values: dict[str, str]) -> str:
    """Fill `{{NAME}}` placeholders; an unknown or unused name is an error, never left behind."""
    used: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"the template uses {{{{{name}}}}}, which has no value")
        used.add(name)
        return values[name]

    text = PLACEHOLDER.sub(fill, template)
    unused = set(values) - used
    if unused:
        raise ValueError(f"values never used by the template: {', '.join(sorted(unused))}")
    return text


def standalone(site: str, prefix: Path, conf: Path) -> str:
    """Wrap the site into a complete nginx.conf that writes only under `prefix`."""
    user = ""
    if os.geteuid() == 0:
        # Workers would otherwise drop to `nobody`, who cannot write into a private temp dir.
        name = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        user = f"user {name} {group};\n"
    indented = "".join(f"    {line}" if line.strip() else line for line in site.splitlines(True))
    return STANDALONE.format(prefix=prefix, conf=conf, user=user, site=indented)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument("--listen", default="80", help="nginx `listen` value (default: 80)")
    parser.add_argument("--server-name", default="_", help="nginx `server_name` (default: _)")
    parser.add_argument(
        "--upstream-host",
        default="127.0.0.1",
        help="address of the chat and batch services (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--chat-server",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="another chat host for the upstream pool (repeat for each)",
    )
    parser.add_argument(
        "--read-timeout",
        type=int,
        default=600,
        help="seconds nginx waits for the next bytes of an answer (default: 600)",
    )
    parser.add_argument("--access-log", help=f"access log path (default: {DEFAULT_ACCESS_LOG})")
    parser.add_argument(
        "--standalone", action="store_true", help="write a complete nginx.conf (needs --prefix)"
    )
    parser.add_argument("--prefix", type=Path, help="directory for pid, logs and temp files")
    args = parser.parse_args(argv)
    if args.standalone and args.prefix is None:
        parser.error("--standalone needs --prefix")
    if args.prefix is not None:
        args.prefix = args.prefix.resolve()
    if args.access_log is None:
        args.access_log = str(args.prefix / "access.log") if args.standalone else DEFAULT_ACCESS_LOG
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    site = render(TEMPLATE.read_text(encoding="utf-8"), template_values(Settings(), args))
    text = site
    if args.standalone:
        (args.prefix / "temp").mkdir(parents=True, exist_ok=True)  # nginx makes only the leaves
        args.output = (args.output or args.prefix / "nginx.conf").resolve()
        text = standalone(site, args.prefix, args.output)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"render_nginx.py: wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
