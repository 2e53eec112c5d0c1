"""The one LLM client: any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, LM Studio).

Configuration: settings `llm_base_url`, `llm_model`, `llm_timeout_s`, `llm_max_retries`,
`llm_max_side`, `llm_concurrency` (SKINFLOW_LLM_*). The API key comes only from the environment
(SKINFLOW_LLM_API_KEY, else OPENAI_API_KEY) or a secret file (SKINFLOW_LLM_API_KEY_FILE); it is
never stored in the database and is redacted from every error message.

Retries are ours, not the SDK's (it is created with max_retries=0), so that every attempt is
counted and the rules are explicit: 429 waits for Retry-After (seconds or an HTTP date) when the
server sends it, else exponential backoff with full jitter; 5xx, timeouts and connection errors
back off the same way; other errors fail at once. Servers that reject `response_format` (400)
are asked again without it, and the JSON is then extracted from the text.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from openai._constants import RAW_RESPONSE_HEADER
from PIL import Image as PILImage

from curation.errors import ConfigError
from curation.store.secrets import read_secret, redact
from curation.store.settings import Settings
from schema.errors import SkinflowError
from schema.files import loads_bounded

NO_KEY = "not-needed"  # local servers (vLLM, Ollama) accept any key; the SDK insists on one
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 120.0


class LLMError(SkinflowError):
    """A request failed for good (after retries, or at once for errors that retrying cannot fix)."""


def api_key(environ: dict[str, str] | None = None) -> str:
    return read_secret("SKINFLOW_LLM_API_KEY", environ) or read_secret("OPENAI_API_KEY", environ) or NO_KEY


@dataclass(frozen=True)
class LLMConfig:
    model: str
    base_url: str | None
    key: str = field(repr=False)
    timeout_s: float = 60.0
    max_retries: int = 4
    max_side: int = 1024
    concurrency: int = 8
    max_reply_chars: int = 200_000

    @classmethod
    def from_settings(cls, settings: Settings, model: str | None = None, environ: dict[str, str] | None = None) -> LLMConfig:
        model = model or settings.llm_model
        if not model:
            raise ConfigError(
                "no model: set SKINFLOW_LLM_MODEL (and SKINFLOW_LLM_BASE_URL for a non-OpenAI server) or pass --model"
            )
        return cls(
            model=model,
            base_url=settings.llm_base_url,
            key=api_key(environ),
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            max_side=settings.llm_max_side,
            concurrency=settings.llm_concurrency,
            max_reply_chars=settings.llm_max_reply_chars,
        )


def make_client(config: LLMConfig) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=config.base_url, api_key=config.key, timeout=config.timeout_s, max_retries=0)


def image_data_url(path: Path, max_side: int) -> str:
    """The image as a base64 data URL, its longer side at most max_side pixels. Stored images are
    clean JPEG or PNG already, so one that is small enough is sent as it is (no re-encoding)."""
    with PILImage.open(path) as img:
        if max(img.size) <= max_side and img.format in ("JPEG", "PNG") and img.mode in ("RGB", "L"):
            mime = "image/jpeg" if img.format == "JPEG" else "image/png"
            return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        img = img.convert("RGB")
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side), PILImage.LANCZOS)
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def retry_after_seconds(response) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_MAX_S)
    except ValueError:
        pass
    moment = email.utils.parsedate_to_datetime(value)
    return None if moment is None else min(max(moment.timestamp() - time.time(), 0.0), RETRY_AFTER_MAX_S)


def backoff_seconds(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, base * 2^attempt], capped."""
    return rng.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    structured: bool = True


def _is_response_format_rejection(error: openai.BadRequestError) -> bool:
    message = str(error).lower()
    return any(word in message for word in ("response_format", "json_schema", "structured", "guided"))


