"""Secret detectors: detect-secrets' maintained token patterns, and rules of our own for what it lacks.

From detect-secrets (its plugins' ``denylist`` patterns, wrapped so that a match must
not be glued to a longer word): AWS access key ids and quoted secret keys, Azure
storage account keys, SendGrid, Slack, npm (``.npmrc``), GitHub, GitLab, Stripe,
Twilio, Square, OpenAI, Mailchimp, PyPI, Discord and Telegram tokens. Its keyword and
entropy plugins are not used: they flag names and paths in runbooks and miss
passwords that a keyword makes certain.

Our own rules cover what it lacks: PEM private key blocks (the whole block, not the
header line), JWTs whose header decodes to JSON, Google API keys, Slack app tokens and
webhooks, npm tokens anywhere, GitHub fine-grained tokens, Stripe test and webhook
keys, Braintree, Square, Adyen and Checkout.com keys, Vault, DigitalOcean, Shopify and
newer OpenAI and Anthropic keys, Azure ``AccountKey=``/``SharedAccessKey=`` of any
length and SAS ``sig=``, kubeconfig ``client-key-data``/``client-certificate-data``,
docker ``"auth"``, ``mysql -pVALUE``, ``--password VALUE``, ``.netrc`` passwords,
``Authorization`` headers, ``curl -u``, passwords in URLs (parsed, so a password may
contain ``/`` or ``@``), and ``key = value`` pairs: where the key ends in a strong
word (``password``, ``secret``, ``token``, ``api_key``...), the key is the evidence
and any non-placeholder value is masked; where the strong word is followed by another
word (``secret_path``, ``token_bucket``, ``password_policy``), the value is a name,
path or setting and is kept.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .cardholder import Finding

_PLACEHOLDER = re.compile(
    # The whole value is a template variable, a <placeholder>, a YAML tag, dots or one character repeated.
    r"^(?:\$\{?(?:[A-Z_][A-Z0-9_]*|[a-z_][a-z0-9_]*)\}?|\{\{.*\}\}|<[^<>]*>|%[A-Za-z_]+%|%[sd]|![A-Za-z]+"
    r"|(.)\1*|\.\.\.|…)$"
    # Or it holds a template, a command substitution, a mask, or an example word.
    r"|\$\{|\{\{|\$\(|\*\*\*\*|^\[(?:SECRET|PAN|CVV|TRACK)|^\$[A-Za-z_][A-Za-z0-9_]*[/.:]"
    r"|(?i:example|changeme|change_me|placeholder|dummy|redacted|xxxx"
    r"|(?:^|[_-])your[_-]|^your(?:pass|password|token|key|secret|api)|(?:^|[_-])sample(?:[_-]|$))",
)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def is_placeholder(value: str) -> bool:
    """Template variables, angle-bracket placeholders, masks and example values are not secrets."""
    value = value.strip("\"'`")
    return not value or bool(_PLACEHOLDER.search(value)) or bool(_UUID.match(value))


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(value)
    return -sum(c / len(value) * math.log2(c / len(value)) for c in counts.values())


def _jwt_header_is_json(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict)


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector: a pattern, the group that is the secret, and an optional check of it.

    ``trigger`` (lower-case substrings) and ``boundary`` keep scanning fast: a pattern is
    run only over text that holds one of its triggers, and patterns start with their
    literal prefix (which the regex engine searches for quickly) while the "not glued to a
    longer word on the left" test is done here instead of with a leading look-behind.
    """

    kind: str
    pattern: re.Pattern[str]
    group: int | None = None  # None: the first group that matched, else the whole match
    check: Callable[[str], bool] | None = None
    skip_placeholders: bool = True
    boundary: bool = False
    trigger: tuple[str, ...] = ()

    def find(self, text: str, lowered: str) -> Iterator[Finding]:
        if self.trigger and not any(t in lowered for t in self.trigger):
            return
        for m in self.pattern.finditer(text):
            if self.boundary and m.start() > 0 and _WORD_CHAR.match(text[m.start() - 1]):
                continue
            group = self.group
            if group is None:
                group = next((g for g in range(1, self.pattern.groups + 1) if m.group(g) is not None), 0)
            value = m.group(group)
            if self.skip_placeholders and is_placeholder(value):
                continue
            if self.check is not None and not self.check(value):
                continue
            yield Finding(m.start(group), m.end(group), self.kind, f"[SECRET {self.kind}]")


