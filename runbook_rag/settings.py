"""One settings object: explicit arguments win over ``RUNBOOK_RAG_*`` environment variables,
which win over the defaults.

Settings are set flat (one environment variable per field, as documented) and read by
concern: :attr:`Settings.chroma`, :attr:`Settings.llm`, :attr:`Settings.audit`,
:attr:`Settings.confluence` and :attr:`Settings.limits` are frozen records, and each
stage receives only its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

EncoderKind = Literal["torch", "onnx", "int8"]
# The fp32 export embeds as the model does (cosine 1.0) at 1.7x torch's speed, and is the fastest
# on CPUs without VNNI. The int8 export quantises its weights unsigned, so that every CPU computes
# the same products, and that form has no int8 kernel faster than fp32 on x86: it built the shared
# corpus in 122.7 s against the fp32 export's 112.1 s (benchmarks/build_and_search.py, one run).
DEFAULT_ENCODER: EncoderKind = "onnx"


class Settings(BaseSettings):
    """Configuration of runbook-rag; every field can be set as ``RUNBOOK_RAG_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RUNBOOK_RAG_", extra="ignore", frozen=True)

    index: Path = Field(Path("indexes/default"), description="Index folder.")
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="Embedding model: the bundled all-MiniLM-L6-v2, or a local sentence-transformers folder.",
    )
    batch_size: int = Field(64, ge=1, le=1024, description="Embedding batch size.")
    encoder: EncoderKind = Field(
        DEFAULT_ENCODER,
        description=(
            "What embeds documents: the model's ONNX export in fp32 (onnx, the default), that export "
            "quantised to int8 (int8), or the model in torch. Changing it re-embeds everything; "
            "queries use the same kind."
        ),
    )
    cache_dir: Path | None = Field(
        None,
        description=(
            "Where the libraries runbook-rag loads keep their caches (torch, Hugging Face, "
            "LlamaIndex); default: cache/ in the index folder. See runbook_rag.runtime."
        ),
    )
    k: int = Field(5, ge=1, le=50, description="Default number of search hits.")
    max_file_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Source files larger than this are skipped, unread."
    )
    max_line_chars: int = Field(
        20_000, ge=1000, description="Documents with a longer line are skipped before they are parsed."
    )
    max_chunks_per_document: int = Field(
        2000, ge=1, description="Documents yielding more chunks are skipped (chunking stops there)."
    )
    chroma_host: str | None = Field(
        None, description="A Chroma server's host: generations then live there, not under the index folder."
    )
    chroma_port: int = Field(8000, ge=1, le=65535)
    chroma_ssl: bool = False
    chroma_token: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer <token>'.")
    chroma_tenant: str = "default_tenant"
    chroma_database: str = "default_database"
    retrieval: Literal["hybrid", "dense", "lexical"] = Field(
        "hybrid", description="Ranking: fusion of lexical and dense search, or one of them alone."
    )
    per_document: int = Field(
        0, ge=0, le=50, description="At most this many hits from one runbook (0: no cap)."
    )
    abstain_below: float = Field(
        0.33,
        ge=0.0,
        le=1.0,
        description=(
            "Answers abstain when the best hit's evidence (mean of cosine similarity and "
            "IDF-weighted query-term coverage) is below this; see benchmarks/calibrate_abstention.py."
        ),
    )
    llm_base_url: str | None = Field(
        None,
        description="An OpenAI-compatible chat-completions endpoint for `ask` (unset: extractive answers).",
    )
    llm_model: str | None = Field(None, description="The model name sent to that endpoint.")
    llm_api_key: SecretStr | None = Field(None, description="Its API key (never logged).")
    llm_timeout: float = Field(30.0, gt=0, le=600, description="Seconds before a model call falls back.")
    llm_retries: int = Field(2, ge=0, le=5, description="Retries of a failing model call, with backoff.")
    llm_link_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts a model's answer may link to; other links and images are removed.",
    )
    llm_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='Per model, USD per million tokens: {"name": {"prompt": 0.15, "completion": 0.6}}.',
    )
    audit_log: Path | None = Field(
        None, description="The audit trail (default: audit.log in the index folder)."
    )
    audit_key: SecretStr | None = Field(None, description="HMAC key of the audit chain (at least 16 bytes).")
    audit_key_file: Path | None = Field(None, description="A file holding that key.")
    audit_head: Path | None = Field(
        None,
        description=(
            "The audit trail's sealed head (its record count and last MAC, HMAC'ed): an append "
            "refuses and verification fails when the log no longer ends where the head says. Default: "
            "beside the key file, or in the index folder when the key is RUNBOOK_RAG_AUDIT_KEY, one per "
            "log (see runbook_rag.audit.default_head). Keep it on other storage than the log."
        ),
    )
    audit_keep_query_text: bool = Field(
        True, description="Keep each query (masked) in the audit trail; when false, only its HMAC."
    )
    actions_db: Path | None = Field(
        None,
        description=(
            "Where guarded-action requests and their one-use state live (SQLite; default: "
            "actions.sqlite3 in the index folder, beside the generations, so they survive rebuilds)."
        ),
    )
    grant_ttl: float = Field(
        900.0, gt=0, le=86400, description="Seconds an approval's grant stays valid (default 15 minutes)."
    )
    pending_ttl: float = Field(
        86400.0, gt=0, le=30 * 86400, description="Seconds a proposal waits for approval before it expires."
    )
    confluence_token: SecretStr | None = Field(
        None, description="A Confluence API token (Cloud) or personal access token (Data Center)."
    )
    confluence_user: str | None = Field(
        None, description="The account's e-mail on Confluence Cloud (basic auth); unset: bearer token."
    )

    def cache_path(self, index: Path) -> Path:
        """The cache directory for the index folder ``index``."""
        return self.cache_dir if self.cache_dir is not None else index / "cache"

    @property
    def chroma(self) -> ChromaSettings:
        """Where generations live: a Chroma server when ``host`` is set, else the index folder."""
        return ChromaSettings(
            self.chroma_host,
            self.chroma_port,
            self.chroma_ssl,
            self.chroma_token,
            self.chroma_tenant,
            self.chroma_database,
        )

    @property
    def llm(self) -> LLMSettings:
        """The model that writes answers, and how its calls and replies are governed."""
        return LLMSettings(
            self.llm_base_url,
            self.llm_model,
            self.llm_api_key,
            self.llm_timeout,
            self.llm_retries,
            tuple(self.llm_link_hosts),
            self.llm_prices,
        )

    @property
    def audit(self) -> AuditSettings:
        """The audit trail: its log, key and sealed head."""
        return AuditSettings(
            self.audit_log, self.audit_key, self.audit_key_file, self.audit_head, self.audit_keep_query_text
        )

    @property
    def confluence(self) -> ConfluenceSettings:
        """Credentials for the Confluence REST API."""
        return ConfluenceSettings(self.confluence_token, self.confluence_user)

    @property
    def limits(self) -> SourceLimits:
        """The cost caps of one source document."""
        return SourceLimits(self.max_file_bytes, self.max_line_chars, self.max_chunks_per_document)


@dataclass(frozen=True, slots=True)
class ChromaSettings:
    host: str | None = None
    port: int = 8000
    ssl: bool = False
    token: SecretStr | None = None
    tenant: str = "default_tenant"
    database: str = "default_database"


@dataclass(frozen=True, slots=True)
class LLMSettings:
    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    timeout: float = 30.0
    retries: int = 2
    link_hosts: tuple[str, ...] = ()
    prices: dict[str, dict[str, float]] | None = None


@dataclass(frozen=True, slots=True)
class AuditSettings:
    log: Path | None = None
    key: SecretStr | None = None
    key_file: Path | None = None
    head: Path | None = None
    keep_query_text: bool = True


@dataclass(frozen=True, slots=True)
class ConfluenceSettings:
    token: SecretStr | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class SourceLimits:
    max_file_bytes: int = 5 * 1024 * 1024
    max_line_chars: int = 20_000
    max_chunks_per_document: int = 2000
