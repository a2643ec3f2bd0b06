"""The static page served at `/` (see `routers/web.py`): HTML, CSS and small ES modules, shipped as
package data, with no build step."""
