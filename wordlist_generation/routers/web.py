"""The page for teachers and clinicians: `/` and its static files under `/web/`.

Plain files shipped in the package (`wordlist_generation/web/`): no build step, nothing from a
CDN. Neither path needs the token (only `/v1` does); the page keeps the token in the browser
session and sends it as a bearer header on every `/v1` call. The page may only load its own
scripts and styles and talk to its own origin (Content-Security-Policy).
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ..errors import NotFound

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

#: Served names: one flat folder, so a name can never reach outside it.
ASSET_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|css|js|svg|png)$")
MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
}
HEADERS = {
    # Revalidate every time (ETag / Last-Modified): an upgraded server never runs a stale page.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_HEADERS = HEADERS | {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
}


def _file(name: str, headers: dict[str, str]) -> FileResponse:
    match = ASSET_RE.match(name)
    path = WEB_DIR / name
    if match is None or not path.is_file():
        raise NotFound(f"no such file: /web/{name}")
    return FileResponse(path, media_type=MEDIA_TYPES[match.group(1)], headers=headers)


@router.get("/")
async def page() -> FileResponse:
    return _file("index.html", PAGE_HEADERS)


@router.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    return _file(name, HEADERS)
