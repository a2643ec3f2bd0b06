"""One settings model for every process, read from the environment and `.env`.

Every field is documented here and in `.env.example` (a test keeps the two in step).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_TOKEN = "changeme"
REPO_ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)


class Environment(StrEnum):
    development = "development"
    production = "production"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvStrings = Annotated[list[str], NoDecode]
CsvInts = Annotated[list[int], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- service ---
    ENVIRONMENT: Environment = Field(
        Environment.development, description="`production` refuses the placeholder SECRET_TOKEN."
    )
    SECRET_TOKEN: SecretStr = Field(
        SecretStr(PLACEHOLDER_TOKEN),
        description="Bearer token every /v1 route requires (header or ?token=).",
    )
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    CHAT_PORT: int = Field(8010, description="Port of the chat service (scripts and nginx).")
    BATCH_PORT: int = Field(8011, description="Port of the batch service (scripts and nginx).")
    MAX_REQUEST_BYTES: int = Field(
        1_048_576, ge=1024, description="Largest accepted JSON request body on chat routes."
    )
    SHUTDOWN_GRACE_SECONDS: int = Field(
        60, ge=0, description="On SIGTERM, how long in-flight chat requests may take to finish."
    )

    # --- model ---
    MODEL_NAME: str = Field(
        "", description="HF repo id or local path; empty = embedded SmolLM2-135M-Instruct."
    )
    MODEL_GGUF_FILE: str = Field("", description="GGUF file name inside MODEL_NAME (optional).")
    SERVED_MODEL_ID: str = Field(
        "", description="Model id shown in /v1/models; empty = derived from the model."
    )
    MODEL_ALIASES: CsvStrings = Field(
        default_factory=list, description="Other `model` values accepted for the served model."
    )
    TORCH_DTYPE: str = Field("float32", description="float32, bfloat16, float16 or auto.")
    DEVICE_MAP: str = Field("", description="transformers device_map (e.g. `auto`, `cuda`).")
    TRUST_REMOTE_CODE: bool = Field(False, description="Allow model code from the repo.")
    ATTN_IMPLEMENTATION: str = Field("", description="eager, sdpa, flash_attention_2 or empty.")
    MODEL_CACHE_DIR: Path | None = Field(
        None,
        description="Where converted GGUF models are cached; default ~/.cache/wordlist-generation.",
    )
    TORCH_NUM_THREADS: int = Field(
        0, ge=0, description="torch intra-op threads per process; 0 = torch's default."
    )
    CPU_QUANTIZATION: Literal["auto", "none", "int8", "int4"] = Field(
        "auto",
        description="Weights of a model on the CPU: int4 or int8 kernels, none (TORCH_DTYPE as "
        "loaded), or auto: int4 for the embedded model (its weights are 4-bit already), none for "
        "any other. Never applied on a GPU.",
    )
    CPU_DENSE_PREFILL: bool = Field(
        True,
        description="With CPU_QUANTIZATION int4 or int8: keep the quantized projections also "
        "dequantized to fp32 (the same weights; 425 MB more per worker for the embedded model, "
        "whose int4 tensors take 199 MiB) and read prompt passes of 32 tokens or more (every "
        "chunk of a prompt that long) through fp32 GEMM: 1.0-1.3x the int4 kernels' speed at 32 "
        "tokens, 1.5x at 64, 2.0-2.2x from 512 on 2 AVX2 cores. Decoding steps always use the "
        "kernels. false saves the memory.",
    )

    # --- engine ---
    ENGINE: Literal["hf", "vllm"] = Field(
        "hf",
        description="hf: the model runs in this process (transformers); vllm: this server is a "
        "gateway to the vLLM OpenAI servers of VLLM_URLS, which decode under the grammars it "
        "compiles (no beam search there).",
    )
    VLLM_URLS: CsvStrings = Field(
        default_factory=list,
        description="ENGINE=vllm: comma-separated base URLs of the vLLM servers (the pool).",
    )
    VLLM_API_KEY: SecretStr = Field(
        SecretStr(""), description="ENGINE=vllm: the upstreams' --api-key (empty = none)."
    )
    VLLM_MODEL: str = Field(
        "",
        description="ENGINE=vllm: the model name the upstreams serve; empty = the first one "
        "their /v1/models lists.",
    )
    VLLM_TOKENIZER: str = Field(
        "",
        description="ENGINE=vllm: local directory of the served model's tokenizer; empty = "
        "VLLM_MODEL, or the upstream's model path (`root` in /v1/models), when it is a local "
        "directory.",
    )
    VLLM_CONNECT_TIMEOUT_SECONDS: float = Field(
        5.0, gt=0, description="ENGINE=vllm: connecting to an upstream (then the next is tried)."
    )
    VLLM_READ_TIMEOUT_SECONDS: float = Field(
        120.0,
        gt=0,
        description="ENGINE=vllm: longest wait for an upstream's next token (the first "
        "included); beyond it 504.",
    )
    VLLM_HEALTH_INTERVAL_SECONDS: float = Field(
        10.0,
        gt=0,
        description="ENGINE=vllm: how often each upstream's /health and /v1/models are checked "
        "(a server taken out is retried at this pace).",
    )

    # --- generation limits ---
    MAX_INPUT_TOKENS: int = Field(4096, ge=1, description="Longer prompts get 400.")
    ALLOWED_MAX_NEW_TOKENS: int = Field(1024, ge=1, description="Upper bound for max_tokens.")
    DEFAULT_MAX_NEW_TOKENS: int = Field(512, ge=1, description="max_tokens when none is sent.")
    DEFAULT_NUM_BEAMS: int = Field(10, ge=1, description="Beams when temperature is 0/unset.")
    MAX_NUM_BEAMS: int = Field(10, ge=1, description="Largest accepted num_beams.")
    MAX_N: int = Field(8, ge=1, description="Largest accepted n (choices).")
    MAX_WORK_TOKENS: int = Field(
        65_536, ge=1, description="Cap on n x num_beams x max_tokens for one request."
    )
    MAX_DRAFTS: int = Field(
        8, ge=1, description="Largest accepted drafts (candidates per returned choice)."
    )
    DRAFT_TEMPERATURE: float = Field(
        0.5,
        gt=0,
        le=2,
        description="Temperature of the sampled drafts of a greedy request (drafts > 1).",
    )
    GENERATION_MAX_CONCURRENCY: int = Field(
        16,
        ge=1,
        description="Rows (sequences: n x drafts per request, beams for beam search) decoded "
        "together in one process.",
    )
    GENERATION_QUEUE_SIZE: int = Field(
        32, ge=0, description="Requests that may wait for rows; beyond that 429."
    )
    PREFILL_CHUNK_TOKENS: int = Field(
        128, ge=1, description="Prompt tokens read per step while other rows are decoding."
    )
    STREAM_KEEPALIVE_SECONDS: float = Field(
        5.0, gt=0, description="SSE comment interval while nothing can be sent (beam search)."
    )

    # --- constraints ---
    WORDLIST_DIR: Path = Field(
        REPO_ROOT / "wordlists", description="Directory of <lang>.txt lists."
    )
    CONSTRAINT_BACKEND: Literal["llguidance", "lm-format-enforcer"] = Field("llguidance")
    CONSTRAINT_CACHE_SIZE: int = Field(32, ge=1, description="Compiled constraints kept (LRU).")
    CONSTRAINT_CACHE_MB: int = Field(
        1024,
        ge=1,
        description="Private memory the cached constraints may hold, in MiB (LRU, with "
        "CONSTRAINT_CACHE_SIZE); a 50,000-word list weighs about 150 MiB.",
    )
    COMPILE_MAX_CONCURRENCY: int = Field(
        2, ge=1, description="Constraint compilations and previews running at once."
    )
    COMPILE_QUEUE_SIZE: int = Field(
        8, ge=0, description="Compilations and previews that may wait for a turn; beyond that 429."
    )
    CONSTRAINT_PROMPT_HINT: bool = Field(
        True, description="Tell the model about the vocabulary restriction in a system message."
    )
    CONSTRAINED_REPETITION_PENALTY: float = Field(
        1.2,
        gt=0,
        le=10,
        description="repetition_penalty of constrained requests that send none (1.0 = off).",
    )
    PREBUILD_PREFIX: bool = Field(False, description="Compile PREBUILD_* constraints at start-up.")
    PREBUILD_LANGS: CsvStrings = Field(default_factory=lambda: ["es", "en"])
    PREBUILD_WORD_COUNTS: CsvInts = Field(default_factory=lambda: [1000, 3000])
    LEXICON_CACHE_DIR: Path | None = Field(
        None, description="Where the pronunciation lexicon parquet is cached."
    )
    LEXICON_PRELOAD: bool = Field(
        True, description="Load the lexicon in the background at start (else on first use)."
    )

    # --- batch service ---
    BATCH_JOB_DIR: Path = Field(REPO_ROOT / "var" / "jobs", description="Job records and results.")
    BATCH_JOB_TEMP_DIR: Path = Field(REPO_ROOT / "var" / "uploads", description="Uploaded files.")
    BATCH_MAX_UPLOAD_BYTES: int = Field(10_485_760, ge=1024, description="Largest upload.")
    BATCH_MAX_ITEMS: int = Field(1000, ge=1, description="Most items in one job.")
    BATCH_JOB_PIPELINE_SIZE: int = Field(8, ge=1, description="Items generated per batch.")
    BATCH_RESULT_TTL_HOURS: float = Field(72, gt=0, description="Retention of job results.")
    BATCH_DEFAULT_MAX_TOKENS: int = Field(512, ge=1, description="Job-wide max_tokens default.")
    BATCH_DEFAULT_NUM_BEAMS: int = Field(10, ge=1, description="Job-wide num_beams default.")

    @field_validator(
        "MODEL_ALIASES", "PREBUILD_LANGS", "PREBUILD_WORD_COUNTS", "VLLM_URLS", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.ENVIRONMENT == Environment.production and self.uses_placeholder_token:
            raise ValueError(
                "SECRET_TOKEN is the placeholder 'changeme'; set a real secret in production"
            )
        if self.DEFAULT_MAX_NEW_TOKENS > self.ALLOWED_MAX_NEW_TOKENS:
            raise ValueError("DEFAULT_MAX_NEW_TOKENS must not exceed ALLOWED_MAX_NEW_TOKENS")
        if self.DEFAULT_NUM_BEAMS > self.MAX_NUM_BEAMS:
            raise ValueError("DEFAULT_NUM_BEAMS must not exceed MAX_NUM_BEAMS")
        if self.ENGINE == "vllm":
            self._check_vllm()
        return self

    def _check_vllm(self) -> None:
        """vLLM has no beam search under a grammar: greedy is the default there, and a beam
        default set on purpose is a configuration error, not something to drop silently."""
        if not self.VLLM_URLS:
            raise ValueError("ENGINE=vllm needs VLLM_URLS (the vLLM servers' base URLs)")
        for url in self.VLLM_URLS:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"VLLM_URLS: {url!r} is not an http(s) URL")
        for name in ("DEFAULT_NUM_BEAMS", "BATCH_DEFAULT_NUM_BEAMS"):
            if name not in self.model_fields_set:
                setattr(self, name, 1)
            elif getattr(self, name) > 1:
                raise ValueError(f"ENGINE=vllm decodes without beams: {name} must be 1")

    @property
    def uses_placeholder_token(self) -> bool:
        return self.SECRET_TOKEN.get_secret_value() == PLACEHOLDER_TOKEN

    def warn_if_insecure(self) -> None:
        if self.uses_placeholder_token:
            log.warning(
                "!!! SECRET_TOKEN is the placeholder %r: anyone can use this server. "
                "Set SECRET_TOKEN (refused when ENVIRONMENT=production). !!!",
                PLACEHOLDER_TOKEN,
            )
