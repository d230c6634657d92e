"""``runbook-rag``: a thin shell over the library.

Each command parses options, calls one library function, and renders the result as
human text or, with ``--json``, one JSON object. Library errors become one line on
stderr and a non-zero exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from .build import Progress
    from .index import RunbookIndex

F = TypeVar("F", bound=Callable[..., Any])

EXIT_STRICT = 3
EXIT_CARDHOLDER_DATA = 4


class _PathType(click.Path):
    """A path, never empty (an empty one would silently mean the current folder)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            if not value.strip():
                self.fail("an empty path", param, ctx)
            if "\x00" in value:
                self.fail("a path cannot hold a NUL character", param, ctx)
        return super().convert(value, param, ctx)


class _TextType(click.ParamType[str]):
    """Text that is valid Unicode (no lone surrogates from undecodable bytes)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            str(value).encode("utf-8")
        except UnicodeEncodeError:
            self.fail("not valid UTF-8 text", param, ctx)
        return value


class _HostType(click.ParamType[str]):
    """A host name or IP address to listen on."""

    name = "host"
    _NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import ipaddress

        try:
            ipaddress.ip_address(str(value).strip("[]"))
        except ValueError:
            if not self._NAME.match(str(value)):
                self.fail("not a host name or IP address", param, ctx)
        return value


class _Seconds(click.FloatRange):
    """A float range that also refuses NaN (which compares false with every bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail("not a number", param, ctx)
        return number


PATH = _PathType()
TEXT = _TextType()


def _index_option(fn: F) -> F:
    return click.option(
        "--index",
        "index_path",
        type=PATH,
        default=None,
        help="Index folder (default: $RUNBOOK_RAG_INDEX or indexes/default).",
    )(fn)


def _principal_options(fn: F) -> F:
    fn = click.option(
        "--group",
        "groups",
        type=TEXT,
        multiple=True,
        required=True,
        help="A group of the caller (required; repeatable). Names are exact and case-sensitive.",
    )(fn)
    return click.option("--user", type=TEXT, required=True, help="The caller's user id.")(fn)


def _mode_option(fn: F) -> F:
    return click.option(
        "--mode",
        type=click.Choice(["hybrid", "dense", "lexical"]),
        default=None,
        help="Ranking (default: $RUNBOOK_RAG_RETRIEVAL or hybrid).",
    )(fn)


def _json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Search runbooks and get cited answers, showing each caller only what they may read."""
    ctx.ensure_object(dict).setdefault("started", time.perf_counter())
    ctx.obj["debug"] = debug


@cli.command()
@click.argument("sources", nargs=-1, type=PATH)
@_index_option
@click.option(
    "--access-map",
    type=PATH,
    help="YAML/JSON rules giving labels by path glob.",
)
@click.option(
    "--strict",
    is_flag=True,
    help=(
        "Exit 4 when any card number, track data or CVV was found (and masked), "
        "3 when a document was skipped."
    ),
)
@click.option("--allow-empty", is_flag=True, help="Publish even when nothing is indexable.")
@click.option("--dry-run", is_flag=True, help="Print what would change (documents) without writing.")
@click.option(
    "--confluence-url",
    type=TEXT,
    help="Also index Confluence pages from this site (token: $RUNBOOK_RAG_CONFLUENCE_TOKEN).",
)
@click.option("--space", "spaces", type=TEXT, multiple=True, help="A Confluence space key (repeatable).")
@_json_option
@click.pass_context
def build(
    ctx: click.Context,
    sources: Sequence[Path],
    index_path: Path | None,
    access_map: Path | None,
    strict: bool,
    allow_empty: bool,
    dry_run: bool,
    confluence_url: str | None,
    spaces: Sequence[str],
    as_json: bool,
) -> None:
    """Bring the index up to date with the runbooks under SOURCES (incrementally).

    On a terminal, shows documents parsed and chunks embedded as it goes."""
    from .index import RunbookIndex

    if not sources and not (confluence_url and spaces):
        raise click.UsageError("give SOURCE folders, or --confluence-url with at least one --space")

    bars = _ProgressBars() if not as_json and sys.stderr.isatty() else None
    try:
        report = RunbookIndex.build(
            sources,
            path=index_path,
            access_map=access_map,
            allow_empty=allow_empty,
            dry_run=dry_run,
            progress=bars,
            confluence_url=confluence_url,
            spaces=spaces,
        )
    finally:
        if bars is not None:
            bars.close()
    # The seconds reported are the command's whole wall time, start-up included.
    seconds = time.perf_counter() - ctx.obj["started"]
    if as_json:
        _emit({**report.to_dict(), "seconds": round(seconds, 3)})
    else:
        if dry_run:
            click.echo("dry run: nothing written")
        for change in ("added", "changed", "relabelled", "removed"):
            for source in report.diff.get(change, []):
                click.echo(f"  {change:10s} {source}")
        click.echo(
            f"{'would index' if dry_run else 'indexed'} {report.documents} documents, "
            f"{report.chunks} chunks: "
            f"{report.embedded} embedded, {report.reused} reused, {report.removed} removed, "
            f"{report.relabelled} relabelled in {seconds:.1f} s"
        )
        if report.skipped:
            click.echo(f"skipped {len(report.skipped)}:")
            for s in report.skipped:
                where = f"{s.source}:{s.line}" if s.line else s.source
                click.echo(f"  {where}: {s.reason}")
        if report.findings:
            total = sum(sum(c.values()) for c in report.findings.values())
            click.echo(f"masked {total} sensitive values in {len(report.findings)} documents:")
            for source, counts in sorted(report.findings.items()):
                click.echo(f"  {source}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        if report.quarantined:
            click.echo(f"quarantined {len(report.quarantined)} passages (instructions aimed at a model):")
            for q in report.quarantined:
                click.echo(f"  {q.source}:{q.start_line}-{q.end_line}: {q.rule}")
        if report.warnings:
            click.echo(f"warnings {len(report.warnings)}:")
            for w in report.warnings:
                where = f"{w.source}:{w.line}" if w.line else w.source
                click.echo(f"  {where}: {w.message}")
    if strict and report.cardholder_data_found:
        click.echo("runbook-rag: cardholder data found in sources (masked in the index)", err=True)
        sys.exit(EXIT_CARDHOLDER_DATA)
    if strict and report.skipped:
        sys.exit(EXIT_STRICT)


@cli.command()
@click.argument("query", type=TEXT)
@_principal_options
@_index_option
@click.option("-k", "k", type=click.IntRange(1, 50), default=None, help="Number of hits (default 5).")
@_mode_option
@click.option(
    "--per-doc",
    "per_document",
    type=click.IntRange(0, 50),
    default=None,
    help="At most this many hits from one runbook (0: no cap).",
)
@_json_option
def search(
    query: str,
    user: str,
    groups: Sequence[str],
    index_path: Path | None,
    k: int | None,
    mode: str | None,
    per_document: int | None,
    as_json: bool,
) -> None:
    """Search the runbooks the caller may read (at least one --group)."""
    from .index import RunbookIndex
    from .records import Principal

    index = RunbookIndex(index_path, interface="cli")
    _hint_unknown_groups(index, groups)
    hits = index.search(
        query,
        principal=Principal(user, frozenset(groups)),
        k=k,
        mode=mode,  # type: ignore[arg-type]
        per_document=per_document,
    )
    if as_json:
        _emit({"hits": [h.to_dict() for h in hits]})
        return
    if not hits:
        click.echo("no results")
    for n, hit in enumerate(hits, start=1):
        click.echo(
            f"{n}. [{hit.score:.2f}] {hit.source}:{hit.start_line}-{hit.end_line}  {hit.heading or hit.title}"
        )
        for line in hit.text.strip().split("\n")[:3]:
            click.echo(f"     {line}")
        if hit.commands:
            risks = Counter(c.risk for c in hit.commands)
            click.echo("     commands: " + ", ".join(f"{n} {risk}" for risk, n in sorted(risks.items())))


@cli.command()
@click.argument("question", type=TEXT)
@_principal_options
@_index_option
@click.option(
    "--llm-base-url",
    type=TEXT,
    help="An OpenAI-compatible endpoint to write the answer (key: $RUNBOOK_RAG_LLM_API_KEY).",
)
@click.option("--llm-model", type=TEXT, help="The model name at that endpoint.")
@_json_option
def ask(
    question: str,
    user: str,
    groups: Sequence[str],
    index_path: Path | None,
    llm_base_url: str | None,
    llm_model: str | None,
    as_json: bool,
) -> None:
    """Answer a question from the runbooks the caller may read (at least one --group), with citations."""
    from .index import RunbookIndex
    from .records import Principal
    from .settings import Settings

    overrides = {"llm_base_url": llm_base_url, "llm_model": llm_model}
    settings = Settings(**{k: v for k, v in overrides.items() if v})  # type: ignore[arg-type]
    index = RunbookIndex(index_path, settings=settings, interface="cli")
    _hint_unknown_groups(index, groups)
    answer = index.answer(question, principal=Principal(user, frozenset(groups)))
    if as_json:
        _emit(answer.to_dict())
        return
    click.echo(answer.text)
    if answer.citations:
        click.echo("\nSources:")
        for c in answer.citations:
            where = c.url or f"{c.source}:{c.start_line}-{c.end_line}"
            click.echo(f"  [{c.n}] {where}  {c.heading or c.title}")
    if answer.fallback_reason:
        click.echo(f"\n(extractive answer: the model was not used: {answer.fallback_reason})", err=True)


@cli.command("eval")
@click.argument("queries", type=PATH)
@_index_option
@click.option("--user", type=TEXT, default="eval", show_default=True, help="The evaluating caller's user id.")
@click.option(
    "--group",
    "groups",
    type=TEXT,
    multiple=True,
    help="A group of the caller for lines without their own groups (repeatable).",
)
@click.option(
    "--all-groups",
    is_flag=True,
    help="Run lines without their own groups as an operator who may read every runbook in the index.",
)
@click.option(
    "-k", "k", type=click.IntRange(1, 50), default=10, show_default=True, help="Documents ranked per query."
)
@_mode_option
@click.option(
    "--fail-under",
    "gates",
    multiple=True,
    metavar="METRIC=VALUE",
    help="Exit 1 when METRIC is below VALUE, e.g. recall@5=0.9 (repeatable).",
)
@click.option(
    "--per-query",
    is_flag=True,
    help="With --json, include every query's ranking and, with a model, its answer, sentences and cost.",
)
@click.option(
    "--llm-base-url",
    type=TEXT,
    help="Also answer every query through this OpenAI-compatible endpoint and measure the answers "
    "(citations, support, fallbacks, abstention, must_include, tokens, cost, latency).",
)
@click.option("--llm-model", type=TEXT, help="The model name at that endpoint.")
@_json_option
def evaluate(
    queries: Path,
    index_path: Path | None,
    user: str,
    groups: Sequence[str],
    all_groups: bool,
    k: int,
    mode: str | None,
    gates: Sequence[str],
    per_query: bool,
    llm_base_url: str | None,
    llm_model: str | None,
    as_json: bool,
) -> None:
    """Measure retrieval, abstention and leaks on a JSONL query file.

    Each line runs as its own "groups" (and "user") when it has them; the other lines as
    --group, or with --all-groups as an operator who may read every runbook (audited as
    --user). With --llm-base-url, every query is also answered by the model and its answers
    are measured (under "llm" with --json). Exits 1 when any forbidden document was returned
    or a --fail-under gate fails.
    """
    from .errors import ConfigError
    from .evaluation import dumps, load_queries, report_table
    from .index import RunbookIndex
    from .records import Principal

    wanted = {}
    for gate in gates:
        name, _, value = gate.partition("=")
        try:
            wanted[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--fail-under wants METRIC=VALUE, got {gate!r}") from None
    if groups and all_groups:
        raise click.UsageError("give --group or --all-groups, not both")
    lines = load_queries(queries)
    from .settings import Settings

    overrides = {"llm_base_url": llm_base_url, "llm_model": llm_model}
    settings = Settings(**{k: v for k, v in overrides.items() if v})  # type: ignore[arg-type]
    index = RunbookIndex(index_path, settings=settings, interface="cli")
    principal = None
    if all_groups:
        principal = Principal(user, index.labelled_groups())
    elif groups:
        principal = Principal(user, frozenset(groups))
    else:
        ungrouped = [q.id for q in lines if q.groups is None]
        if ungrouped:
            raise ConfigError(
                f"{len(ungrouped)} of {len(lines)} queries have no groups of their own (first: "
                f'{ungrouped[0]!r}): give those lines "groups", or pass --group G (repeatable) to run '
                "them as those groups, or --all-groups to run them as an operator who may read every runbook",
                path=queries,
            )
    report = index.evaluate(
        lines,
        principal=principal,
        k=k,
        mode=mode,  # type: ignore[arg-type]
    )
    failed = report.failures(wanted)
    if as_json:
        click.echo(dumps(report, per_query=per_query))
    else:
        click.echo(report_table(report))
    for problem in failed:
        click.echo(f"runbook-rag: eval: {problem}", err=True)
    if failed:
        sys.exit(1)


@cli.group()
def index() -> None:
    """Inspect and check a built index."""


@index.command("info")
@_index_option
@_json_option
def index_info(index_path: Path | None, as_json: bool) -> None:
    """Show the manifest, chunk counts per label set and the last build report."""
    from .index import RunbookIndex

    info = RunbookIndex(index_path).info()
    if as_json:
        _emit(info.to_dict())
        return
    click.echo(f"index       {info.index}")
    for key in ("generation", "built_at", "model_id", "dimension", "encoder", "documents", "chunks"):
        click.echo(f"{key:11s} {getattr(info, key)}")
    click.echo(f"query_encoder {info.query_encoder}")
    click.echo("chunks per label set:")
    for labels, count in info.label_set_counts.items():
        click.echo(f"  {count:6d}  {labels}")
    report = info.report
    click.echo(
        f"last build: {len(report.skipped)} skipped, {len(report.findings)} documents "
        f"with masked values, {len(report.quarantined)} passages quarantined"
    )


@index.command("verify")
@_index_option
@_json_option
def index_verify(index_path: Path | None, as_json: bool) -> None:
    """Check the store against the manifest; exit 1 when anything is wrong."""
    from .index import RunbookIndex

    problems = RunbookIndex(index_path).verify()
    if as_json:
        _emit({"ok": not problems, "problems": problems})
    else:
        click.echo("ok" if not problems else "\n".join(problems))
    if problems:
        sys.exit(1)


@cli.command()
@_index_option
@click.option(
    "--tokens",
    "tokens_file",
    type=PATH,
    required=True,
    help="YAML/JSON list of {token_sha256, user, groups[, endpoints]}.",
)
@click.option("--host", type=_HostType(), default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--audit-log", type=PATH, help="Audit trail (default: audit.log in the index).")
@click.option(
    "--rate",
    "per_minute",
    type=click.IntRange(1, 100000),
    default=600,
    show_default=True,
    help="Requests a minute per token.",
)
@click.option(
    "--request-timeout",
    type=_Seconds(0.1, 3600),
    default=10.0,
    show_default=True,
    help="Seconds a client has to send its whole request before it is disconnected.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 1_000_000),
    default=1024,
    show_default=True,
    help="Open connections the server holds; more are refused with 503.",
)
@click.option(
    "--max-connections-per-client",
    type=click.IntRange(1, 1_000_000),
    default=64,
    show_default=True,
    help="Open connections from one client address; more are refused with 503.",
)
def serve(
    index_path: Path | None,
    tokens_file: Path,
    host: str,
    port: int,
    audit_log: Path | None,
    per_minute: int,
    request_timeout: float,
    max_connections: int,
    max_connections_per_client: int,
) -> None:
    """Serve search and ask over HTTP to callers with bearer tokens."""
    from .service import serve as run_service

    if audit_log is not None:
        _check_writable_file(audit_log, "the audit log")
    run_service(
        index_path,
        tokens_file,
        host=host,
        port=port,
        audit_log=audit_log,
        per_minute=per_minute,
        request_timeout=request_timeout,
        max_connections=max_connections,
        max_connections_per_client=max_connections_per_client,
    )


@cli.group()
def audit() -> None:
    """Check the audit trail."""


@audit.command("verify")
@click.argument("log_file", type=PATH)
@click.option(
    "--key-file",
    type=PATH,
    help="The HMAC key (default: $RUNBOOK_RAG_AUDIT_KEY_FILE, $RUNBOOK_RAG_AUDIT_KEY, or the index's key).",
)
@click.option(
    "--head",
    "head_file",
    type=PATH,
    help="The log's sealed head (default: $RUNBOOK_RAG_AUDIT_HEAD, else where the index keeps it).",
)
@_index_option
@_json_option
def audit_verify(
    log_file: Path, key_file: Path | None, head_file: Path | None, index_path: Path | None, as_json: bool
) -> None:
    """Check every record's HMAC, the chain, and the log against its sealed head (records cut
    from the end, an emptied, deleted or older log); exit 1 saying what is wrong."""
    from .audit import resolve_audit, verify
    from .settings import Settings

    settings = Settings()
    setup = resolve_audit(
        settings.audit, index=index_path or settings.index, log=log_file, key_file=key_file, head=head_file
    )
    verdict = verify(setup.log, key=setup.load_key(), head=setup.head)
    if as_json:
        _emit(verdict.to_dict())
    elif not verdict.ok:
        where = f"{log_file}:{verdict.bad_line}" if verdict.bad_line else str(log_file)
        click.echo(f"{where}: {verdict.reason}")
    elif not verdict.head_checked:
        click.echo(
            f"ok: {verdict.records} records, chain intact; truncation not checked: no head at {verdict.head}"
        )
    elif verdict.head_records == verdict.records:
        click.echo(f"ok: {verdict.records} records, chain intact, sealed by its head {verdict.head}")
    else:
        click.echo(
            f"ok: {verdict.records} records, chain intact; its head {verdict.head} seals the first "
            f"{verdict.head_records}, the rest were written after it (the next append seals them)"
        )
    if not verdict.ok:
        sys.exit(1)


def _emit(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2))


def _hint_unknown_groups(index: RunbookIndex, groups: Sequence[str]) -> None:
    """Say so when none of the caller's groups labels any runbook (a typo, the wrong case):
    the search itself cannot tell "nothing matched" from "nothing is visible"."""
    if not index.labelled_groups().intersection(g.strip() for g in groups):
        names = ", ".join(sorted({g.strip() or repr(g) for g in groups}))
        click.echo(
            _one_line(
                f"runbook-rag: no runbook in this index is labelled for group(s) {names}; "
                "group names are exact and case-sensitive"
            ),
            err=True,
        )


_STAGES = {"documents": ("parsing", "documents"), "embedding": ("embedding", "chunks")}


class _ProgressBars:
    """Renders a build's progress on the terminal: one bar per stage, with rate and time left."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._stage: str | None = None

    def __call__(self, progress: Progress) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        if progress.stage != self._stage:
            self.close()
            label, unit = _STAGES.get(progress.stage, (progress.stage, "items"))
            self._stage = progress.stage
            self._bar = tqdm(
                total=progress.total, desc=label, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True
            )
        self._bar.update(progress.done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _register_actions() -> None:
    from .cli_actions import actions, classify_command
    from .cli_mcp import mcp_command

    cli.add_command(classify_command)
    cli.add_command(actions)
    cli.add_command(mcp_command)


_register_actions()


def _check_writable_file(path: Path, what: str) -> None:
    """Refuse at start a file that could never be written (the service would only fail later,
    request by request)."""
    import os

    from .errors import ConfigError

    try:
        usable = (path.is_file() and os.access(path, os.W_OK)) or (
            not path.exists() and path.parent.is_dir() and os.access(path.parent, os.W_OK | os.X_OK)
        )
    except OSError as exc:
        raise ConfigError(f"{what} cannot be used: {exc.strerror}", path=path) from None
    if not usable:
        raise ConfigError(
            f"{what} cannot be written here (not a writable file in a writable folder)", path=path
        )


def _one_line(message: str) -> str:
    """An error message as one printable line, whatever it quotes (newlines, undecodable bytes)."""
    flat = " ".join(message.split())
    return flat.encode("utf-8", "backslashreplace").decode("utf-8")


def _fail(message: str, code: int) -> None:
    click.echo(_one_line(f"runbook-rag: error: {message}"), err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``runbook-rag`` console script."""
    from .errors import RunbookRagError

    started = time.perf_counter()
    for stream in (sys.stdout, sys.stderr):
        # A file name need not be UTF-8: print it escaped rather than fail on it.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    args = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="runbook-rag", standalone_mode=False, obj={"started": started})
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if debug:
            raise
        where = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else "runbook-rag"
        hint = f" (see: {where} --help)" if isinstance(exc, click.UsageError) else ""
        _fail(exc.format_message() + hint, exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except RunbookRagError as exc:
        if debug:
            raise
        _fail(str(exc), exc.exit_code)
    except OSError as exc:
        # A path the library did not check itself: still one line naming it, never a traceback.
        if debug:
            raise
        reason = exc.strerror or str(exc)
        where = exc.filename if exc.filename is not None else "runbook-rag"
        _fail(f"{where}: {reason}", 1)


def run() -> None:
    """The ``runbook-rag`` console script: :func:`main` in a process of its own.

    Once the command has finished, its output is flushed and the exit handlers have run
    (a store's private copy is removed, log handlers are flushed), the process ends without
    tearing down every module it loaded: that teardown (Chroma, onnxruntime, NumPy) costs
    a query command a fifth of a second and changes nothing on disk.
    """
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()  # as the interpreter would before exiting
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)
