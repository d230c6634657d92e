"""Answers written by a model, behind the prompt firewall, with a safe fallback.

The only module that imports llama-index's LLM types. Any ``llama_index.core.llms.LLM``
can answer; :func:`openai_compatible` makes one for an OpenAI-compatible chat-completions
endpoint (OpenAI, vLLM, Ollama, LM Studio...). The model sees only a prompt built by
:mod:`runbook_rag.prompting` from entitled passages, and what it returns is text for a
human: it is parsed as JSON, every cited number must be a block of the prompt and match
the ``[n]`` markers of the text, the text is redacted, and links, images and HTML the
rule of :mod:`runbook_rag.links` does not allow are removed. An invalid reply is retried
once with the validation error; a second invalid reply, a timeout, or an unreachable or
failing model gives the offline extractive answer instead, with the reason
(``invalid_output``, or ``unsafe_links`` when links survived sanitising).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from . import tracing
from .access import entitle
from .answer import ABSTAIN_TEXT, extractive_answer
from .errors import ConfigError
from .grounding import ground, passage_commands
from .links import UnsafeMarkdown, safe_markdown
from .prompting import Prompt, build_prompt
from .records import Answer, Citation, Hit, Principal, Usage
from .redaction import redact
from .screening import screen

if TYPE_CHECKING:
    from .settings import LLMSettings

log = logging.getLogger("runbook_rag")

MAX_PASSAGES = 5
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.IGNORECASE)
_MARKER = re.compile(r"\[(\d{1,3})\]")


class Reply(BaseModel):
    """The structured reply a model must give."""

    answer: str = Field(min_length=1, max_length=8000)
    citations: list[int] = Field(default_factory=list, max_length=20)
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)


class InvalidReply(ValueError):
    """A model's reply broke the contract (the message is fed back to it once).

    ``reason`` is the fallback reason if no valid reply follows; ``check`` names the check
    that refused it (``format``, ``citation``: a number that is no block of the prompt,
    ``markers``, ``links`` or ``instructions``).
    """

    def __init__(self, message: str, *, check: str, reason: str = "invalid_output") -> None:
        super().__init__(message)
        self.reason = reason
        self.check = check


@dataclass(frozen=True, slots=True)
class LLMPolicy:
    """How a model is called and its replies checked."""

    timeout: float = 30.0
    retries: int = 2
    backoff: float = 0.5
    link_hosts: frozenset[str] = frozenset()
    prices: dict[str, dict[str, float]] = field(default_factory=dict)


def policy_of(settings: LLMSettings) -> LLMPolicy:
    """How calls and replies are governed, from the ``llm`` settings."""
    return LLMPolicy(
        timeout=settings.timeout,
        retries=settings.retries,
        link_hosts=frozenset(h.lower() for h in settings.link_hosts),
        prices=dict(settings.prices or {}),
    )


def configured_llm(settings: LLMSettings) -> Any:
    """The model the settings name (an OpenAI-compatible endpoint), or None when none is set."""
    if not settings.base_url:
        return None
    if not settings.model:
        raise ConfigError("llm_base_url is set but no llm_model (RUNBOOK_RAG_LLM_MODEL / --llm-model)")
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return openai_compatible(
        base_url=settings.base_url, model=settings.model, api_key=key, timeout=settings.timeout
    )


def openai_compatible(*, base_url: str, model: str, api_key: str | None, timeout: float) -> Any:
    """A llama-index LLM for an OpenAI-compatible chat-completions endpoint."""
    try:
        from llama_index.llms.openai_like import OpenAILike
    except ImportError as exc:
        raise ConfigError(
            f"answering with a model needs llama-index ({exc.name} is missing): "
            "pip install 'runbook-rag[llm]'"
        ) from None
    return OpenAILike(
        model=model,
        api_base=base_url,
        api_key=api_key or "not-needed",
        is_chat_model=True,
        timeout=timeout,
        max_retries=0,  # retries are ours: bounded, with backoff, then the fallback
        temperature=0.0,
        context_window=8192,
        reuse_client=False,  # a client per call: nothing left open between questions
    )


def llm_answer(
    question: str,
    hits: Sequence[Hit],
    *,
    principal: Principal,
    llm: Any,
    policy: LLMPolicy,
    abstain_below: float,
    retrieve_ms: float,
) -> Answer:
    """An answer written by ``llm`` from ``hits`` (already access-checked, best first)."""
    stages = {"retrieve": retrieve_ms}
    started = time.perf_counter()
    with tracing.span("prompt") as span:
        extractive = extractive_answer(question, hits, abstain_below=abstain_below)
        if extractive.abstained:  # nothing relevant: the model is not asked
            stages["prompt"] = _ms(started)
            span.set_attribute("runbook_rag.abstained", True)
            return replace(extractive, usage=Usage(stages, model=_model_name(llm)))
        passages = entitle(principal, [h for h in hits if _evidence(h) >= abstain_below][:MAX_PASSAGES])
        prompt = build_prompt(question, passages, principal=principal)
        span.set_attribute("runbook_rag.passages", len(passages))
    stages["prompt"] = _ms(started)
    messages = [_message("system", prompt.system), _message("user", prompt.user)]
    reported: tuple[int, int] | None = None  # tokens the endpoint reported, summed over calls
    calls = 0
    rejected: list[str] = []
    stages["llm"] = stages["validate"] = 0.0
    reason = "invalid_output"
    for _ in range(2):
        started = time.perf_counter()
        model = _model_name(llm)
        chat_span = tracing.span(
            f"chat {model or ''}".strip(),
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
            },
            kind="client",
        )
        try:
            with chat_span as span:
                content, counts, about = _chat(llm, messages, policy)
                span.set_attributes(
                    {
                        "gen_ai.response.model": about.get("model"),
                        "gen_ai.response.finish_reasons": about.get("finish_reasons"),
                        "gen_ai.usage.input_tokens": counts[0] if counts else None,
                        "gen_ai.usage.output_tokens": counts[1] if counts else None,
                    }
                )
        except _Unavailable as exc:
            reason = exc.reason
            stages["llm"] += _ms(started)
            break
        stages["llm"] += _ms(started)
        calls += 1
        if counts:
            before = reported or (0, 0)
            reported = (before[0] + counts[0], before[1] + counts[1])
        started = time.perf_counter()
        try:
            with tracing.span("validate") as span:
                answer = _validated(content, prompt, policy)
                span.set_attribute("runbook_rag.ungrounded_commands", len(answer.ungrounded))
        except InvalidReply as exc:
            stages["validate"] += _ms(started)
            reason = exc.reason
            rejected.append(exc.check)
            log.warning("the model's reply was invalid (%s)%s", exc, "; asking again" if calls == 1 else "")
            messages += [
                _message("assistant", redact(content[:4000]).text),
                _message(
                    "user", f"Your reply was invalid: {exc}. Reply again with one JSON object as instructed."
                ),
            ]
            continue
        stages["validate"] += _ms(started)
        usage = _usage(llm, stages, reported, calls, policy, rejected, fallback=False)
        return replace(answer, usage=usage)
    log.warning("answering without the model: %s", reason)
    usage = _usage(llm, stages, reported, calls, policy, rejected, fallback=True)
    return replace(extractive, fallback_reason=reason, usage=usage)


class _Unavailable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = reason  # what a trace records: timeout or llm_error


def _chat(
    llm: Any, messages: list[Any], policy: LLMPolicy
) -> tuple[str, tuple[int, int] | None, dict[str, Any]]:
    """One reply, with a timeout and bounded retries with backoff on errors; its token counts
    when the endpoint reported them, and the responding model and finish reasons."""
    for attempt in range(policy.retries + 1):
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(llm.chat, messages)
        try:
            response = future.result(timeout=policy.timeout)
            content = str(response.message.content or "")
            extra = dict(getattr(response, "additional_kwargs", None) or {})
            prompt_tokens, completion_tokens = extra.get("prompt_tokens"), extra.get("completion_tokens")
            counts = (
                (int(prompt_tokens), int(completion_tokens))
                if prompt_tokens is not None and (completion_tokens is not None)
                else None
            )
        except concurrent.futures.TimeoutError:
            raise _Unavailable("timeout") from None
        except Exception as exc:  # any failure of the model or its transport means: fall back
            log.warning("the model call failed (%s), attempt %d", type(exc).__name__, attempt + 1)
            if attempt == policy.retries:
                raise _Unavailable("llm_error") from None
            time.sleep(policy.backoff * 2**attempt)
            continue
        finally:
            pool.shutdown(wait=False)
        return content, counts, _about(response)
    raise _Unavailable("llm_error")  # pragma: no cover - the loop always returns or raises


def _about(response: Any) -> dict[str, Any]:
    """The responding model and the finish reasons of a chat response, where it says them."""
    raw = getattr(response, "raw", None)
    get = raw.get if isinstance(raw, dict) else lambda key, default=None: getattr(raw, key, default)
    choices = get("choices", None) or []
    reasons = []
    for choice in choices:
        reason = (
            choice.get("finish_reason")
            if isinstance(choice, dict)
            else getattr(choice, "finish_reason", None)
        )
        if reason:
            reasons.append(str(reason))
    model = get("model", None)
    return {"model": str(model) if model else None, "finish_reasons": reasons or None}


def _validated(content: str, prompt: Prompt, policy: LLMPolicy) -> Answer:
    try:
        reply = Reply.model_validate(json.loads(_FENCE.sub("", content.strip())))
    except (json.JSONDecodeError, ValidationError) as exc:
        problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "not a JSON object"
        raise InvalidReply(
            f"the reply is not the JSON object asked for ({problem})", check="format"
        ) from None
    cited = sorted(set(reply.citations))
    unknown = [n for n in cited if n not in prompt.numbers]
    if unknown:
        raise InvalidReply(f"citation {unknown[0]} is not the number of an excerpt", check="citation")
    markers = sorted({int(n) for n in _MARKER.findall(reply.answer)})
    if markers != cited:
        check = "markers" if set(markers) <= prompt.numbers else "citation"
        raise InvalidReply(
            f"the [n] markers in the answer {markers} do not match its citations {cited}", check=check
        )
    sources = [url for n in cited if (url := prompt.passages[n - 1].hit.url)]
    try:
        text = safe_markdown(redact(reply.answer).text, link_hosts=policy.link_hosts, source_urls=sources)
    except UnsafeMarkdown as exc:
        raise InvalidReply(
            f"links, images or HTML that are not allowed remain in the answer ({exc}); "
            "write it without links, images or HTML, with commands in ``` fenced code blocks",
            check="links",
            reason="unsafe_links",
        ) from None
    if screen(text) is not None:
        raise InvalidReply(
            "the answer carries instructions aimed at a model, not an answer for a human",
            check="instructions",
        )
    if not cited:
        return Answer(text=ABSTAIN_TEXT, abstained=True, mode="llm")
    citations = []
    for n in cited:
        hit = prompt.passages[n - 1].hit
        citations.append(
            Citation(
                n,
                hit.chunk_id,
                hit.source,
                hit.title,
                hit.heading,
                hit.start_line,
                hit.end_line,
                hit.url,
                passage_commands(hit, hit.start_line, hit.end_line),
            )
        )
    # A command the model wrote must be one of a passage it cites; others are removed.
    text, commands = ground(text, [(n, prompt.passages[n - 1].hit) for n in cited])
    return Answer(text=text, abstained=False, citations=tuple(citations), mode="llm", commands=commands)


def _usage(
    llm: Any,
    stages: dict[str, float],
    reported: tuple[int, int] | None,
    calls: int,
    policy: LLMPolicy,
    rejected: Sequence[str],
    *,
    fallback: bool,
) -> Usage:
    model = _model_name(llm)
    prompt_tokens, completion_tokens = reported if reported else (None, None)
    price = policy.prices.get(model or "")
    cost = None
    if price and prompt_tokens is not None and completion_tokens is not None:
        cost = (
            prompt_tokens * price.get("prompt", 0.0) + completion_tokens * price.get("completion", 0.0)
        ) / 1e6
    return Usage(
        dict(stages), model, prompt_tokens, completion_tokens, cost, calls, fallback, tuple(rejected)
    )


def _model_name(llm: Any) -> str | None:
    name = getattr(llm, "model", None)
    if not name:
        try:
            name = llm.metadata.model_name
        except AttributeError:
            return None
    return str(name)


def _message(role: str, content: str) -> Any:
    from llama_index.core.llms import ChatMessage, MessageRole

    return ChatMessage(role=MessageRole(role), content=content)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _evidence(hit: Hit) -> float:
    """A hit's own evidence (its score is capped by the hits ranked above it)."""
    return hit.evidence if hit.evidence is not None else hit.score
