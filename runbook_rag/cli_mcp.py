"""``runbook-rag mcp``: the index served to agents over the Model Context Protocol.

A thin shell over :mod:`runbook_rag.mcp_server`: it names the caller (stdio) or the tokens
file (HTTP), opens the index once, and serves until the client goes away or the process is
interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from .cli import PATH, TEXT, _hint_unknown_groups, _HostType, _index_option


@click.command("mcp")
@_index_option
@click.option("--user", type=TEXT, help="stdio: the caller's user id (with --group).")
@click.option(
    "--group", "groups", type=TEXT, multiple=True, help="stdio: a group of the caller (repeatable)."
)
@click.option(
    "--token-file",
    type=PATH,
    help="stdio: a file holding the caller's bearer token, verified against --tokens.",
)
@click.option(
    "--tokens",
    "tokens_file",
    type=PATH,
    help="The hashed tokens file of `serve`; a token must list mcp among its endpoints.",
)
@click.option("--http", "over_http", is_flag=True, help="Serve streamable HTTP at /mcp instead of stdio.")
@click.option("--host", type=_HostType(), default="127.0.0.1", show_default=True, help="With --http.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="With --http.")
def mcp_command(
    index_path: Path | None,
    user: str | None,
    groups: Sequence[str],
    token_file: Path | None,
    tokens_file: Path | None,
    over_http: bool,
    host: str,
    port: int,
) -> None:
    """Serve search, ask, passages and proposals to agents over MCP.

    Over stdio the caller is fixed at start: --user and --group, or --token-file with --tokens.
    With --http, each request's bearer token is the caller (--tokens). No tool takes a user or
    groups; every call is audited with interface mcp.
    """
    from .index import RunbookIndex
    from .mcp_server import (
        INTERFACE,
        MCP,
        load_mcp_tokens,
        principal_of_token_file,
        require_mcp,
        serve_http,
        serve_stdio,
    )
    from .records import Principal

    require_mcp()
    if over_http:
        if user or groups or token_file:
            raise click.UsageError(
                "with --http each request's token is the caller: drop --user/--group/--token-file"
            )
        if tokens_file is None:
            raise click.UsageError("--http needs --tokens FILE")
        tokens = load_mcp_tokens(tokens_file)  # before the index: a bad tokens file fails at once
        if not any(MCP in caller.endpoints for caller in tokens.values()):
            raise click.UsageError(f"no token in {tokens_file} lists mcp among its endpoints")
        serve_http(RunbookIndex(index_path, interface=INTERFACE), tokens, host=host, port=port)
        return
    if token_file is not None:
        if user or groups:
            raise click.UsageError("give --token-file or --user/--group, not both")
        if tokens_file is None:
            raise click.UsageError("--token-file needs --tokens FILE to verify it against")
        principal = principal_of_token_file(token_file, tokens_file)
        index = RunbookIndex(index_path, interface=INTERFACE)
    else:
        if not user or not groups:
            raise click.UsageError("name the caller: --user ID --group G (repeatable), or --token-file")
        principal = Principal(user, frozenset(groups))
        index = RunbookIndex(index_path, interface=INTERFACE)
        _hint_unknown_groups(index, groups)
    serve_stdio(index, principal)
