"""App factories: chat, batch, or both in one process.

`create_app(settings, engine=...)` builds an app around an injected engine (tests pass a tiny one);
without one, the lifespan loads the configured model in a worker thread while `/health` says
`loading`, then builds the constraint compiler, warms it up and prebuilds what the settings ask.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from . import __version__
from .auth import TokenAuthMiddleware
from .http_errors import install_error_handlers
from .middleware import BodySizeLimitMiddleware, RequestContextMiddleware, redact_query
from .serving import GenerationLimiter, ServerState
from .settings import Settings

log = logging.getLogger("wordlist_generation")

StartupHook = Callable[[FastAPI, ServerState], Any]


class _RedactTokens(logging.Filter):
    """uvicorn's own access log prints raw URLs; a `?token=` there must never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_query(a) if isinstance(a, str) and "token=" in a else a for a in record.args
            )
        return True


def configure_logging(level: str) -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactTokens) for f in access.filters):
        access.addFilter(_RedactTokens())
    root = logging.getLogger("wordlist_generation")
    root.setLevel(level)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.propagate = False


def _load(state: ServerState, engine: Any | None) -> None:
    """Blocking start-up work: model, word lists, constraint compiler. Sets `state.status`."""
    from .engine.generation import Engine
    from .engine.loader import load_model

    s = state.settings
    t0 = time.perf_counter()
    try:
        if engine is None:
            loaded = load_model(
                s.MODEL_NAME or None,
                gguf_file=s.MODEL_GGUF_FILE or None,
                torch_dtype=s.TORCH_DTYPE,
                device_map=s.DEVICE_MAP or None,
                trust_remote_code=s.TRUST_REMOTE_CODE,
                attn_implementation=s.ATTN_IMPLEMENTATION or None,
                cache_dir=s.MODEL_CACHE_DIR,
                served_model_id=s.SERVED_MODEL_ID or None,
            )
            engine = Engine(loaded, torch_threads=s.TORCH_NUM_THREADS)
        state.engine = engine
        from .constraints.backends import ConstraintCompiler
        from .constraints.wordlist import WordlistRegistry

        state.registry = WordlistRegistry(s.WORDLIST_DIR)
        state.compiler = ConstraintCompiler(
            engine.tokenizer,
            state.registry,
            backend=s.CONSTRAINT_BACKEND,
            cache_size=s.CONSTRAINT_CACHE_SIZE,
        )
        state.compiler.warmup()
        if s.PREBUILD_PREFIX:
            state.compiler.prebuild(s.PREBUILD_LANGS, s.PREBUILD_WORD_COUNTS)
        from .engine.loader import default_cache_dir
        from .phonology import PhonologyService

        state.phonology = PhonologyService(
            engine.tokenizer,
            state.compiler.tables.ll,
            cache_dir=s.LEXICON_CACHE_DIR or (s.MODEL_CACHE_DIR or default_cache_dir()) / "lexicon",
            cache_size=s.CONSTRAINT_CACHE_SIZE,
        )
        state.ready_seconds = time.perf_counter() - t0
        state.status = "ready"
        state.phonology.start_loading()  # in the background: never delays `ready`
        log.info(
            "ready in %.1f s: model %s (%s), backend %s",
            state.ready_seconds,
            engine.model_id,
            engine.source,
            s.CONSTRAINT_BACKEND,
        )
    except Exception as exc:  # reported by /health; the process stays up to say why
        log.exception("start-up failed")
        state.error = f"{type(exc).__name__}: {exc}"
        state.status = "error"


def create_app(
    settings: Settings | None = None,
    *,
    engine: Any | None = None,
    chat: bool = True,
    batch: bool = True,
    title: str = "wordlist-generation",
) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.LOG_LEVEL)
    settings.warn_if_insecure()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state: ServerState = app.state.server
        state.limiter = GenerationLimiter(
            settings.GENERATION_MAX_CONCURRENCY, settings.GENERATION_QUEUE_SIZE
        )
        state.executor = ThreadPoolExecutor(
            max_workers=settings.GENERATION_MAX_CONCURRENCY, thread_name_prefix="generate"
        )
        loading = asyncio.create_task(asyncio.to_thread(_load, state, engine))
        hooks: list[Any] = []
        if batch:
            from .jobs import start_batch_worker

            hooks.append(start_batch_worker)
        started: list[Any] = []

        async def after_load() -> None:
            await loading
            if state.status == "ready":
                for hook in hooks:
                    started.append(await hook(app, state))

        state.extras["startup_task"] = asyncio.create_task(after_load())
        try:
            yield
        finally:
            for stopper in started:
                if stopper is not None:
                    await stopper()
            await state.drain(timeout=5.0)
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=title, version=__version__, lifespan=lifespan)
    app.state.server = ServerState(settings=settings)
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> JSONResponse:
        state: ServerState = app.state.server
        body = {
            "status": state.status,
            "model": state.engine.model_id if state.engine and state.status == "ready" else None,
            "ready_seconds": round(state.ready_seconds, 2) if state.ready_seconds else None,
            "error": state.error,
        }
        if state.limiter is not None:
            body.update(running=state.limiter.running, waiting=state.limiter.waiting)
        return JSONResponse(body, status_code=200 if state.status != "error" else 503)

    from .routers import models as models_router

    app.include_router(models_router.router)
    if chat:
        from .routers import chat as chat_router

        app.include_router(chat_router.router)
    if batch:
        from .routers import batch as batch_router

        app.include_router(batch_router.router)

    # Outermost first: request id + log line, then auth, then the body limit.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.MAX_REQUEST_BYTES,
        prefixes=("/v1/chat", "/v1/constraints"),
    )
    # Uploads: a chunked body without Content-Length must not be spooled past the limit either
    # (the handlers refuse precisely, with param="file"; this is the backstop).
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.BATCH_MAX_UPLOAD_BYTES + 65_536,
        prefixes=("/v1/batch", "/v1/files"),
    )
    app.add_middleware(TokenAuthMiddleware, secret_token=settings.SECRET_TOKEN.get_secret_value())
    app.add_middleware(RequestContextMiddleware)
    return app


def create_chat_app(settings: Settings | None = None, **kwargs: Any) -> FastAPI:
    return create_app(settings, chat=True, batch=False, title="wordlist-generation chat", **kwargs)


def create_batch_app(settings: Settings | None = None, **kwargs: Any) -> FastAPI:
    return create_app(settings, chat=False, batch=True, title="wordlist-generation batch", **kwargs)
