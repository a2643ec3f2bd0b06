"""What the serving benchmarks share (scripts/bench_serving.py over HTTP, scripts/bench_gpu.py
in-process): the prompts (one topic per client, a long answer asked for, in English or Spanish)
and the percentile they report."""

TOPICS = [
    "a lighthouse keeper and a storm",
    "a girl who finds a lost dog",
    "a baker who wakes up before the sun",
    "two friends on a long train journey",
    "a boy learning to swim in the sea",
    "a small village during a snowy winter",
    "an old man and his garden",
    "a family moving to a new city",
]
PROMPTS = {
    "unconstrained": "Write a long story about {topic}. Use many paragraphs.",
    "es3000": "Escribe una historia larga sobre {topic}. Usa muchos párrafos.",
}


#: A version number at the end of a prompt, so that no two prompts of a run are equal: the server
#: starts a prompt its prefix cache holds whole without reading it, so a repeated prompt would be
#: measured without its prefill.
VERSION = {"unconstrained": " This is version {k}.", "es3000": " Es la versión {k}."}


def prompt_text(vocab: str, i: int, version: int = 0) -> str:
    """Client `i`'s prompt (one topic each); `version` > 0 ends it with that version number."""
    text = PROMPTS[vocab].format(topic=TOPICS[i % len(TOPICS)])
    return text + VERSION[vocab].format(k=version) if version else text


def pct(values: list[float], q: float) -> float | None:
    """The `q`-th percentile of `values` (nearest rank), None when there are none."""
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]
