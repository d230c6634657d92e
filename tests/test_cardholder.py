"""Card numbers, track data and CVVs in the wrappings real tickets, logs and exports use."""

from __future__ import annotations

import base64
import contextlib
import html
import re
import urllib.parse

import pytest

from runbook_rag.cardholder import is_pan
from runbook_rag.redaction import redact

# Test card numbers of several brands (public test values; Luhn-valid).
VISA, MC, MC2, AMEX, DISC, JCB = (
    "4000056655665556",
    "5105105105105100",
    "2223003122003222",
    "371449635398431",
    "6011000990139424",
    "3566002020360505",
)


def spaced(pan: str, sep: str = " ") -> str:
    return sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# (text, expected counts)
CARD_CASES = [
    # glued to # and @, inside CSV rows and JSON arrays, PAN/MMYY
    (f"refund ticket #{MC} reopened", {"pan": 1}),
    (f"merchant:@{VISA}", {"pan": 1}),
    (f"txn_77,{MC},09/29,APPROVED", {"pan": 1}),
    (f"id;pan;status\n9;{DISC};DECLINED", {"pan": 1}),
    (f'{{"pans":[{VISA},{JCB}]}}', {"pan": 2}),
    (f"[{MC2}, {DISC}]", {"pan": 2}),
    (f"{JCB}/0931", {"pan": 1}),
    (f"{JCB}-0931", {"pan": 1}),
    # followed in the same run by CVV or expiry
    (f"{spaced(MC)} 415", {"pan": 1, "cvv": 1}),
    (f"{MC}415", {"pan": 1, "cvv": 1}),
    (f"{spaced(VISA)} 0929 415", {"pan": 1, "cvv": 1}),
    (f"{VISA} 09/29 415", {"pan": 1, "cvv": 1}),
    (f"{VISA}, exp 09/29, 415", {"pan": 1, "cvv": 1}),
    (f"order 000123 {spaced(DISC)}", {"pan": 1}),
    # Amex and its 4-digit CID
    ("3714 496353 98431 7788", {"pan": 1, "cvv": 1}),
    (f"{AMEX} 7788", {"pan": 1, "cvv": 1}),
    (f"{AMEX}7788", {"pan": 1, "cvv": 1}),
    # EMV track-2-equivalent data (tag 57) and classic track data
    (f"57 tlv: 5713{MC}D29092011234567890F", {"track_data": 1}),
    (f"{VISA}d2909201000012345", {"track_data": 1}),
    (f"t2eq={MC}D2909", {"track_data": 1}),
    (f";{DISC}=29091010000000000?", {"track_data": 1}),
    (f"%B{JCB}^QA/TESTER^2909101000000?", {"track_data": 1}),
    # other separators
    (spaced(MC, "."), {"pan": 1}),
    (spaced(MC2, "\t"), {"pan": 1}),
    ("5105  1051\t0510 5100", {"pan": 1}),
    ("card: 5105 1051\n0510 5100 declined", {"pan": 1}),
    ("> card: 51051051\n> 05105100", {"pan": 1}),
    (spaced(VISA, "+"), {"pan": 1}),
    # encoded forms
    ("".join(f"&#{ord(c)};" for c in MC), {"pan": 1}),
    ("".join(f"&#x{ord(c):x};" for c in VISA[:4]) + VISA[4:], {"pan": 1}),
    (spaced(DISC, "&nbsp;"), {"pan": 1}),
    (f"pan%3D{MC}&amount=10", {"pan": 1}),
    (urllib.parse.quote(spaced(JCB)), {"pan": 1}),
    (f"payload={b64(MC)}", {"pan": 1}),
    (f"blob {b64('card=' + spaced(VISA) + ' exp=0929')} end", {"pan": 1}),
    (f"t2 {b64(';' + DISC + '=29091010000000000?')}", {"track_data": 1}),
    (base64.urlsafe_b64encode(f"%B{MC}^A/B^29091010?".encode()).decode(), {"track_data": 1}),
    ("&#53&#49&#48&#53 1051 0510 5100", {"pan": 1}),
    ("".join(f"\\u{ord(c):04x}" for c in MC), {"pan": 1}),
    ("cb?state=" + urllib.parse.quote(b64('{"n":"??>","pan":"' + VISA + '"}')), {"pan": 1}),
    (f"b{JCB}^QA/TESTER^2909101", {"track_data": 1}),
    (f"blob {b64(urllib.parse.quote('pan=' + spaced(MC)))}", {"pan": 1}),
    (f"blob {b64(''.join(f'&#{ord(c)};' for c in DISC))}", {"pan": 1}),
    (f"blob {b64(b64('card ' + VISA))}", {"pan": 1}),
    ("blob " + base64.b64encode(("pan " + JCB).encode("utf-16-le")).decode(), {"pan": 1}),
    # CVV under field names
    ("card_cvv=415", {"cvv": 1}),
    ("cvc_code: 7788", {"cvv": 1}),
    ("cvv2=415", {"cvv": 1}),
    ('{"securityCode": "415"}', {"cvv": 1}),
    ("card security code: 415", {"cvv": 1}),
    ('"CVV code 415"', {"cvv": 1}),
    ("CardCvc=415", {"cvv": 1}),
    ("<cvv>415</cvv>", {"cvv": 1}),
    ("cvv_number => 7788", {"cvv": 1}),
    # a CVV column next to a card number, or next to one already masked in the source
    ("pan,exp,cvc\n510510******5100,09/29,415", {"cvv": 1}),
    ("card|expiry|cvv2\n****5100|0929|415", {"cvv": 1}),
    ("masked\tcvv\n[PAN ****5100]\t415", {"cvv": 1}),
    (f"{MC},09/29,415,USD", {"pan": 1, "cvv": 1}),
    # label glued to the number, other dashes, wide blanks, mixed separators, slashes
    (f"txn_{VISA}", {"pan": 1}),
    (f"ORD-{MC}", {"pan": 1}),
    (f"order-7731-{VISA}", {"pan": 1}),
    (f"// card {spaced(MC)[:9]}\n// {spaced(MC)[10:]}", {"pan": 1}),
    (f"pan{DISC}", {"pan": 1}),
    (spaced(MC2, "\u2013"), {"pan": 1}),
    (spaced(JCB, "     "), {"pan": 1}),
    (f"{VISA[:4]} {VISA[4:8]}-{VISA[8:12]}-{VISA[12:]}", {"pan": 1}),
    (spaced(DISC, "/"), {"pan": 1}),
    (f'{{"pan": [{", ".join(MC[i : i + 4] for i in range(0, 16, 4))}]}}', {"pan": 1}),
    # wrapped anywhere, with comment or list continuation markers
    (f"card {MC[:10]}\n{MC[10:]} ok", {"pan": 1}),
    (f"# card {spaced(VISA)[:9]}\n# {spaced(VISA)[10:]}", {"pan": 1}),
    # the CVV after other punctuation, words and expiry forms
    (f"{VISA}:415", {"pan": 1, "cvv": 1}),
    (f"{VISA} (09/29) 415", {"pan": 1, "cvv": 1}),
    (f"{VISA} valid thru 09.29 sec 415", {"pan": 1, "cvv": 1}),
    (f"{AMEX}/7788", {"pan": 1, "cvv": 1}),
    ("3714-496353-98431-7788", {"pan": 1, "cvv": 1}),
    (f'"{VISA}","09/29","415"', {"pan": 1, "cvv": 1}),
    (f"{VISA},09,2029,415", {"pan": 1, "cvv": 1}),
    ("XXXX-XXXX-XXXX-5100,09/29,415", {"cvv": 1}),
    ("paymentCardCvv: 415", {"cvv": 1}),
    ("CCV #415", {"cvv": 1}),
    ("<cardCode>7788</cardCode>", {"cvv": 1}),
    ("**CVV:** 415", {"cvv": 1}),
    ("| CVV | 415 |", {"cvv": 1}),
    ('{\\"pan\\":\\"[PAN ****5100]\\",\\"cvv\\":\\"415\\"}', {"cvv": 1}),
]

