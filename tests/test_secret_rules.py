"""Secrets in the shapes runbooks, tickets and config dumps carry them; names and settings stay readable."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_rag.redaction import redact
from runbook_rag.secret_rules import _MAY_HOLD_TOKEN, Rule, _detect_secrets_rules

PEM_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBq7runbookFAKEkey\n-----END EC PRIVATE KEY-----\n"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUrunbook\n-----END CERTIFICATE-----\n"
B64_KEY = base64.b64encode(PEM_KEY.encode()).decode()
B64_CERT = base64.b64encode(PEM_CERT.encode()).decode()
AZ_KEY = "Zm9vYmFyYmF6cXV4" * 5 + "Zm9vYmFy=="  # 90 chars of base64

# (text, the secret value that must not survive, the kind it is reported as)
SECRETS = [
    # Azure
    (f"DefaultEndpointsProtocol=https;AccountName=payst;AccountKey={AZ_KEY};EndpointSuffix=x", AZ_KEY, None),
    (
        "Endpoint=sb://bus.servicebus.windows.net/;SharedAccessKeyName=app;SharedAccessKey=q1W2e3R4t5Y6u7I8o9P0aSdF=",
        "q1W2e3R4t5Y6u7I8o9P0aSdF",
        "azure_storage_key",
    ),
    (
        "https://st.blob.core.windows.net/exports?sv=2022-11-02&se=2027-01-01&sr=c&sp=rl&sig=k7Hq%2Bz9mP2xR4vT6wY8aB1cD3eF5gH7jK9lM0nQ%3D",
        "k7Hq",
        "azure_sas",
    ),
    # kubeconfig
    (
        f"users:\n- name: ops\n  user:\n    client-certificate-data: {B64_CERT}\n"
        f"    client-key-data: {B64_KEY}\n",
        B64_KEY[:40],
        None,
    ),
    (f"    client-certificate-data: {B64_CERT}", B64_CERT[:40], "kubeconfig_credential"),
    # MySQL command lines
    ("mysqldump -h db01 -u backup -p'Tr!cky pass' payments > out.sql", "Tr!cky pass", "mysql_password"),
    ('mysql -uapp -p"Q9w#8e7r" -e "select 1"', "Q9w#8e7r", "mysql_password"),
    ("mysqladmin -u root -pAutumn2026 status", "Autumn2026", "mysql_password"),
    # .netrc
    ("machine api.psp.example login svc-ledger password Lq7Vz2Nx", "Lq7Vz2Nx", "netrc_password"),
    ("machine git.corp\n  login deploy\n  password Spring2027!\n", "Spring2027!", "netrc_password"),
    # keyword evidence: low entropy is still a password
    ("DB_PASSWORD=Winter2027", "Winter2027", "generic_secret"),
    ("mysql_root_password: Welcome123", "Welcome123", "generic_secret"),
    ('{"password": "Password1!"}', "Password1!", "generic_secret"),
    ("export REDIS_PASS=Letmein99", "Letmein99", "generic_secret"),
    ("adminPassword = Qwerty2025", "Qwerty2025", "generic_secret"),
    (
        "kubectl create secret generic psp --from-literal=api_key=Abc123Def456",
        "Abc123Def456",
        "generic_secret",
    ),
    ("psql --password Fall2026db -h replica", "Fall2026db", "cli_password"),
    ("sshpass -p 'Kiwi4567' ssh ops@bastion", "Kiwi4567", "tool_password"),
    # DSN passwords holding / or @ (the URL is parsed, not matched)
    ("postgresql://ledger:a/b@c9Zx@pg-primary.internal:5432/ledger", "a/b@c9Zx", "url_password"),
    ("mongodb://ops:Pa@@w0rd/x@mongo-0.mongo:27017/admin", "Pa@@w0rd/x", "url_password"),
    ("redis://:s3cr/et@cache:6379/0", "s3cr/et", "url_password"),
    ("amqps://svc:plain-Pass_99@mq.internal/vhost", "plain-Pass_99", "url_password"),
    # docker config
    (
        '{"auths":{"registry.corp":{"auth":"ZGVwbG95OlN1bW1lcjIwMjY="}}}',
        "ZGVwbG95OlN1bW1lcjIwMjY=",
        "docker_auth",
    ),
    # provider tokens
    ("GOOGLE_MAPS=AIzaSyB7runbookFakeKeyXyZ0123456789abcd", "AIzaSyB7runbookFakeKeyXyZ0123456789abcd", None),
    ("xapp-1-A05RUNBOOK-6012345678901-0f1e2d3c4b5a69788796a5b4c3d2e1f0", "xapp-1-A05RUNBOOK", None),
    (
        "SENDGRID_API_KEY=SG.rUnBoOkFaKe1234567890.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcdEFG",
        "SG.rUnBoOk",
        None,
    ),
    ("//registry.npmjs.org/:_authToken=npm_R7unbookFakeTokenAbCdEfGhIjKlMnOpQrSt", "npm_R7unbook", None),
    ("NPM_TOKEN npm_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5", "npm_aB3dE5", "npm_token"),
    ("glpat-Runbook1234567890abcd", "glpat-Runbook1234567890abcd", "gitlab_token"),
    ("vault login hvs.CAESIRunbookFakeVaultTokenAbCdEf123", "hvs.CAESIRunbook", "vault_token"),
    (
        "ADYEN_API_KEY=AQEyhmfxRunbook.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIj",
        "AQEyhmfxRunbook.AbCd",
        None,
    ),
    ("CKO_SECRET=sk_sbox_m73dzbpy7cf3gfd46xr4yj5xo4e", "sk_sbox_m73dzbpy7cf3gfd46xr4yj5xo4e", None),
    ("rk_test_" + "51RunbookFakeKeyAbCdEf", "rk_test_51RunbookFakeKeyAbCdEf", "stripe_key"),
    ("X-API-Key: 7fA9qL2mZx81Bv5Tc3Rn", "7fA9qL2mZx81Bv5Tc3Rn", "api_key_header"),
    # the strong word glued to a prefix, weak and numeric values, other shapes of key and value
    ("export PGPASSWORD=Tulip2031", "Tulip2031", "generic_secret"),
    ("dbpassword: Tulip2031", "Tulip2031", "generic_secret"),
    ("dbpasswd: Tulip2031", "Tulip2031", "generic_secret"),
    ("REDIS_PASSWORD=sunflower", "sunflower", "generic_secret"),
    ("db_password: 90817263", "90817263", "generic_secret"),
    ("jdbc:mysql://db/ledger?user=app&password=q7Z", "q7Z", "generic_secret"),
    ("password=Tu1ip;wx98", "wx98", "generic_secret"),
    ("password=$uperTulip9", "$uperTulip9", "generic_secret"),
    ('password: "!Tulip2031"', "!Tulip2031", "generic_secret"),
    ("AZURE_STORAGE_KEY=" + AZ_KEY, AZ_KEY, "generic_secret"),
    ('{"accountKey": "' + AZ_KEY + '"}', AZ_KEY, None),
    ("az storage blob list --account-key " + AZ_KEY, AZ_KEY, None),
    ("db.corp.net:5432:ledger:app:Tulip2031", "Tulip2031", "pgpass_password"),
    ("<password>Tulip2031!</password>", "Tulip2031!", "generic_secret"),
    ('<add key="LedgerDbPassword" value="Tulip2031"/>', "Tulip2031", "generic_secret"),
    ("env:\n- name: LEDGER_DB_PASSWORD\n  value: Tulip2031", "Tulip2031", "generic_secret"),
    ("ENV LEDGER_DB_PASSWORD Tulip2031", "Tulip2031", "generic_secret"),
    ("**Password:** Tulip2031", "Tulip2031", "generic_secret"),
    ("the root password is Tulip2031", "Tulip2031", "generic_secret"),
    ('{\\"password\\":\\"Tulip2031\\"}', "Tulip2031", "generic_secret"),
    ("helm install x --set-string --db-password Tulip2031", "Tulip2031", "cli_password"),
    ("docker login -u ci -p Tulip2031 registry.corp", "Tulip2031", "tool_password"),
    ("redis-cli -h cache -a Tulip2031 info", "Tulip2031", "tool_password"),
    ("smtp://alerts@corp.net:Tulip2031@smtp.corp.net:587", "Tulip2031", "url_password"),
    ("//npm.corp/:_authToken=3f2a9c71-1b2c-4d5e-8f90-a1b2c3d4e5f6", "3f2a9c71-1b2c", "npm_token"),
]

READABLE = [
    "secret_path: secret/data/payments/psp",
    "vault_secret_path = kv/ledger/db",
    "password_policy: min-length-14",
    "passwordPolicy: Strong2024",
    "secretName: psp-credentials",
    "secretKeyRef:\n  name: ledger-db\n  key: password",
    "token_bucket: 1200",
    "tokenBucketSize: 400",
    "api_key_header: X-Psp-Key",
    "apiKeyHeader: Authorization",
    "token_id: 3f2a9c71",
    "tokenId: 77",
    "refresh_token_ttl: 7200",
    "session_token_ttl = 15m",
    "token_url: https://auth.corp/oauth/token",
    "password_reset_url: https://id.corp/reset",
    "secret_arn: arn:aws:secretsmanager:eu-west-1:123456789012:secret:psp",
    "password_file: /run/secrets/db",
    "tokens: 4096",
    "max_tokens: 512",
    "password: required",
    "password: true",
    "token: null",
    "secret: psp-api-credentials",
    "password: ${DB_PASSWORD}",
    "password: '{{ .Values.db.password }}'",
    "password: !vault |",
    "password: $(cat /run/secrets/db)",
    "mysql -u root -p payments",
    "mysql -h db -P 3306 -p",
    "the password for this machine is in the vault",
    "machine restarted, password reset required",
    "curl https://api.corp:8443/v1/users/ops@corp.example",
    "https://medium.com/@sre/why-we-page",
    "git clone git@github.com:corp/runbooks.git",
    "--token-file /var/run/token",
    "--from-secret ledger-db",
    "client-certificate-data: REDACTED",
    "Authorization: Bearer $TOKEN",
    "x-api-key: <your key>",
    "bypass: Enabled2",
    "compass: North2",
    "password_hash_algorithm: argon2id",
    "passwordHashAlgorithm: Argon2id",
    "password_encoder: bcrypt12",
    "token_secret_name: ledgerTokenV2",
    "password_env: LEDGER_DB_PASSWORD",
    "secretEnvVar: LEDGER_DB_PASSWORD",
    "secret: ledger-api/credentials",
    "vault kv put secret/psp password=@/tmp/pw.txt",
    "the token is rotated hourly.",
    "the `psp-api` secret is misconfigured.",
    "password: see below",
]


@pytest.mark.parametrize(("text", "value", "kind"), SECRETS)
def test_secret_is_masked(text: str, value: str, kind: str | None) -> None:
    out = redact(text)
    assert value not in out.text, out.text
    assert out.counts
    if kind is not None:
        assert kind in out.counts, out.counts


@pytest.mark.parametrize("text", READABLE)
def test_names_paths_and_settings_stay_readable(text: str) -> None:
    out = redact(text)
    assert out.counts == {}, out.text


def test_a_private_key_inside_base64_is_masked_anywhere() -> None:
    out = redact(f"key.b64: {B64_KEY}")
    assert B64_KEY not in out.text and out.counts == {"private_key": 1}


@pytest.mark.parametrize("rule", _detect_secrets_rules(), ids=lambda r: f"{r.kind}:{r.pattern.pattern[:24]}")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_detect_secrets_match_passes_the_gate_that_skips_them(rule: Rule, data: st.DataObject) -> None:
    """detect-secrets is imported only for text the gate lets through: whatever any of its
    patterns matches, alone or amid prose, must pass it."""
    token = data.draw(st.from_regex(rule.pattern, fullmatch=True))
    prose = data.draw(st.sampled_from(["", "card declines ", "why is ", "rotate "]))
    assert _MAY_HOLD_TOKEN.search(prose + token + " now?")


@pytest.mark.slow
def test_a_plain_question_does_not_load_detect_secrets() -> None:
    probe = (
        "import sys\n"
        "from runbook_rag.redaction import redact\n"
        "redact('card declines are spiking after the 3ds rollout, what do I check first?')\n"
        "print('detect_secrets' in sys.modules)\n"
        "redact('key AKIAIOSFODNN7EXAMPLE leaked')\n"
        "print('detect_secrets' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
