"""App factories: chat, batch, or both in one process.

`create_app(settings, engine=...)` builds an app around an injected engine (tests pass a tiny one);
without one, the lifespan loads the configured model in a worker thread while `/health` says
`loading`, then builds the constraint compiler, warms it up and prebuilds what the settings ask.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from . import __version__
from .auth import TokenAuthMiddleware
from .engine.base import Engine
from .http_errors import SafeJSONResponse, install_error_handlers
from .middleware import BodySizeLimitMiddleware, RequestContextMiddleware, redact_target
from .openapi import install_openapi
from .services.limiter import GenerationLimiter, WorkGate
from .services.state import ServerState
from .settings import Settings

log = logging.getLogger("wordlist_generation")

StartupHook = Callable[[FastAPI, ServerState], Any]


class _RedactTokens(logging.Filter):
    """uvicorn's own access log prints raw URLs; a secret in a query string (`?token=`, in any
    spelling: see `redact_query`) must never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_target(a) if isinstance(a, str) and "?" in a else a for a in record.args
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


def _load(state: ServerState, engine: Engine | None) -> None:
    """Blocking start-up work: model, word lists, constraint compiler and its handlers.

    Leaves `state.status` as `loading` on success (the lifespan says `ready` once the app's other
    start-up hooks, such as the batch worker, have run too) and sets `error` on failure.
    """
    s = state.settings
    t0 = time.perf_counter()
    try:
        from .constraints.wordlist import WordlistRegistry

        state.registry = WordlistRegistry(s.WORDLIST_DIR)
        # Every word list and headword file is read once (~3 s for six languages) beside the
        # model's load, never delaying `ready`: the page's first connect and the first
        # constrained request of each language find them read.
        threading.Thread(target=state.registry.summary, name="wordlists", daemon=True).start()
        if engine is None and s.ENGINE == "vllm":
            from .engine.vllm import VLLMEngine

            engine = VLLMEngine.from_settings(s)
        if engine is None:
            from .engine.hf import HFEngine
            from .engine.loader import load_model

            loaded = load_model(
                s.MODEL_NAME or None,
                gguf_file=s.MODEL_GGUF_FILE or None,
                torch_dtype=s.TORCH_DTYPE,
                device_map=s.DEVICE_MAP or None,
                trust_remote_code=s.TRUST_REMOTE_CODE,
                attn_implementation=s.ATTN_IMPLEMENTATION or None,
                cache_dir=s.MODEL_CACHE_DIR,
                served_model_id=s.SERVED_MODEL_ID or None,
                cpu_quantization=s.CPU_QUANTIZATION,
                cpu_dense_prefill=s.CPU_DENSE_PREFILL,
            )
            engine = HFEngine(
                loaded,
                torch_threads=s.TORCH_NUM_THREADS,
                max_rows=s.GENERATION_MAX_CONCURRENCY,
                prefill_chunk=s.PREFILL_CHUNK_TOKENS,
            )
        state.engine = engine
        from .constraints.compiler import ConstraintCompiler
        from .constraints.phonology import PhonologyHandler
        from .constraints.spec import PhonologicalSpec, StructuredSpec, WordlistSpec
        from .constraints.structured import StructuredHandler
        from .constraints.tokenizer import TokenizerTables
        from .constraints.wordlist import WordlistHandler, prebuild
        from .engine.loader import default_cache_dir

        tables = TokenizerTables(engine.tokenizer)
        wordlists = WordlistHandler(tables, state.registry, backend=s.CONSTRAINT_BACKEND)
        state.phonology = PhonologyHandler(
            tables,
            cache_dir=s.LEXICON_CACHE_DIR or (s.MODEL_CACHE_DIR or default_cache_dir()) / "lexicon",
            backend=s.CONSTRAINT_BACKEND,
        )
        state.compiler = ConstraintCompiler(
            s.CONSTRAINT_CACHE_SIZE, max_bytes=s.CONSTRAINT_CACHE_MB * (1 << 20)
        )
        state.compiler.register(WordlistSpec, wordlists)
        state.compiler.register(PhonologicalSpec, state.phonology)
        state.compiler.register(StructuredSpec, StructuredHandler(tables, state.compiler))
        wordlists.warmup()
        if s.PREBUILD_PREFIX:
            prebuild(state.compiler, s.PREBUILD_LANGS, s.PREBUILD_WORD_COUNTS)
        state.ready_seconds = time.perf_counter() - t0
        if s.LEXICON_PRELOAD:
            state.phonology.start_loading()  # in the background: never delays `ready`
        log.info(
            "loaded in %.1f s: model %s (%s), backend %s",
            state.ready_seconds,
            engine.model_id,
            engine.source,
            s.CONSTRAINT_BACKEND,
        )
    except Exception as exc:  # reported by /health; the process stays up to say why
        log.exception("start-up failed")
        state.error = f"{type(exc).__name__}: {exc}"
        state.status = "error"


