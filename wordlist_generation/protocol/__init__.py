"""The HTTP-facing models: OpenAI requests, responses and chunks, our extensions, and the one place
where request fields become generation parameters (`ChatCompletionRequest.to_params`) and a
constraint spec (`vocabulary.constraint_spec`)."""

from .chat import (
    IGNORED_FIELDS,
    UNSUPPORTED_FIELDS,
    ChatCompletionRequest,
    ChatMessage,
    PreviewRequest,
    StreamOptions,
    TextPart,
)
from .responses import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
    completion_id,
    now,
)
from .vocabulary import constraint_spec

__all__ = [
    "IGNORED_FIELDS",
    "UNSUPPORTED_FIELDS",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "Delta",
    "ModelCard",
    "ModelList",
    "PreviewRequest",
    "ResponseMessage",
    "StreamOptions",
    "TextPart",
    "Usage",
    "completion_id",
    "constraint_spec",
    "now",
]
