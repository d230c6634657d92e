"""``RunbookIndex``: the library's front door for building, searching and answering.

A facade: each method is a few lines over the stage that does the work. The served
generation is :mod:`runbook_rag.serving`, ranking :mod:`runbook_rag.ranking`, answers
:mod:`runbook_rag.answer` and :mod:`runbook_rag.llm`, the audit trail
:mod:`runbook_rag.audit`, builds :mod:`runbook_rag.build`, measurement
:mod:`runbook_rag.evaluation`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import runtime, tracing
from .access import LABEL_SEP, AccessMap
from .answer import extractive_answer
from .audit import AuditEvent, open_auditor
from .embedding import Embedder, SentenceTransformerEmbedder
from .generations import Manifest, check_index_folder, open_layout, verify_generation
from .ranking import Mode, rank
from .records import Answer, BuildReport, Hit, IndexInfo, Principal, QueryTrace, Skipped, Usage
from .serving import ServedIndex
from .settings import Settings

if TYPE_CHECKING:
    from .actions import ActionRequest, Decision, Redemption, RunbookView
    from .build import ProgressCallback
    from .evaluation import EvalQuery, EvalReport
    from .guard import Guard


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
        runtime.use_cache_dir(self.settings.cache_path(self.path))
        self.interface = interface
        self._llm: Any = None
        self._served = ServedIndex(
            open_layout(self.path, self.settings.chroma),
            model=self.settings.model,
            batch_size=self.settings.batch_size,
            embedder=embedder,
        )
        served = self._served
        self._auditor = open_auditor(
            self.settings.audit, index=self.path, interface=interface, generation=lambda: served.generation
        )
        self._guard: Guard | None = None

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
        progress: ProgressCallback | None = None,
        confluence_url: str | None = None,
        spaces: Sequence[str] = (),
    ) -> BuildReport:
        """Bring the index at ``path`` up to date with the runbooks under ``sources``.

        Incremental: only new or changed passages are embedded. With ``dry_run`` nothing is
        written and the report's ``diff`` says what would change. ``progress`` is called with a
        :class:`~runbook_rag.build.Progress` as documents are parsed and chunks embedded. The
        report's ``seconds`` is the whole call, loading the model included.
        """
        started = time.perf_counter()
        from .build import build_index, check_sources

        settings = settings or Settings()
        if access_map is not None and not isinstance(access_map, AccessMap):
            access_map = AccessMap.load(access_map)
        index_path = Path(path) if path is not None else settings.index
        runtime.use_cache_dir(settings.cache_path(index_path))
        sources = list(sources)
        # Paths are checked before the model loads: a wrong one fails at once.
        check_sources(sources)
        check_index_folder(index_path, create=True)
        embedder = embedder or SentenceTransformerEmbedder(
            settings.model,
            batch_size=settings.batch_size,
            encoder=settings.encoder,
            cache=settings.cache_path(index_path),
        )
        layout = open_layout(index_path, settings.chroma)
        try:
            not_mirrored: list[Skipped] = []
            if confluence_url and spaces:
                from .sources.confluence_api import sync_confluence

                mirror = index_path / "confluence-mirror"
                # A dry run writes nothing, the mirror included: it diffs against the last sync.
                if dry_run:
                    mirror.mkdir(parents=True, exist_ok=True)
                else:
                    sync_confluence(
                        confluence_url, spaces, mirror, credentials=settings.confluence, skipped=not_mirrored
                    )
                sources.append(mirror)
            report = build_index(
                sources,
                index_path=index_path,
                layout=layout,
                embedder=embedder,
                access_map=access_map,
                allow_empty=allow_empty,
                limits=settings.limits,
                dry_run=dry_run,
                progress=progress,
            )
        finally:
            layout.close()
        # Pages the mirror refused are part of what this build skipped.
        skipped = (*not_mirrored, *report.skipped)
        return replace(report, skipped=skipped, seconds=time.perf_counter() - started)

    def close(self) -> None:
        """Let go of the store (removing this process's private copy of it) and of any
        connection to a Chroma server. The index is not used after that."""
        self._served.close()

    def __enter__(self) -> RunbookIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def manifest(self) -> Manifest:
        """The published generation's manifest."""
        return self._served.current().manifest

    @property
    def subscribers(self) -> list[Callable[[AuditEvent], None]]:
        """Called with each query's :class:`~runbook_rag.audit.AuditEvent` once it is written."""
        return self._auditor.subscribers

    def info(self) -> IndexInfo:
        """The published generation: model, counts per label set, last build report."""
        m = self.manifest
        return IndexInfo(
            index=str(self.path),
            generation=m.generation,
            built_at=m.built_at,
            model_id=m.model_id,
            dimension=m.dimension,
            max_tokens=m.max_tokens,
            documents=m.documents,
            chunks=m.chunks,
            label_set_counts=dict(m.label_set_counts),
            query_encoder=m.query_encoder,
            versions=dict(m.versions),
            report=m.build_report(),
            encoder=m.encoder,
        )

    def labelled_groups(self) -> frozenset[str]:
        """Every group (and ``user:`` label) that labels a runbook of the published generation,
        read from its manifest. For operators with the index at hand (``index info`` shows the
        label sets too); the service never tells a caller which groups exist."""
        return frozenset(g for key in self.manifest.label_sets for g in key.split(LABEL_SEP))

    def verify(self) -> list[str]:
        """Problems found when checking the store against the manifest (empty when sound)."""
        generation = self._served.current()
        return verify_generation(self._served.layout, generation.store, generation.manifest)

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
        per_document = self.settings.per_document if per_document is None else per_document
        return self._audited_search("search", query, principal, k, mode, per_document)

    def section(self, chunk_id: str, *, principal: Principal) -> Hit:
        """The passage ``chunk_id`` (a hit's or citation's id), fetched through ``principal``'s
        filter and re-checked. :class:`~runbook_rag.errors.QueryError` alike when it does not
        exist and when ``principal`` may not read it. Audited as ``section``."""
        return self._auditor.run(
            "section", principal, chunk_id, lambda trace: self._section(chunk_id, principal, trace)
        )

    def _section(self, chunk_id: str, principal: Principal, trace: QueryTrace) -> Hit:
        from .access import where_filter
        from .errors import QueryError
        from .ranking import passage_hit

        generation = self._served.current()
        trace.generation = generation.manifest.generation
        missing = QueryError("no passage with that id that you may read")
        if not isinstance(chunk_id, str) or not 0 < len(chunk_id) <= 200:
            raise missing
        where = where_filter(principal, generation.manifest.label_sets)
        match = generation.store.chunk(chunk_id, where) if where is not None else None
        if match is None:
            raise missing
        return passage_hit(match, principal)

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
        return self._auditor.run(
            "ask", principal, question, lambda trace: self._answer(question, principal, k, mode, llm, trace)
        )

    def evaluate(
        self,
        queries: Sequence[EvalQuery],
        *,
        principal: Principal | None = None,
        k: int = 10,
        mode: Mode | None = None,
    ) -> EvalReport:
        """Retrieval, abstention and leak metrics over ``queries`` (see :mod:`runbook_rag.evaluation`).

        Lines with ``groups`` run as that principal; the others as ``principal``. Each query is
        audited as ``eval``, searched for one chunk per runbook (the document ranking itself).
        With a model configured, each query is also answered by it, and the report's ``llm``
        metrics give its fallback rate and the share of its answers with an ungrounded command.
        """
        from .evaluation import evaluate

        def documents(query: str, *, principal: Principal, k: int) -> list[Hit]:
            return self._audited_search("eval", query, principal, k, mode, 1)

        def passages(query: str, *, principal: Principal) -> list[Hit]:
            """The hits ``ask`` answers from, for the first-citation metric."""
            return self._audited_search("eval", query, principal, None, mode, self.settings.per_document)

        def answer_with_model(query: str, *, principal: Principal) -> Answer:
            """The configured model's answer, audited as ``eval``."""
            return self._auditor.run(
                "eval",
                principal,
                query,
                lambda trace: self._answer(query, principal, None, mode, None, trace),
            )

        return evaluate(
            documents,
            queries,
            principal=principal,
            k=k,
            abstain_below=self.settings.abstain_below,
            passages=passages,
            answer_with_model=answer_with_model if self.settings.llm_base_url else None,
        )

    def propose(
        self, source: str, command: str, *, principal: Principal, reason: str | None = None
    ) -> ActionRequest:
        """Ask for ``command`` of the runbook ``source`` to be run (see :mod:`runbook_rag.guard`):
        a pending request with its risk, or ``not_required`` for a read-only command.
        :class:`~runbook_rag.errors.ActionRefused` when ``principal`` may not read the runbook or
        the command is not in it."""
        return self.guard.propose(source, command, principal=principal, reason=reason)

    def approve(self, request_id: str, *, principal: Principal) -> Decision:
        """Approve a pending request as ``principal``; the last approval needed carries the grant."""
        return self.guard.approve(request_id, principal=principal)

    def deny(self, request_id: str, *, principal: Principal, reason: str | None = None) -> Decision:
        """Deny a pending request (or revoke its unused grant) as ``principal``."""
        return self.guard.deny(request_id, principal=principal, reason=reason)

    def redeem(self, grant: str, command: str, *, principal: Principal | None = None) -> Redemption:
        """Use a grant up for the exact ``command`` an executor is about to run (once);
        :class:`~runbook_rag.errors.GrantInvalid` says why it cannot be. ``principal`` names the
        executor in the audit trail."""
        return self.guard.redeem(grant, command, principal=principal)

    def action_requests(
        self, *, principal: Principal | None = None, status: str | None = None
    ) -> list[ActionRequest]:
        """The guarded-action requests, newest first: those of runbooks ``principal`` may read,
        or every one for the operator (None)."""
        return self.guard.requests(principal=principal, status=status)

    @property
    def guard(self) -> Guard:
        """The approval rules over this index's requests (made on first use)."""
        if self._guard is None:
            from .actions import ActionBook
            from .guard import Guard

            book = ActionBook(
                self.settings.actions_db or self.path / "actions.sqlite3",
                key=self._auditor.log.derive_key("action grants"),
                grant_ttl=self.settings.grant_ttl,
                pending_ttl=self.settings.pending_ttl,
            )
            self._guard = Guard(book, view_of=self._runbook_view, auditor=self._auditor)
        return self._guard

    def _runbook_view(self, source: str, principal: Principal) -> RunbookView | None:
        """What ``principal`` may read of the runbook ``source``, through the one filter."""
        from .access import is_entitled, where_filter
        from .actions import RunbookView
        from .store import approval_policy_of, commands_of

        generation = self._served.current()
        where = where_filter(principal, generation.manifest.label_sets)
        if where is None or not isinstance(source, str):
            return None
        matches = [m for m in generation.store.runbook(source, where) if is_entitled(principal, m.labels)]
        if not matches:
            return None
        matches.sort(key=lambda m: int(m.metadata.get("start_line", 0)))
        approvers, two_person = approval_policy_of(matches[0].metadata)
        return RunbookView(
            source=source,
            labels=matches[0].labels,
            commands=tuple(c for m in matches for c in commands_of(m.metadata)),
            approvers=approvers,
            two_person=two_person or any(approval_policy_of(m.metadata)[1] for m in matches),
        )

    def _audited_search(
        self,
        action: str,
        query: str,
        principal: Principal,
        k: int | None,
        mode: Mode | None,
        per_document: int,
    ) -> list[Hit]:
        return self._auditor.run(
            action,
            principal,
            query,
            lambda trace: self._search(query, principal, k, mode, per_document, trace),
        )

    def _search(
        self,
        query: str,
        principal: Principal,
        k: int | None,
        mode: Mode | None,
        per_document: int,
        trace: QueryTrace,
    ) -> list[Hit]:
        with tracing.span("retrieve") as span:
            generation, retrievers = self._served.retrievers()
            trace.generation = generation.manifest.generation
            trace.mode = mode = mode or self.settings.retrieval
            hits = rank(
                retrievers,
                principal=principal,
                query=query,
                k=k or self.settings.k,
                mode=mode,
                per_document=per_document,
                trace=trace,
            )
            span.set_attributes({"runbook_rag.mode": mode, "runbook_rag.hits": len(hits)})
        return hits

    def _answer(
        self,
        question: str,
        principal: Principal,
        k: int | None,
        mode: Mode | None,
        llm: Any,
        trace: QueryTrace,
    ) -> Answer:
        started = time.perf_counter()
        hits = self._search(question, principal, k, mode, self.settings.per_document, trace)
        retrieve_ms = (time.perf_counter() - started) * 1000
        if llm is None and self.settings.llm_base_url:
            from .llm import configured_llm

            self._llm = self._llm or configured_llm(self.settings.llm)
            llm = self._llm
        if llm is None:
            answer = extractive_answer(question, hits, abstain_below=self.settings.abstain_below)
            return replace(answer, usage=Usage({"retrieve": retrieve_ms}))
        from .llm import llm_answer, policy_of

        return llm_answer(
            question,
            hits,
            principal=principal,
            llm=llm,
            policy=policy_of(self.settings.llm),
            abstain_below=self.settings.abstain_below,
            retrieve_ms=retrieve_ms,
        )