async def with_retries(
    call: Callable[[], Awaitable[Any]],
    config: LLMConfig,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[Any, int]:
    """(result, attempts) of `call`, retried on 429, 5xx, timeouts and connection errors."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(), attempt
        except openai.RateLimitError as e:
            reason, delay = "HTTP 429 (rate limited)", retry_after_seconds(e.response)
        except openai.InternalServerError as e:
            reason, delay = f"HTTP {e.status_code} (server error)", None
        except openai.APITimeoutError:
            reason, delay = f"timed out after {config.timeout_s:g} s", None
        except openai.APIConnectionError:
            reason, delay = "could not connect to the server", None
        except openai.BadRequestError:
            raise  # the caller decides (a server without structured output answers 400)
        except openai.APIStatusError as e:
            raise LLMError(redact(f"HTTP {e.status_code}: {e.message}", config.key)) from None
        if attempt > config.max_retries:
            raise LLMError(f"{reason}; gave up after {attempt} attempts")
        await sleep(delay if delay is not None else backoff_seconds(attempt - 1, rng))


async def chat(
    client: openai.AsyncOpenAI,
    config: LLMConfig,
    messages: list[dict],
    *,
    json_schema: dict | None,
    schema_name: str,
    rng: random.Random,
    structured: list[bool] | None = None,
) -> Reply:
    """One chat completion. `structured` is a one-element list shared by a run: once a server rejects
    response_format, later requests do not ask for it again."""
    structured = structured if structured is not None else [json_schema is not None]

    async def call(use_schema: bool):
        body: dict[str, Any] = {"model": config.model, "messages": messages, "temperature": 0}
        if use_schema and json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": json_schema, "strict": True},
            }
        # The SDK's low-level post: the same HTTP handling and typed errors as chat.completions.create, but
        # without re-walking the typed parameters (the schema and a base64 image) and building pydantic
        # response models on every call: together about 4 ms of CPU per request, which capped drafting
        # throughput on a small machine (benchmarks/drafting.py). The reply is read with json.loads.
        # streamed (the raw-response header): the body is read here, up to a cap, not whole into memory first
        return await client.post(
            "/chat/completions", body=body, cast_to=httpx.Response, options={"headers": {RAW_RESPONSE_HEADER: "stream"}}
        )

    try:
        response, attempts = await with_retries(lambda: call(structured[0]), config, rng)
    except openai.BadRequestError as e:
        if not (structured[0] and _is_response_format_rejection(e)):
            raise LLMError(redact(f"HTTP 400: {e.message}", config.key)) from None
        structured[0] = False  # this server has no structured output: ask for JSON in the text instead
        try:
            response, attempts = await with_retries(lambda: call(False), config, rng)
        except openai.BadRequestError as again:
            raise LLMError(redact(f"HTTP 400: {again.message}", config.key)) from None
    body = await read_capped(response, reply_byte_limit(config))
    try:
        payload = loads_bounded(body.decode("utf-8"))  # depth-checked: a nested body is bad input, not a crash
        choices = payload.get("choices") or [{}]
        text = ((choices[0] or {}).get("message") or {}).get("content") or ""
        usage = payload.get("usage")
        usage = usage if isinstance(usage, dict) else {}  # the counts are for the report: never worth the reply
        tokens = (_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))
    except (ValueError, AttributeError, TypeError, IndexError, KeyError):
        raise LLMError("the server's answer is not a chat completion (not JSON of the expected shape)") from None
    if not isinstance(text, str):
        raise LLMError("the server's answer has no text content")
    return Reply(text=text, prompt_tokens=tokens[0], completion_tokens=tokens[1], attempts=attempts, structured=structured[0])


def reply_byte_limit(config: LLMConfig) -> int:
    """The most bytes of an answer read: the reply cap in characters, each escaped as \\uXXXX at worst, plus the
    envelope. Checked while reading: a 400 MB body read whole before the cap is looked at costs 1.1 GB of memory."""
    return config.max_reply_chars * 6 + 64 * 1024


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed response, refused (and the connection closed) once it passes `limit` bytes."""
    chunks, size = [], 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise LLMError(f"the server's answer is over {limit:,} bytes (llm_max_reply_chars); not read further")
            chunks.append(chunk)
    except httpx.HTTPError as e:
        raise LLMError(f"the server's answer broke off: {type(e).__name__}") from None
    finally:
        await response.aclose()
    return b"".join(chunks)


def _count(value: Any) -> int:
    """A token count from the answer's usage, or 0 for anything that is not a plain count (a string, inf, a bool,
    a 400-digit number: each crashed the run once)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return int(value) if 0 <= value < 2**53 else 0


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """The JSON object in a reply: the whole text, a fenced block, or the first balanced {...}."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start = text.find("{")
    if start >= 0:
        depth, in_string, escape = 0, False, False
        for index in range(start, len(text)):
            char = text[index]
            if in_string:
                escape = (char == "\\") and not escape
                if char == '"' and not escape:
                    in_string = False
                continue
            if char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    candidates.append(text[start : index + 1])
                    break
    for candidate in candidates:
        try:
            return loads_bounded(candidate)
        except ValueError:  # not JSON, or nested deeper than any reply we asked for (a hostile reply)
            continue
    raise ValueError("the reply contains no complete JSON object (or one nested implausibly deep)")


@dataclass
class Outcome:
    """What happened to one item of `ask_each`: a reply, or the reason there is none."""

    item: Any
    reply: Reply | None
    error: str | None


async def ask_each(
    config: LLMConfig,
    items: list,
    prepare: Callable[[Any], list[dict]],
    on_outcome: Callable[[Outcome], Awaitable[None]],
    *,
    concurrency: int,
    json_schema: dict | None = None,
    schema_name: str = "reply",
    executor=None,
) -> bool:
    """One chat request per item, at most `concurrency` in flight. `prepare(item)` builds the messages
    and runs on `executor` (it reads and encodes an image); `on_outcome` is awaited for each item as it
    finishes. Returns whether structured output stayed on for the whole run."""
    client = make_client(config)
    gate = asyncio.Semaphore(max(1, concurrency))
    structured = [json_schema is not None]
    loop = asyncio.get_running_loop()

    async def one(index: int, item: Any) -> None:
        async with gate:
            try:
                messages = await loop.run_in_executor(executor, prepare, item)
                outcome = Outcome(
                    item,
                    await chat(
                        client,
                        config,
                        messages,
                        json_schema=json_schema,
                        schema_name=schema_name,
                        rng=random.Random(index),
                        structured=structured,
                    ),
                    None,
                )
            except LLMError as e:
                outcome = Outcome(item, None, str(e))
            except OSError as e:
                outcome = Outcome(item, None, f"cannot read the image file: {e}")
            except Exception as e:  # noqa: BLE001 - one hostile answer fails its item, with the reason; the run goes on
                outcome = Outcome(item, None, f"the server's answer could not be read ({type(e).__name__})")
        await on_outcome(outcome)

    try:
        await asyncio.gather(*(one(index, item) for index, item in enumerate(items)))
    finally:
        await client.close()
    return structured[0]


async def connection_test(config: LLMConfig) -> str:
    """A one-line answer from the server, or LLMError saying what is wrong (for the drafting page)."""
    client = make_client(config)
    try:
        reply = await chat(
            client,
            config,
            [{"role": "user", "content": "Reply with the single word: ok"}],
            json_schema=None,
            schema_name="ping",
            rng=random.Random(0),
        )
    finally:
        await client.close()
    return reply.text.strip()[:200]
