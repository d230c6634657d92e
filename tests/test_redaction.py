from __future__ import annotations

import pytest

from runbook_rag.records import Document
from runbook_rag.redaction import (
    entropy,
    is_pan,
    luhn_valid,
    normalise,
    redact,
    redact_document,
    strip_html_comments,
)

GH = "ghp_" + "a1B2c3D4" * 4 + "e5F6"
STRIPE = "sk_live_" + "51Hx9TqPkL2mN8vR3sW6yZ0a"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

# (text, expected kind counts, expected output fragment)
SHOULD_MATCH = [
    # card numbers of every brand, grouped or not
    ("card 4111 1111 1111 1111 declined", {"pan": 1}, "[PAN ****1111]"),
    ("pan=4111-1111-1111-1111", {"pan": 1}, "[PAN ****1111]"),
    ("4111111111111111", {"pan": 1}, "[PAN ****1111]"),
    ("visa 4012888888881881", {"pan": 1}, "[PAN ****1881]"),
    ("visa13 4222222222222", {"pan": 1}, "[PAN ****2222]"),
    ("mc 5555-5555-5555-4444", {"pan": 1}, "[PAN ****4444]"),
    ("mc 5105105105105100", {"pan": 1}, "[PAN ****5100]"),
    ("mc 2-series 2221000000000009", {"pan": 1}, "[PAN ****0009]"),
    ("mc 2-series 2720992593319364", {"pan": 1}, "[PAN ****9364]"),
    ("amex 378282246310005", {"pan": 1}, "[PAN ****0005]"),
    ("amex 3714 496353 98431", {"pan": 1}, "[PAN ****8431]"),
    ("discover 6011111111111117", {"pan": 1}, "[PAN ****1117]"),
    ("discover 6011 0009 9013 9424", {"pan": 1}, "[PAN ****9424]"),
    ("jcb 3530111333300000", {"pan": 1}, "[PAN ****0000]"),
    ("jcb 3566002020360505", {"pan": 1}, "[PAN ****0505]"),
    ("diners 30569309025904", {"pan": 1}, "[PAN ****5904]"),
    ("diners 38520000023237", {"pan": 1}, "[PAN ****3237]"),
    ("unionpay 6200000000000005", {"pan": 1}, "[PAN ****0005]"),
    ("maestro 6759649826438453", {"pan": 1}, "[PAN ****8453]"),
    ("maestro 5018 0000 0009", {"pan": 1}, "[PAN ****0009]"),
    ('log: card_number="4111111111111111"', {"pan": 1}, "[PAN ****1111]"),
    ("(4111111111111111)", {"pan": 1}, "[PAN ****1111]"),
    ("two 4111111111111111, 5555555555554444.", {"pan": 2}, "[PAN ****4444]."),
    ("full-width ４１１１ １１１１ １１１１ １１１１", {"pan": 1}, "[PAN ****1111]"),
    ("arabic-indic ٤١١١١١١١١١١١١١١١", {"pan": 1}, "[PAN ****1111]"),
    ("zero-width 4111\u200b1111\u200b1111\u200b1111", {"pan": 1}, "[PAN ****1111]"),
    ("bidi 4111\u202e1111 1111 1111", {"pan": 1}, "[PAN ****1111]"),
    # track data and CVV: removed outright
    ("%B4111111111111111^DOE/JOHN^2512101000000000000000?", {"track_data": 1}, "[TRACK DATA]"),
    ("t1 B4111111111111111^SMITH/ANNA^27121010000?", {"track_data": 1}, "[TRACK DATA]"),
    (";4111111111111111=25121010000000000?", {"track_data": 1}, "[TRACK DATA]"),
    ("track2: 5555555555554444=2712101123?", {"track_data": 1}, "[TRACK DATA]"),
    ("cvv: 123", {"cvv": 1}, "cvv: [CVV]"),
    ("CVC=9876", {"cvv": 1}, "CVC=[CVV]"),
    ("cvv2 is 456", {"cvv": 1}, "[CVV]"),
    ('{"card": "amex", "cid": "1234"}', {"cvv": 1}, "[CVV]"),
    ("security code: 321", {"cvv": 1}, "[CVV]"),
    # secrets
    ("AKIAQWERTYUIOPASDFGH", {"aws_access_key": 1}, "[SECRET aws_access_key]"),
    ("key ASIAZ7Y6X5W4V3U2T1S0 here", {"aws_access_key": 1}, "[SECRET aws_access_key]"),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzQ9w8e7r6",
        {"aws_secret_key": 1},
        "aws_secret_access_key = [SECRET aws_secret_key]",
    ),
    ('"SecretAccessKey": "Zx9/Yw8+Vu7tS6rQ5pO4nM3lK2jI1hG0fE9dC8bA"', {"aws_secret_key": 1}, "[SECRET"),
    (GH, {"github_token": 1}, "[SECRET github_token]"),
    ("gho_" + "Q" * 36, {"github_token": 1}, "[SECRET github_token]"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123", {"github_token": 1}, "[SECRET"),
    ("xoxb-1234567890-abcdefghijklmnop", {"slack_token": 1}, "[SECRET slack_token]"),
    (
        "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/q8w7e6r5t4y3u2i1o0p9a8s7",
        {"slack_webhook": 1},
        "[SECRET slack_webhook]",
    ),
    (STRIPE, {"stripe_key": 1}, "[SECRET stripe_key]"),
    ("rk_live_" + "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8", {"stripe_key": 1}, "[SECRET stripe_key]"),
    ("sk_test_" + "4eC39HqLyjWDarjtT1zdp7dc", {"stripe_key": 1}, "[SECRET stripe_key]"),
    ("whsec_" + "a8S7d6F5g4H3j2K1l0Q9w8E7r6T5", {"stripe_key": 1}, "[SECRET stripe_key]"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nq1w2e3r4==\n-----END RSA PRIVATE KEY-----",
        {"private_key": 1},
        "[SECRET private_key]\n\n\n",
    ),
    (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0BAQEF",
        {"private_key": 1},
        "[SECRET private_key]",
    ),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC\n-----END OPENSSH PRIVATE KEY-----",
        {"private_key": 1},
        "[SECRET",
    ),
    (JWT, {"jwt": 1}, "[SECRET jwt]"),
    (
        "postgres://app:S3cr3tPassw0rd@db:5432/x",
        {"url_password": 1},
        "postgres://app:[SECRET url_password]@db",
    ),
    ("amqp://guest:q9W8e7R6@rabbit/", {"url_password": 1}, "amqp://guest:[SECRET url_password]@rabbit/"),
    ("curl -u admin:hunter2xyz https://x", {"curl_user": 1}, "curl -u admin:[SECRET curl_user] https://x"),
    ("curl --user 'svc:Pa55w0rd!' https://x", {"curl_user": 1}, "[SECRET curl_user]"),
    ('-H "Authorization: Bearer abcdefghijkLMNOP123"', {"auth_header": 1}, "Bearer [SECRET auth_header]"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", {"auth_header": 1}, "Basic [SECRET auth_header]"),
    ("password = Tr0ub4dor&3xyz", {"generic_secret": 1}, "password = [SECRET generic_secret]"),
    ("DB_PASSWORD=q8W!e7R6t5Y4", {"generic_secret": 1}, "DB_PASSWORD=[SECRET generic_secret]"),
    ('api_key: "9f8e7d6c5b4a3f2e1d0c"', {"generic_secret": 1}, "[SECRET generic_secret]"),
    ("client_secret => Zq8Xw7Vc6Bn5", {"generic_secret": 1}, "[SECRET generic_secret]"),
    (
        "braintree access_token$production$abcd1234efgh5678$0123456789abcdef0123456789abcdef",
        {"braintree_token": 1},
        "[SECRET",
    ),
    ("square sq0csp-" + "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9", {"square_token": 1}, "[SECRET square_token]"),
]

SHOULD_NOT_MATCH = [
    "ms timestamp 1700000000000",
    "another ts 1712345678901 in a log",
    "decimal 0.4111111111111111",
    "amount 4111111111111111.50",
    "version v4.1111.1111.1111",
    "ip 192.168.100.200 and 10.0.0.1",
    "uuid 4111aaaa-1111-1111-1111-111111111111",
    "uuid 550e8400-e29b-41d4-a716-446655440000",
    "order id 4111111111111112",  # fails Luhn
    "order id 9111111111111111",  # no brand
    "ticket 1234567890123456",
    "phone +44 20 7946 0958",
    "date 2026-09-14 12:30:00",
    "trace 0123456789abcdef0123456789abcdef",
    "kafka offset 98765432101234",
    "price 5555.55",
    "path /v1/4111111111111111af",  # a hex id
    "publishable pk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "pk_test_TYooMQauvdEDq54NiTphI7jx",
    "postgres://app:${DB_PASSWORD}@db:5432/x",
    "postgres://app:<password>@db/x",
    "https://user:****@host/",
    'curl -H "Authorization: Bearer $TOKEN" x',
    "curl -H 'Authorization: Bearer ${PSP_API_KEY}' x",
    "Authorization: Bearer <token>",
    "curl -u admin:$ADMIN_PASS https://x",
    "password: changeme",
    "password = example-password",
    "token: <token>",
    "token: {{ vault_token }}",
    "api_key=${PSP_API_KEY}",
    "secret: ****",
    "max_token_age: 3600",
    "token_ttl = 86400s",
    "password_file: /etc/app/secret.txt",
    "password: aaaaaaaaaaaa",
    "the token is rotated hourly",
    "AKIA is the prefix of AWS access keys",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_ is a GitHub token prefix",
    "eyJhbGciOi.notajwt.atall",
    "eyJub3QganNvbg.eyJzdWIiOiIxIn0.abcdefgh12",  # header is not JSON
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+g\n-----END CERTIFICATE-----",
    "the CVV check failed for 3 attempts",
    "cvv verification rate dropped",
    "kubectl -n payments get pods",
    "ISO 8583 response code 05 and 51",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "unencrypted_secrets = GitLab::Vault.get(node, 'encrypted_secrets')",
    "api_key:     super-secret-key",
    "Image pull secrets:  prometheus-k8s-dockercfg-6wl6b",
    "curl -u 'xxx:yyy' https://es.example.net:9243/_cat/shards",
    "gsutil acl ch -u AllUsers:R gs://bucket/object",
    "compaction: group 0@4648145191823988568: overlaps found",
]


@pytest.mark.parametrize(("text", "counts", "fragment"), SHOULD_MATCH)
def test_should_match(text: str, counts: dict[str, int], fragment: str) -> None:
    out = redact(text)
    assert out.counts == counts
    assert fragment in out.text


@pytest.mark.parametrize("text", SHOULD_NOT_MATCH)
def test_should_not_match(text: str) -> None:
    out = redact(text)
    assert out.counts == {}
    assert out.text == normalise(text)


def test_the_table_is_large_enough() -> None:
    assert len(SHOULD_MATCH) + len(SHOULD_NOT_MATCH) >= 80


@pytest.mark.parametrize(("text", "counts", "fragment"), SHOULD_MATCH)
def test_no_secret_value_survives(text: str, counts: dict[str, int], fragment: str) -> None:
    out = redact(text).text
    digits = "".join(ch for ch in normalise(text) if ch.isdigit())
    if "pan" in counts or "track_data" in counts:
        assert digits[:12] not in "".join(ch for ch in out if ch.isdigit())
    for token in (GH, STRIPE, JWT, "hunter2xyz", "S3cr3tPassw0rd", "Tr0ub4dor&3xyz", "MIIEpAIBAAKCAQEA"):
        assert token not in out


def test_masks_keep_newlines_so_line_numbers_stay_true() -> None:
    text = (
        "a\n-----BEGIN EC PRIVATE KEY-----\nAAA\nBBB\n-----END EC PRIVATE KEY-----\n"
        "z\n<!-- hidden\nnote -->\nend"
    )
    out = redact(strip_html_comments(text)).text
    assert out.count("\n") == text.count("\n")
    assert out.split("\n")[-1] == "end" and out.split("\n")[5] == "z"


def test_normalise_folds_digits_and_strips_hidden_characters() -> None:
    assert normalise("a\u200bb\u202ec\U000e0041d\ufeff") == "abcd"
    assert normalise("٣٤٥ ３４５") == "345 345"
    assert normalise("line1\nline2") == "line1\nline2"


def test_luhn_and_brand_rules() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert is_pan("4111111111111111")
    assert not is_pan("1111111111111117")  # Luhn-valid, no brand
    assert not is_pan("41111111111111111")  # Visa of length 17
    assert not is_pan("٤١١١١١١١١١١١١١١١")  # detectors see ASCII only, after normalising
    assert entropy("aaaa") == 0 and entropy("abcd") == 2


def test_redact_document_masks_title_body_and_metadata_and_drops_comments() -> None:
    doc = Document(
        doc_id="d.md",
        source="d.md",
        title="Card 4111111111111111 stuck",
        text="# T\n<!-- secret note: password = Zz9Yy8Xx7Ww6 -->\nuse " + STRIPE + "\n",
        labels=("sre",),
        metadata={"owner": "pay AKIAQWERTYUIOPASDFGH"},
    )
    clean, counts = redact_document(doc)
    assert clean.title == "Card [PAN ****1111] stuck"
    assert "Zz9Yy8Xx7Ww6" not in clean.text and "secret note" not in clean.text
    assert STRIPE not in clean.text and "AKIA" not in clean.metadata["owner"]
    assert counts == {"pan": 1, "stripe_key": 1, "aws_access_key": 1}
    assert clean.text.count("\n") == doc.text.count("\n")