_WORD_CHAR = re.compile(r"[A-Za-z0-9_]")


# Lower-case words joined by dashes, underscores, dots or slashes ("super-secret-key",
# "wrong-password", "prometheus-k8s-dockercfg-6wl6b", "ledger-api/credentials"): resource
# names, paths and made-up examples, not credentials.
_WORDY = re.compile(r"^(?:[a-z]+|[a-z0-9]{1,5})(?:[-_./](?:[a-z]+|[a-z0-9]{1,5}))+$")
_NOT_SECRET_STARTS = ("/", "./", "~/", "http://", "https://", "file:", "@/", "@./", "@~")


def _words(text: str) -> list[str]:
    return text.split()


# An environment variable's name: a reference to a secret, not the secret.
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
# Words that fill a password field in documentation and configuration without being one.
_NOT_PASSWORDS = frozenset(
    _words(
        """
        required optional mandatory true false null none nil yes no on off empty unset blank string str text
        int integer bool boolean number secret secrets password passwords passwd token tokens key keys value
        values redacted masked hidden generated random auto automatic default env environment file files
        vault prompt ask stdin secure plain plaintext encrypted base64 hex bcrypt sha256 sha512 md5 argon2
        argon2id scrypt pbkdf2 disabled enabled see below above here there same unknown any all needed
        provided set omitted bearer basic oauth oauth2 jwt kerberos ldap saml none_set notset undefined todo
        tbd
        """
    )
)


def _looks_like_a_value(value: str) -> bool:
    """A password a keyword vouches for, however weak: not a placeholder word, a name, a
    path, a URL, an environment variable's name or a small number."""
    has_digit, has_alpha = any(c.isdigit() for c in value), any(c.isalpha() for c in value)
    return (
        (len(value) >= 4 or (len(value) == 3 and has_digit and has_alpha))
        and value.lower() not in _NOT_PASSWORDS
        and not _WORDY.match(value)
        and not _ENV_NAME.match(value)
        and not value.startswith(_NOT_SECRET_STARTS)
        and not re.fullmatch(r"[0-9]{1,5}(?:[smhdw]|ms)?|[0-9]*\.[0-9]+|[0-9]+[kKmMgG]i?[bB]?", value)
    )


# Longer alternatives first: "secret_key" is one key word, not "secret" followed by "_key".
_STRONG = (
    r"secret[_-]?access[_-]?key|secret[_-]?key|client[_-]?secret|webhook[_-]?secret|private[_-]?key"
    r"|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|signing[_-]?key|encryption[_-]?key|master[_-]?key"
    r"|account[_-]?key|storage[_-]?key"
    r"|password|passwd|passphrase|passcode|pass|pwd|secret|token|credentials?"
)
# ": ", "=", "=>", "is" and "was" ("the root password is ..."), with the quotes, Markdown
# emphasis and JSON escapes that may surround them.
_ASSIGN = r"[\"'*`\\]{0,4}(?:\s*(?::|=|:=|=>|->)|\s+(?:is|was)\b)[*`\\]{0,3}\s*"
# A bare value ends at a blank, a quote or a bracket; a comma or semicolon ends it only
# where the next key begins ("Password=x;Server=y"), so "Ab12;cd34" is masked whole.
_BARE = r"(?:[^\s\"'`,;()\[\]{}<>\\]|[,;](?![ \t]|$|[A-Za-z_][A-Za-z0-9_ ]*=)){1,200}+"
_VALUE = rf"(?:\"([^\"\n]{{1,200}})\"|'([^'\n]{{1,200}})'|({_BARE})(?!\())"
_KEYWORD_PAIR = re.compile(
    rf"(?=[pPsStTcCwWaAkKeEmM])(?i:{_STRONG})([A-Za-z0-9_.-]{{0,32}}){_ASSIGN}{_VALUE}"
)
# After the strong word, a suffix that still names the value itself ("DB_PASSWORD_VALUE",
# "TOKEN_B64"): the key is the evidence.
_VALUE_SUFFIX = re.compile(r"(?i)(?:[_.-]?(?:value|plain|plaintext|raw|str|string|b64|base64|[0-9]+))?")
# Words after the strong word that name something else: the value is a name, path or setting.
_OTHER_WORDS = frozenset(
    _words(
        """
        path paths policy policies name names bucket header headers id ids ttl url uri file files dir length
        size count type ref mount version expiry expires expiration age timeout endpoint rotation arn limit
        format field store manager provider engine backend label prefix source kind mode hint reset scope
        audience issuer hash hashing algorithm algo encoder encoding strength complexity env var vars min
        max minimum maximum lifetime validity rules rule regex pattern enabled required location key
        """
    )
)