NOT_CARD_DATA = [
    "ts 1712345678901 and 1712345678901234567",
    "2026-11-29T03:12:45.123456789Z",
    "request 7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "hosts 10.20.30.40 and 172.16.254.1",
    "versions 1.28.3 and 4.1111.1111",
    "order 4000056655665557",  # fails Luhn
    "ORD-5105105105105101",
    "amount 5105105105105100.25 EUR",
    "ratio 0.5105105105105100",
    "trace 4000056655665556ab",  # hex id
    "sha 9e107d9d372bb6826bd81d3542a419d6",
    "numbers 12,345,678,901",
    "range -5105105105105100501 ms",
    "group 0@5105105105105100",
    "kafka offsets 1001 1002 1003 1004 1005",
    "the cvv check failed 3 times",
    "cvv verification rate dropped to 97.5%",
    "security code review done",
    "port 5432, pid 41111",
    "id,count,code\n42,17,200",  # no cvv column, no card
    "cid,region,errors\n4821,eu,7",  # a content/customer id column
    '{"cid": 7781}',
    "mtr: csc 1300ms",
    "cvn: 100 nodes",
    "request 49943046-8013-4109-a46f-ba1325aa663d",
    "acct 1234 5678 9012 3456",
    "order 4012888888881882 refunded",
    "hash a3f4000056655665556bd",
    "release v4.1111.1111.1111",
]


@pytest.mark.parametrize(("text", "counts"), CARD_CASES)
def test_card_data_is_masked(text: str, counts: dict[str, int]) -> None:
    out = redact(text)
    assert out.counts == counts, out.text
    assert_no_card_number_survives(out.text)


@pytest.mark.parametrize("text", NOT_CARD_DATA)
def test_not_card_data(text: str) -> None:
    assert redact(text).counts == {}


SECRET_CVVS = ("415", "7788")


@pytest.mark.parametrize(("text", "counts"), [c for c in CARD_CASES if "cvv" in c[1]])
def test_the_cvv_is_removed(text: str, counts: dict[str, int]) -> None:
    out = redact(text).text
    assert not any(re.search(rf"(?<![0-9]){v}(?![0-9])", out) for v in SECRET_CVVS), out


def assert_no_card_number_survives(text: str) -> None:
    """No Luhn-valid card number in the output, in any of the views a reader could decode."""
    views = [text, html.unescape(text), urllib.parse.unquote_plus(text)]
    for token in re.findall(r"[A-Za-z0-9+/_-]{16,}={0,2}", text):
        with contextlib.suppress(ValueError):
            views.append(base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_").decode("latin-1"))
    for view in views:
        digits = re.sub(r"[^0-9]", "", view)
        for size in range(12, 20):
            for i in range(len(digits) - size + 1):
                window = digits[i : i + size]
                if window in (VISA, MC, MC2, AMEX, DISC, JCB):
                    raise AssertionError(f"card number survives in {text!r}")
    assert not any(is_pan(run) for run in re.findall(r"[0-9]{12,19}", text))
