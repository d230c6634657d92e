"""``RunbookIndex``: the library's front door for building, searching and answering."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .access import AccessMap
from .answer import extractive_answer
from .audit import AuditLog, resolve_audit
from .embedding import Embedder, OnnxQueryEncoder, SentenceTransformerEmbedder, resolve_model
from .errors import ConfigError, EmbeddingError, ModelMismatchError
from .evaluation import EvalQuery, EvalReport, evaluate
from .generations import Manifest, ServerLayout, open_layout, verify_generation
from .indexing import build_index
from .lexical import CHUNKS_FILE, LexicalIndex
from .records import Answer, BuildReport, Hit, Principal, Skipped, Usage, embed_text
from .retrieval import Mode, Retrievers, search
from .settings import Settings

if TYPE_CHECKING:
    from .store import ChromaStore

log = logging.getLogger("runbook_rag")
T = TypeVar("T")
REFRESH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Served:
    """The generation being served, replaced whole when a new one is published: a query reads
    it once, so a publish in between cannot mix the store of one generation with the lexical
    index or label sets of another."""

    store: ChromaStore
    lexical: LexicalIndex
    manifest: Manifest


class RunbookIndex:
    """A published runbook index, searched on behalf of a :class:`Principal`.

    Opening is cheap; the embedding model loads on the first query. A long-lived
    instance (a bot) follows newly published generations: the pointer file is
    checked before every query.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
        interface: str = "library",
    ) -> None:
        """``interface`` names the caller in the audit trail: library, cli or http."""
        self.settings = settings or Settings()
        self.path = Path(path) if path is not None else self.settings.index
        self.interface = interface
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._embedder = embedder
        self._lock = threading.Lock()
        self._llm: Any = None
        self._query_encoder: OnnxQueryEncoder | None = None
        self._query_encoder_name: str | None = None
        self._checked = 0.0
        self._layout = open_layout(self.path, self.settings)
        self._open()
        self.audit_log = self._open_audit()

    @classmethod
    def build(
        cls,
        sources: Sequence[Path | str],
        *,
        path: Path | str | None = None,
        access_map: AccessMap | Path | str | None = None,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
        allow_empty: bool = False,
        dry_run: bool = False,
        progress: bool = False,
        confluence_url: str | None = None,
        spaces: Sequence[str] = (),
    ) -> BuildReport:
        """Bring the index at ``path`` up to date with the runbooks under ``sources``.

        Incremental: only new or changed passages are embedded. With ``dry_run`` nothing is
        written and the report's ``diff`` says what would change.
        """
        settings = settings or Settings()
        if access_map is not None and not isinstance(access_map, AccessMap):
            access_map = AccessMap.load(access_map)
        index_path = Path(path) if path is not None else settings.index
        sources = list(sources)
        not_mirrored: list[Skipped] = []
        if confluence_url and spaces:
            mirror = index_path / "confluence-mirror"
            # A dry run writes nothing, the mirror included: it diffs against the last sync.
            sources.append(
                mirror if dry_run else sync_confluence(confluence_url, spaces, mirror, skipped=not_mirrored)
            )
            if dry_run:
                mirror.mkdir(parents=True, exist_ok=True)
        report = build_index(
            sources,
            index_path=index_path,
            layout=open_layout(index_path, settings),
            embedder=embedder or SentenceTransformerEmbedder(settings.model, batch_size=settings.batch_size),
            access_map=access_map,
            allow_empty=allow_empty,
            max_bytes=settings.max_file_bytes,
            max_line_chars=settings.max_line_chars,
            max_chunks=settings.max_chunks_per_document,
            dry_run=dry_run,
            progress=progress,
        )
        # Pages the mirror refused are part of what this build skipped.
        return replace(report, skipped=(*not_mirrored, *report.skipped)) if not_mirrored else report

    @property
    def manifest(self) -> Manifest:
        self._refresh()
        return self._served.manifest

    def info(self) -> dict[str, object]:
        """The published generation's manifest: model, counts per label set, last build report."""
        return {"index": str(self.path), **self.manifest.model_dump()}

    def verify(self) -> list[str]:
        """Problems found when checking the store against the manifest (empty when sound)."""
        self._refresh()
        served = self._served
        return verify_generation(self._layout, served.store, served.manifest)

    def search(
        self,
        query: str,
        *,
        principal: Principal,
        k: int | None = None,
        mode: Mode | None = None,
        per_document: int | None = None,
    ) -> list[Hit]:
        """The best chunks for ``query`` among those ``principal`` may read, best first.

        ``mode`` is ``"hybrid"`` (the default), ``"dense"`` or ``"lexical"``; ``per_document``
        caps the chunks returned from one runbook (0: no cap).
        """
        return self._audited(
            "search",
            principal,
            query,
            lambda audit: self._search(query, principal, k, mode, per_document, audit),
        )

    def _search(
        self,
        query: str,
        principal: Principal,
        k: int | None,
        mode: Mode | None,
        per_document: int | None,
        audit: dict[str, Any] | None,
    ) -> list[Hit]:
        self._refresh()
        served = self._served  # read once: see _Served
        mode = mode or self.settings.retrieval
        if audit is not None:
            audit.update(generation=served.manifest.generation, mode=mode)
        return search(
            Retrievers(served.store, served.lexical, self._query_embedder(), served.manifest.label_sets),
            principal=principal,
            query=query,
            k=k or self.settings.k,
            mode=mode,
            per_document=self.settings.per_document if per_document is None else per_document,
            audit=audit,
        )

    def answer(
        self,
        question: str,
        *,
        principal: Principal,
        k: int | None = None,
        mode: Mode | None = None,
        llm: Any = None,
    ) -> Answer:
        """A cited answer from what ``principal`` may read, or an abstention.

        Extractive and offline unless a model is given (``llm``: any llama-index LLM) or
        configured (``llm_base_url``/``llm_model``); a model that is slow, failing or
        misbehaving gives the extractive answer instead, with the reason.
        """
        return self._audited(
            "ask", principal, question, lambda audit: self._answer(question, principal, k, mode, llm, audit)
        )

    def _answer(
        self,
        question: str,
        principal: Principal,
        k: int | None,
        mode: Mode | None,
        llm: Any,
        audit: dict[str, Any],
    ) -> Answer:
        started = time.perf_counter()
        hits = self._search(question, principal, k, mode, None, audit)
        retrieve_ms = (time.perf_counter() - started) * 1000
        llm = llm if llm is not None else self._configured_llm()
        if llm is None:
            answer = extractive_answer(question, hits, abstain_below=self.settings.abstain_below)
            return replace(answer, usage=Usage({"retrieve": retrieve_ms}))
        from .llm import LLMPolicy, llm_answer

        s = self.settings
        policy = LLMPolicy(
            timeout=s.llm_timeout,
            retries=s.llm_retries,
            link_hosts=frozenset(h.lower() for h in s.llm_link_hosts),
            prices=s.llm_prices,
        )
        return llm_answer(
            question,
            hits,
            principal=principal,
            llm=llm,
            policy=policy,
            abstain_below=s.abstain_below,
            retrieve_ms=retrieve_ms,
        )

    def _audited(
        self, action: str, principal: Principal, query: str, run: Callable[[dict[str, Any]], T]
    ) -> T:
        """Run one query and append its audit record; a record that cannot be written fails it."""
        started = time.perf_counter()
        audit: dict[str, Any] = {}
        try:
            result = run(audit)
        except Exception as exc:  # every failure is audited too, then raised as it was
            self._record(action, principal, query, audit, started, None, f"error:{type(exc).__name__}")
            raise
        self._record(action, principal, query, audit, started, result, None)
        return result

    def _record(
        self,
        action: str,
        principal: Principal,
        query: str,
        audit: dict[str, Any],
        started: float,
        result: Any,
        outcome: str | None,
    ) -> None:
        fields: dict[str, Any] = {
            "action": action,
            "interface": self.interface,
            "principal": {"id": principal.user_id, "groups": sorted(principal.groups)},
            "query": query if isinstance(query, str) else "",
            "generation": audit.get("generation", self._served.manifest.generation),
            "withheld": audit.get("withheld"),
            "mode": audit.get("mode"),
        }
        if isinstance(result, Answer):
            usage = result.usage
            fields.update(
                mode=result.mode,
                chunk_ids=[c.chunk_id for c in result.citations],
                sources=sorted({c.source for c in result.citations}),
                model=usage.model if usage else None,
                tokens=(
                    {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens} if usage else None
                ),
                fallback_reason=result.fallback_reason,
            )
            outcome = "abstained" if result.abstained else "answered"
        elif isinstance(result, list):
            fields.update(chunk_ids=[h.chunk_id for h in result], sources=sorted({h.source for h in result}))
            outcome = "ok" if result else "no_results"
        fields["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        fields["outcome"] = outcome
        record = self.audit_log.append(**fields)
        for listener in self.listeners:
            listener(record)

    def _open_audit(self) -> AuditLog:
        setup = resolve_audit(self.settings, index=self.path)
        return AuditLog(
            setup.log,
            key=setup.load_key(create=True),
            head=setup.head,
            keep_query_text=self.settings.audit_keep_query_text,
        )

    def _configured_llm(self) -> Any:
        s = self.settings
        if not s.llm_base_url:
            return None
        if not s.llm_model:
            raise ConfigError("llm_base_url is set but no llm_model (RUNBOOK_RAG_LLM_MODEL / --llm-model)")
        if self._llm is None:
            from .llm import openai_compatible

            key = s.llm_api_key.get_secret_value() if s.llm_api_key else None
            self._llm = openai_compatible(
                base_url=s.llm_base_url, model=s.llm_model, api_key=key, timeout=s.llm_timeout
            )
        return self._llm

    def evaluate(
        self,
        queries: Sequence[EvalQuery],
        *,
        principal: Principal | None = None,
        k: int = 10,
        mode: Mode | None = None,
    ) -> EvalReport:
        """Retrieval, abstention and leak metrics over ``queries`` (see :mod:`runbook_rag.evaluation`).

        Lines with ``groups`` run as that principal; the others as ``principal``.
        """
        return evaluate(self, queries, principal=principal, k=k, mode=mode)

    def _open(self) -> None:
        store, manifest = self._layout.load()
        model_id = self._embedder.model_id if self._embedder else resolve_model(self.settings.model)[1]
        if manifest.model_id != model_id or (
            self._embedder and self._embedder.dimension != manifest.dimension
        ):
            raise ModelMismatchError(
                f"index was built with model {manifest.model_id!r} ({manifest.dimension}-d) "
                f"but {model_id!r} is configured; rebuild the index or set the model it was built with",
                path=self.path,
            )
        self._served = _Served(store, self._load_lexical(store, manifest), manifest)

    def _load_lexical(self, store: ChromaStore, manifest: Manifest) -> LexicalIndex:
        """The generation's lexical index; derived from the store's chunks when this machine
        has no copy (a Chroma server index opened elsewhere) and kept for the next open."""
        folder = self._layout.lexical_dir(manifest.generation)
        if (folder / CHUNKS_FILE).exists():
            return LexicalIndex.load(folder)
        log.info("deriving the lexical index of %s from the store", manifest.generation)
        lexical = LexicalIndex.build(
            (
                cid,
                str(meta["source"]),
                embed_text(str(meta["title"]), json.loads(meta["heading_path"]), text),
                str(meta["acl_key"]),
                str(meta.get("content_key", "")),
            )
            for cid, text, meta in store.documents()
        )
        tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.tmp")
        try:
            lexical.save(tmp)
            os.replace(tmp, folder)
        except OSError as exc:
            log.warning("could not keep the derived lexical index (%s); it is derived again next time", exc)
            shutil.rmtree(tmp, ignore_errors=True)
        return lexical

    def _refresh(self) -> None:
        # A local pointer is one small file read per query; a server's is a request, made at
        # most once per REFRESH_SECONDS.
        if isinstance(self._layout, ServerLayout):
            now = time.monotonic()
            if now - self._checked < REFRESH_SECONDS:
                return
            self._checked = now
        if self._layout.pointer() != self._served.manifest.generation:
            with self._lock:
                if self._layout.pointer() != self._served.manifest.generation:
                    self._open()

    def _query_embedder(self) -> Embedder | OnnxQueryEncoder:
        """The exported query encoder when the index has one (no torch needed), else the model."""
        if self._embedder is not None:
            return self._embedder
        manifest = self._served.manifest
        wanted = manifest.query_encoder
        if wanted and self._query_encoder_name != wanted:
            with self._lock:
                if self._query_encoder_name != wanted:  # one load (or one failure) per encoder
                    try:
                        self._query_encoder = OnnxQueryEncoder(self.path / wanted)
                    except EmbeddingError as exc:
                        log.warning("%s; embedding queries with the full model instead", exc)
                        self._query_encoder = None
                    self._query_encoder_name = wanted
        encoder = self._query_encoder
        if encoder is not None and encoder.model_id == manifest.model_id:
            return encoder
        return self._get_embedder()

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = SentenceTransformerEmbedder(
                        self.settings.model, batch_size=self.settings.batch_size
                    )
        return self._embedder


def sync_confluence(
    base_url: str, spaces: Sequence[str], mirror: Path, *, skipped: list[Skipped] | None = None
) -> Path:
    """Mirror the pages of ``spaces`` (incrementally, by version) and return the mirror folder;
    pages that could not be mirrored safely are appended to ``skipped``."""
    from .sources.confluence_api import ConfluenceClient, sync_space

    client = ConfluenceClient(base_url)
    try:
        for space in spaces:
            report = sync_space(client, space, mirror, base_url=base_url)
            if skipped is not None:
                skipped.extend(report.skipped)
            log.info(
                "confluence %s: %d fetched, %d unchanged, %d removed",
                space,
                len(report.fetched),
                len(report.unchanged),
                len(report.removed),
            )
    finally:
        client.close()
    return mirror