def _suffix_words(suffix: str) -> list[str]:
    """The words of a key's suffix, split at separators and camelCase ("HashAlgorithm")."""
    return [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+", suffix)]


def _keyword_pairs(text: str) -> Iterator[Finding]:
    for m in _KEYWORD_PAIR.finditer(text):
        s = m.start()
        word = text[s : m.start(1)].lower()  # the strong word itself
        # A short strong word glued after letters ends a longer word ("bypass", "compass",
        # "oldpwd"); a long one is still the key's own word ("PGPASSWORD", "dbpasswd").
        glued = s > 0 and text[s - 1].isalpha() and not (text[s - 1].islower() and text[s].isupper())
        if glued and word in ("pass", "pwd"):
            continue
        g = next(g for g in (2, 3, 4) if m.group(g) is not None)
        value, suffix = m.group(g), m.group(1)
        if is_placeholder(value):
            continue
        words = _suffix_words(suffix)
        prose = re.search(r"\s(?:is|was)\b", text[m.end(1) : m.start(g)]) is not None
        if prose and not re.search(r"[0-9]|[^\w]", value.strip("*_`.,;:!?()")):
            continue  # "the token is rotated.": in prose, only a value with digits or symbols
        # A password may be a plain word ("sunflower"); a token, key or secret is generated.
        if not word.startswith(("pass", "pwd")) and re.fullmatch(r"[a-z]+", value):
            continue
        if _VALUE_SUFFIX.fullmatch(suffix):
            if _looks_like_a_value(value):
                yield Finding(m.start(g), m.end(g), "generic_secret", "[SECRET generic_secret]")
        elif not any(w in _OTHER_WORDS or w in ("s", "es") for w in words) and _looks_random(value):
            yield Finding(m.start(g), m.end(g), "generic_secret", "[SECRET generic_secret]")


def _looks_random_token(value: str) -> bool:
    return entropy(value) >= 3.0 and not _WORDY.match(value) and any(c.isdigit() for c in value)


def _looks_random(value: str) -> bool:
    return (
        len(value) >= 8
        and entropy(value) >= 3.0
        and not _WORDY.match(value)
        and not value.startswith(_NOT_SECRET_STARTS)
        and not _ENV_NAME.match(value)
        and "/" not in value
    )


# ---------------------------------------------------------------- passwords in URLs

_URL = re.compile(r"://[^\s\"'<>`]{1,1024}")
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]{1,15}$")
# What follows the userinfo's "@": a host name or [IPv6], an optional port, then the path.
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?(?:[/?#,].*)?$"
)


def _url_passwords(text: str) -> Iterator[Finding]:
    """``scheme://user:password@host``, parsed: the userinfo ends at the last ``@`` that is
    followed by a host, so a password may itself hold ``/``, ``@`` or ``:``."""
    for m in _URL.finditer(text):
        if not _SCHEME.search(text, max(0, m.start() - 16), m.start()):
            continue
        rest = m.group()[3:]
        at = rest.rfind("@")
        while at > 0 and not _HOST.match(rest[at + 1 :]):
            at = rest.rfind("@", 0, at)
        if at <= 0:
            continue
        user, colon, password = rest[:at].partition(":")
        if not colon or not password or "/" in user:
            continue
        if re.match(r"^[0-9]{1,5}(?:/|$)", password):
            continue  # host:port/path@... : a port, not a password
        if is_placeholder(password):
            continue
        start = m.start() + 3 + len(user) + 1
        yield Finding(start, start + len(password), "url_password", "[SECRET url_password]")


# ---------------------------------------------------------------- .netrc

# machine HOST [login USER] [account A] [port P] password VALUE, on one line or across lines.
_NETRC = re.compile(
    r"(?:machine[ \t]+\S+|default)(?:\s+(?:login|account|port)[ \t]+\S+)+\s+password[ \t]+(\S+)"
)


def _netrc_passwords(text: str) -> Iterator[Finding]:
    """``.netrc`` entries: the password that follows ``machine`` (and ``login``)."""
    for m in _NETRC.finditer(text):
        if m.start() > 0 and not text[m.start() - 1].isspace():
            continue
        value = m.group(1)
        if not is_placeholder(value) and _looks_like_a_value(value):
            yield Finding(m.start(1), m.end(1), "netrc_password", "[SECRET netrc_password]")


# ---------------------------------------------------------------- the rule table

_E = r"(?![A-Za-z0-9_])"  # not glued to a longer word on the right
_QUOTED_OR_BARE = r"(?:'([^'\n]+)'|\"([^\"\n]+)\"|([^\s'\"|;&]+))"

_OWN_RULES: tuple[Rule, ...] = (
    Rule(
        "private_key",
        re.compile(
            r"-----BEGIN[A-Z ]*PRIVATE KEY( BLOCK)?-----"
            r"(?:.*?-----END[A-Z ]*PRIVATE KEY( BLOCK)?-----|(?:\n[A-Za-z0-9+/=:\- ]*)*)",
            re.S,
        ),
        group=0,
        skip_placeholders=False,
        trigger=("private key",),
    ),
    Rule(
        "slack_webhook",
        re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}"),
    ),
    Rule("slack_token", re.compile(r"xox[abeoprs]-[A-Za-z0-9-]{10,}"), boundary=True),
    Rule("slack_app_token", re.compile(r"xapp-[0-9]-[A-Za-z0-9-]{10,}"), boundary=True),
    Rule(
        "jwt",
        re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        check=_jwt_header_is_json,
        boundary=True,
    ),
    Rule(
        "aws_access_key",
        re.compile(r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"),
        boundary=True,
        trigger=("akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva", "abia", "acca"),
    ),
    Rule(
        "aws_secret_key",
        re.compile(
            r"(?i:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key|SecretAccessKey)"
            r"[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        trigger=("secret",),
    ),
    Rule(
        "github_token",
        re.compile(rf"(?:gh[pousr]_[A-Za-z0-9]{{36,255}}|github_pat_[A-Za-z0-9_]{{22,255}}){_E}"),
        boundary=True,
    ),
    Rule("google_api_key", re.compile(r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"), boundary=True),
    Rule("npm_token", re.compile(rf"npm_[A-Za-z0-9]{{36}}{_E}"), boundary=True),
    Rule("sendgrid_key", re.compile(r"SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}"), boundary=True),
    Rule(
        "stripe_key",
        re.compile(rf"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{{16,}}{_E}|whsec_[A-Za-z0-9]{{24,}}{_E}"),
        boundary=True,
        trigger=("k_live_", "k_test_", "whsec_"),
    ),
    Rule(
        "braintree_token",
        re.compile(r"access_token\$(?:production|sandbox)\$[a-z0-9]{16}\$[a-f0-9]{32}\b"),
        boundary=True,
    ),
    Rule(
        "square_token",
        re.compile(rf"(?:sq0(?:atp|csp)-[A-Za-z0-9_-]{{22,60}}|EAAA[A-Za-z0-9_-]{{56,60}}){_E}"),
        boundary=True,
        trigger=("sq0", "eaaa"),
    ),
    Rule("adyen_key", re.compile(r"AQE[A-Za-z0-9]{4,}\.[A-Za-z0-9+/=_.-]{40,}"), boundary=True),
    Rule(
        "checkout_key",
        re.compile(
            rf"sk_(?:sbox_)?[a-z0-9]{{26,}}{_E}"
            rf"|sk_(?:test_)?[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}{_E}"
        ),
        boundary=True,
    ),
    Rule("vault_token", re.compile(r"hv[sbr]\.[A-Za-z0-9_-]{24,}"), boundary=True),
    Rule("digitalocean_token", re.compile(rf"do[opr]_v1_[a-f0-9]{{64}}{_E}"), boundary=True),
    Rule("shopify_token", re.compile(rf"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{{32}}{_E}"), boundary=True),
    Rule(
        "openai_key",
        re.compile(r"sk-(?:proj|svcacct|admin|ant-[a-z0-9]{2,8})-[A-Za-z0-9_-]{20,}"),
        boundary=True,
    ),
    Rule(
        "azure_storage_key",
        re.compile(r"(?i:AccountKey|SharedAccessKey)\s*=\s*([A-Za-z0-9+/]{20,}={0,2})"),
        trigger=("accesskey", "accountkey"),
    ),
    Rule("azure_sas", re.compile(r"sig=([A-Za-z0-9%+/=]{16,})"), boundary=False, trigger=("sig=",)),
    Rule(
        "kubeconfig_credential",
        re.compile(r"client-(?:key|certificate)-data[\"']?\s*:\s*[\"']?([A-Za-z0-9+/]{16,}={0,2})"),
        boundary=True,
    ),
    Rule(
        "docker_auth",
        re.compile(r"\"(?:auth|identitytoken|registrytoken)\"\s*:\s*\"([A-Za-z0-9+/=._-]{8,})\""),
        trigger=('auth"', 'token"'),
    ),
    Rule(
        "mysql_password",
        re.compile(
            r"(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump|mysqlsh|mysqlimport|mysqlcheck|mysqlbinlog)\b"
            rf"[^\n|;&]*?\s-p{_QUOTED_OR_BARE}"
        ),
        boundary=True,
        trigger=("mysql", "mariadb"),
    ),
    Rule(
        "cli_password",
        re.compile(
            r"(?<![^\s])--?(?:[a-z0-9]+-)*(?:password|passwd|pass|secret|token|api-key|account-key|access-key"
            r"|secret-key|client-secret)(?:[ \t]+|=)" + _QUOTED_OR_BARE
        ),
        check=lambda v: not v.startswith("-") and _looks_like_a_value(v),
        trigger=("-pass", "-secret", "-token", "-key", "-client-secret"),
    ),
    Rule(
        "auth_header",
        re.compile(
            r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token|digest)\s+([A-Za-z0-9._~+/=-]{8,})"
        ),
        trigger=("authorization",),
    ),
    Rule(
        "api_key_header",
        re.compile(
            r"(?i:x-api-key|x-auth-token|api-key|x-vault-token)[\"']?\s*:\s*[\"']?([A-Za-z0-9._~+/=-]{12,})"
        ),
        check=_looks_random_token,
        trigger=("api-key", "x-auth-token", "x-vault-token"),
    ),
    Rule(
        "tool_password",
        re.compile(
            r"(?:(?:docker|podman|nerdctl|buildah|skopeo|helm[ \t]+registry)[ \t]+login\b[^\n|;&]*?\s-p"
            r"|redis-cli\b[^\n|;&]*?\s-a|sshpass[ \t]+-p)[ \t]*" + _QUOTED_OR_BARE
        ),
        check=lambda v: not v.startswith("-"),
        trigger=("login", "redis-cli", "sshpass"),
    ),
    Rule(
        "npm_token",
        re.compile(r":_auth(?:Token)?[ \t]*=[ \t]*\"?([A-Za-z0-9+/=._-]{16,})"),
        check=lambda v: not v.startswith("$"),
        skip_placeholders=False,  # legacy npm tokens are UUIDs
        trigger=(":_auth",),
    ),
    Rule(
        "generic_secret",
        # <password>...</password>, <dbPassword>...</dbPassword>
        re.compile(rf"<(?P<tag>[A-Za-z0-9_:.-]{{0,32}}(?i:{_STRONG}))>(?P<value>[^<\n]{{1,200}})</(?P=tag)>"),
        group=2,
        check=lambda v: _looks_like_a_value(v.strip()),
        trigger=("</",),
    ),
    Rule(
        "generic_secret",
        # key="DbPassword" value="...", or "- name: DB_PASSWORD" then "value: ..." (Kubernetes env)
        re.compile(
            rf"(?:key|name)\s*[=:]\s*[\"']?[A-Za-z0-9_.-]{{0,32}}(?i:{_STRONG})[\"']?[ \t,]*(?:\n[ \t-]*)?"
            rf"value\s*[=:]\s*{_QUOTED_OR_BARE}"
        ),
        check=_looks_like_a_value,
        trigger=("value",),
    ),
    Rule(
        "generic_secret",
        # Dockerfile: ENV DB_PASSWORD value
        re.compile(rf"(?m)^[ \t]*ENV[ \t]+[A-Za-z0-9_]{{0,32}}(?i:{_STRONG})[ \t]+{_QUOTED_OR_BARE}"),
        check=_looks_like_a_value,
        trigger=("env ",),
    ),
    Rule(
        "pgpass_password",
        # ~/.pgpass: host:port:database:user:password
        re.compile(r"(?m)^[ \t]*[A-Za-z0-9_.*-]+:(?:[0-9]{1,5}|\*):[^\s:]+:[^\s:]+:(\S+)[ \t]*$"),
        check=_looks_like_a_value,
    ),
    Rule(
        "curl_user",
        re.compile(r"curl\b[^\n]*?\s(?:-u|--user)\s*[\"']?[^\s:\"']{1,64}:([^\s\"']{1,128})"),
        boundary=True,
    ),
)

# Lower-case literals that every match of a detect-secrets pattern of that kind contains.
_DETECT_SECRETS_TRIGGERS = {
    "aws_access_key": ("a3t", "abia", "acca", "akia", "asia", "aws"),
    "azure_storage_key": ("accountkey",),
    "github_token": ("gh",),
    "gitlab_token": ("gl", "gr1348941"),
    "mailchimp_key": ("-us",),
    "npm_token": ("_authtoken",),
    "openai_key": ("t3blbkfj",),
    "pypi_token": ("pypi-",),
    "sendgrid_key": ("sg.",),
    "slack_token": ("xox", "hooks.slack"),
    "square_token": ("sq0csp",),
    "stripe_key": ("k_live_",),
    "twilio_key": ("ac", "sk"),
}


@functools.cache
def _detect_secrets_rules() -> tuple[Rule, ...]:
    """detect-secrets' token patterns, loaded once (the package takes ~0.1 s to import)."""
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
    from detect_secrets.plugins.github_token import GitHubTokenDetector
    from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
    from detect_secrets.plugins.mailchimp import MailchimpDetector
    from detect_secrets.plugins.npm import NpmDetector
    from detect_secrets.plugins.openai import OpenAIDetector
    from detect_secrets.plugins.pypi_token import PypiTokenDetector
    from detect_secrets.plugins.sendgrid import SendGridDetector
    from detect_secrets.plugins.slack import SlackDetector
    from detect_secrets.plugins.square_oauth import SquareOAuthDetector
    from detect_secrets.plugins.stripe import StripeDetector
    from detect_secrets.plugins.twilio import TwilioKeyDetector

    plugins: dict[str, Any] = {
        "aws_access_key": AWSKeyDetector,
        "azure_storage_key": AzureStorageKeyDetector,
        "github_token": GitHubTokenDetector,
        "gitlab_token": GitLabTokenDetector,
        "mailchimp_key": MailchimpDetector,
        "npm_token": NpmDetector,
        "openai_key": OpenAIDetector,
        "pypi_token": PypiTokenDetector,
        "sendgrid_key": SendGridDetector,
        "slack_token": SlackDetector,
        "square_token": SquareOAuthDetector,
        "stripe_key": StripeDetector,
        "twilio_key": TwilioKeyDetector,
    }
    # Their patterns are unanchored; a match glued to a longer word on its left is not a token.
    return tuple(
        Rule(kind, pattern, boundary=True, trigger=_DETECT_SECRETS_TRIGGERS[kind])
        for kind, plugin in plugins.items()
        for pattern in plugin.denylist
    )


# Text none of detect-secrets' patterns can match: each needs 20 characters with no blank
# between them, or holds "xox" or "_authToken" (tests/test_secret_rules.py checks every
# pattern). A short question thus never pays for importing detect-secrets.
_MAY_HOLD_TOKEN = re.compile(r"\S{20}|xox|_authtoken", re.IGNORECASE)


def find_secrets(text: str) -> Iterator[Finding]:
    """Every secret finding in ``text`` (already normalised)."""
    lowered = text.lower()
    rules = _OWN_RULES
    if _MAY_HOLD_TOKEN.search(text):
        rules = (*_OWN_RULES, *_detect_secrets_rules())
    for rule in rules:
        yield from rule.find(text, lowered)
    yield from _keyword_pairs(text)
    yield from _url_passwords(text)
    yield from _netrc_passwords(text)
