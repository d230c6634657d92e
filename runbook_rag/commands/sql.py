"""SQL as sqlglot parses it: every statement of a script, and psql's meta-commands."""

from __future__ import annotations

import re
from typing import Any

from .risks import Classification, Risk, _c, _combine

# Functions that act on the server from inside a SELECT.
_SQL_FUNCTIONS: dict[str, Risk] = {
    "pg_terminate_backend": "destructive",
    "lo_unlink": "destructive",
    "pg_drop_replication_slot": "destructive",
    "pg_replication_origin_drop": "destructive",
    "pg_truncate_visibility_map": "destructive",
    "pg_cancel_backend": "change",
    "pg_reload_conf": "change",
    "set_config": "change",
    "nextval": "change",
    "setval": "change",
    "pg_switch_wal": "change",
    "pg_switch_xlog": "change",
    "pg_create_restore_point": "change",
    "pg_promote": "change",
    "pg_wal_replay_pause": "change",
    "pg_wal_replay_resume": "change",
    "pg_xlog_replay_pause": "change",
    "pg_xlog_replay_resume": "change",
    "pg_rotate_logfile": "change",
    "pg_log_backend_memory_contexts": "change",
    "pg_backup_start": "change",
    "pg_backup_stop": "change",
    "pg_start_backup": "change",
    "pg_stop_backup": "change",
    "pg_create_physical_replication_slot": "change",
    "pg_create_logical_replication_slot": "change",
    "pg_replication_slot_advance": "change",
    "pg_advisory_lock": "change",
    "pg_try_advisory_lock": "change",
    "pg_advisory_unlock": "change",
    "pg_advisory_unlock_all": "change",
    "lo_import": "change",
    "lo_export": "change",
    "lo_create": "change",
    "pg_file_write": "change",
    "pg_file_unlink": "destructive",
    "pg_file_rename": "change",
    "pg_import_system_collations": "change",
    "dblink_exec": "unknown",
    "dblink": "unknown",
    "query_to_xml": "unknown",
    "pg_catalog.set_config": "change",
}
# Functions that only look: sizes, positions, status, formatting. Anything else is unknown,
# since a user-defined function may write.
_SQL_READ_FUNCTIONS = re.compile(
    r"^(pg_catalog\.)?(pg_size_pretty|pg_\w*_size|pg_size_bytes|pg_is_\w+|pg_last_\w+|pg_current_\w+|"
    r"pg_stat_get_\w+|pg_get_\w+|pg_wal_lsn_diff|pg_xlog_location_diff|pg_postmaster_start_time|"
    r"pg_backend_pid|pg_blocking_pids|pg_conf_load_time|pg_has_role|has_\w+_privilege|pg_table_is_visible|"
    r"pg_encoding_to_char|pg_walfile_name|pg_xlogfile_name|pg_control_\w+|pg_ls_\w+|pg_read_file|"
    r"pg_stat_file|pg_tablespace_location|pg_relation_filenode|pg_relation_filepath|pg_typeof|"
    r"pg_column_size|pg_jit_available|pg_notification_queue_usage|pg_safe_snapshot_blocking_pids|"
    r"pg_replication_origin_progress|pg_visible_in_snapshot|pg_snapshot_xmin|pg_current_snapshot|"
    r"current_setting|current_database|current_schema|current_user|session_user|version|age|mxid_age|"
    r"txid_current_if_assigned|txid_snapshot_xmin|txid_status|to_char|to_timestamp|to_date|date_trunc|"
    r"date_part|extract|format|quote_ident|quote_literal|regexp_replace|regexp_match|split_part|"
    r"string_agg|array_agg|array_length|unnest|generate_series|json_agg|jsonb_agg|jsonb_pretty|"
    r"row_to_json|to_json|to_jsonb|json_build_object|jsonb_build_object|inet_server_addr|"
    r"inet_server_port|inet_client_addr|pg_postmaster_start_time|clock_timestamp|statement_timestamp|"
    r"justify_interval|pg_sleep|obj_description|col_description|format_type|pg_describe_object|"
    r"pg_identify_object|pg_filenode_relation|pg_index_column_has_property|left|right|lpad|rpad|"
    r"substring|replace|trim|btrim|length|char_length|percentile_cont|percentile_disc|round|"
    r"greatest|least|nullif|abs|ceil|floor|now|coalesce)$",
    re.IGNORECASE,
)
_SQL_COMMANDS: dict[str, Risk] = {
    "SHOW": "read",
    "VACUUM": "change",
    "ANALYZE": "change",
    "CHECKPOINT": "change",
    "REINDEX": "change",
    "CLUSTER": "change",
    "REFRESH": "change",
    "COMMENT": "change",
    "NOTIFY": "change",
    "LISTEN": "read",
    "DISCARD": "read",
    "RESET": "read",
    "LOCK": "change",
    "SECURITY": "change",
    "CREATE": "change",
    "ALTER": "change",
    "REASSIGN": "change",
    "IMPORT": "change",
    "PREPARE": "change",
    "DEALLOCATE": "read",
    "FETCH": "read",
    "DECLARE": "read",
    "CLOSE": "read",
}
_PSQL_META = re.compile(
    r"^\\(d\w*\+?|l\+?|list|x|timing|conninfo|c|connect|q|\?|h|pset|echo|set|unset|encoding|a|t|H|f|g|watch|du|dn|df|dx|dp|z|sf|sv|password|p|r)$"
)