async def in_own_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a thread of its own that ends with it (not a pooled one): loading the model
    computes on every core, and the OpenMP team a thread builds for that lives as long as the
    thread, slowing the scheduler thread's decoding for good (`engine.scheduler`)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def target() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the app stopped before start-up ended: nobody is waiting
            pass

    threading.Thread(target=target, name="start-up", daemon=True).start()
    return await future


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
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
        state.gate = WorkGate(settings.COMPILE_MAX_CONCURRENCY, settings.COMPILE_QUEUE_SIZE)
        hooks: list[StartupHook] = []
        if batch:
            from .batch import start_batch_worker

            hooks.append(start_batch_worker)
        started: list[Any] = []

        async def start() -> None:
            """Load, run the start-up hooks, and only then say `ready`: a route that would answer
            503 "starting" must never be reachable while /health says ready."""
            await in_own_thread(_load, state, engine)
            if state.status == "error":
                return
            try:
                for hook in hooks:
                    started.append(await hook(app, state))
            except Exception as exc:
                log.exception("start-up hook failed")
                state.error = f"{type(exc).__name__}: {exc}"
                state.status = "error"
                return
            state.status = "ready"
            log.info("ready")

        state.extras["startup_task"] = asyncio.create_task(start())
        try:
            yield
        finally:
            for stopper in started:
                if stopper is not None:
                    await stopper()
            await state.drain(timeout=5.0)
            if state.engine is not None:
                state.engine.close()

    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
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
        healthy = state.status != "error"
        if state.engine is not None and state.status == "ready":
            body.update(state.engine.health())
            healthy = state.engine.healthy()  # an upstream pool with none up cannot answer
        return JSONResponse(body, status_code=200 if healthy else 503)

    from .routers import models as models_router

    app.include_router(models_router.router)
    if chat:
        from .routers import chat as chat_router
        from .routers import completions as completions_router
        from .routers import score as score_router
        from .routers import web as web_router
        from .routers import words as words_router

        app.include_router(chat_router.router)
        app.include_router(completions_router.router)
        app.include_router(score_router.router)
        app.include_router(words_router.router)
        app.include_router(web_router.router)
    if batch:
        from .routers import batch as batch_router

        app.include_router(batch_router.router)

    # Outermost first: request id + log line, then auth, then the body limit.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.MAX_REQUEST_BYTES,
        prefixes=("/v1/chat", "/v1/completions", "/v1/constraints", "/v1/score", "/v1/words"),
    )
    # Uploads: a chunked body without Content-Length must not be spooled past the limit either
    # (the handlers refuse precisely, with param="file"; this is the backstop).
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.BATCH_MAX_UPLOAD_BYTES + 65_536,
        prefixes=("/v1/batch", "/v1/files"),
        param="file",
    )
    app.add_middleware(TokenAuthMiddleware, secret_token=settings.SECRET_TOKEN.get_secret_value())
    app.add_middleware(RequestContextMiddleware)
    install_openapi(app)
    return app


def create_chat_app(settings: Settings | None = None, **kwargs: Any) -> FastAPI:
    return create_app(settings, chat=True, batch=False, title="wordlist-generation chat", **kwargs)


def create_batch_app(settings: Settings | None = None, **kwargs: Any) -> FastAPI:
    return create_app(settings, chat=False, batch=True, title="wordlist-generation batch", **kwargs)