def classify_sql(text: str, *, dialect: str = "postgres") -> Classification:
    """The risk of a SQL script: every statement, psql meta-commands included."""
    parts: list[Classification] = []
    sql_lines: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("\\"):
            parts.append(_psql_meta(stripped))
        else:
            sql_lines.append(line)
    script = "\n".join(sql_lines)
    # a psql variable such as :'name' or :name is a value, not syntax
    script = re.sub(r":'?\"?(\w+)'?\"?", r"'\1'", script)
    if script.strip():
        parts.extend(_sql_statements(script, dialect))
    return _combine(parts) if parts else _c("read", "sql.empty")


def _psql_meta(line: str) -> Classification:
    command = line.split()[0]
    if command in (
        "\\!",
        "\\i",
        "\\ir",
        "\\include",
        "\\gexec",
        "\\o",
        "\\out",
        "\\w",
        "\\write",
        "\\e",
        "\\edit",
    ):
        return _c("unknown", f"psql.meta{command.replace(chr(92), '.')}")
    if command in ("\\copy",):
        return _c("change", "psql.meta.copy")
    if _PSQL_META.match(command):
        return _c("read", "psql.meta")
    return _c("unknown", "psql.meta.unknown")


def _sql_statements(script: str, dialect: str) -> list[Classification]:
    import logging

    import sqlglot
    from sqlglot import exp

    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    try:
        statements = [s for s in sqlglot.parse(script, read=dialect) if s is not None]
    except Exception:  # sqlglot raises ParseError, TokenError and others: all are unknown
        return [_c("unknown", "parse-error")]
    # a comment after the last semicolon parses as an empty statement of its own
    statements = [s for s in statements if not isinstance(s, exp.Semicolon)]
    return [_sql_statement(statement, exp, dialect) for statement in statements]


def _sql_statement(statement: Any, exp: Any, dialect: str) -> Classification:
    if isinstance(statement, exp.Command):
        keyword = str(statement.this).upper()
        expression = statement.expression
        rest = expression if isinstance(expression, str) else getattr(expression, "name", "")
        if keyword == "EXPLAIN":
            match = re.match(r"^\s*(\(([^)]*)\)|ANALYZE\b|VERBOSE\b|\s)*", rest, re.IGNORECASE)
            options = match.group(0) if match else ""
            if re.search(r"\banalyze\b(?!\s+(false|off))", options, re.IGNORECASE):
                inner = _combine(_sql_statements(rest[len(options) :], dialect))
                return Classification(inner.risk, ("sql.explain-analyze", *inner.reasons))
            return _c("read", "sql.explain")
        if keyword == "ALTER" and re.match(r"\s*SYSTEM\b", rest, re.IGNORECASE):
            return _c("change", "sql.alter-system")
        if keyword in ("DO", "CALL", "EXECUTE", "COPY"):
            return _c("unknown", f"sql.{keyword.lower()}")
        if keyword in ("DROP", "TRUNCATE", "DELETE"):
            return _c("destructive", f"sql.{keyword.lower()}")
        risk = _SQL_COMMANDS.get(keyword)
        return _c(risk, f"sql.{keyword.lower()}") if risk else _c("unknown", f"sql.{keyword.lower()}")
    if isinstance(statement, exp.Column) and statement.name.upper() in _SQL_COMMANDS:
        keyword = statement.name.upper()
        return _c(_SQL_COMMANDS[keyword], f"sql.{keyword.lower()}")
    parts: list[Classification] = []
    for node in statement.walk():
        parts.extend(_sql_node(node, exp))
    top = (
        exp.Select,
        exp.Union,
        exp.Intersect,
        exp.Except,
        exp.Subquery,
        exp.Set,
        exp.Transaction,
        exp.Commit,
        exp.Rollback,
        exp.Describe,
        exp.Use,
        exp.Values,
        exp.Pragma,
    )
    if not parts and not isinstance(statement, top) and not isinstance(statement, (exp.Analyze,)):
        parts.append(_c("unknown", f"sql.statement:{type(statement).__name__.lower()}"))
    if isinstance(statement, exp.Analyze):
        parts.append(_c("change", "sql.analyze"))
    return _combine(parts or [_c("read", "sql.select")])


def _sql_node(node: Any, exp: Any) -> list[Classification]:
    if isinstance(node, exp.Drop):
        return [_c("destructive", "sql.drop")]
    if isinstance(node, exp.TruncateTable):
        return [_c("destructive", "sql.truncate")]
    if isinstance(node, exp.Delete):
        return [_c("destructive", "sql.delete" if node.args.get("where") else "sql.delete-all")]
    if isinstance(node, exp.Update):
        return [_c("change", "sql.update") if node.args.get("where") else _c("destructive", "sql.update-all")]
    if isinstance(node, (exp.Insert, exp.Merge)):
        return [_c("change", f"sql.{type(node).__name__.lower()}")]
    if isinstance(node, (exp.Create, exp.Alter, exp.Grant, exp.Revoke, exp.Into)):
        return [_c("change", f"sql.{type(node).__name__.lower()}")]
    if isinstance(node, exp.Copy):
        kind = node.args.get("kind")  # True: COPY ... FROM
        files = [f.name for f in node.args.get("files") or []]
        if not kind and files and all(f.upper() == "STDOUT" for f in files):
            return [_c("read", "sql.copy-stdout")]
        return [_c("change", "sql.copy")]
    if isinstance(node, exp.Lock):
        return [_c("change", "sql.lock")]
    if isinstance(node, exp.Anonymous):
        name = str(node.name).lower()
        risk = _SQL_FUNCTIONS.get(name)
        if risk:
            return [_c(risk, f"sql.function.{name}")]
        if not _SQL_READ_FUNCTIONS.match(name):
            return [_c("unknown", f"sql.function:{name}")]
    return []
