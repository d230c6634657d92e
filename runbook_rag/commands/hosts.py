"""Tools of a host: services, processes, git, files and text, network, containers."""

from __future__ import annotations

import re

from .args import Tool, _flag, _positionals, _table, _value, _verbs
from .risks import Classification, Risk, _c, _combine, _Stdin, _words

# services, processes, version control -----------------------------------------------------------

_SYSTEMCTL = _table(
    read="status show list-units list-unit-files list-timers list-sockets list-jobs list-dependencies "
    "is-active is-enabled is-failed cat get-default help",
    change="start restart reload try-restart reload-or-restart try-reload-or-restart enable daemon-reload "
    "reset-failed unmask edit set-property preset revert daemon-reexec",
    destructive="stop disable mask kill isolate poweroff reboot halt rescue emergency suspend hibernate",
)


def _systemctl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-p --property -t --type --state -n --lines -o --output -H --host -M"))
    if not words:
        return _c("read", "systemctl.list")
    return _verbs("systemctl", words[0], _SYSTEMCTL)


def _service(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args)
    if words[:1] == ["--status-all"] or _flag(args, "--status-all"):
        return _c("read", "service.status")
    return _verbs("service", words[1] if len(words) > 1 else "", _SYSTEMCTL)


def _journalctl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "--vacuum-size", "--vacuum-time", "--vacuum-files"):
        return _c("destructive", "journalctl.vacuum")
    if _flag(args, "--rotate", "--flush", "--sync", "--relinquish-var", "--setup-keys"):
        return _c("change", "journalctl.maintenance")
    return _c("read", "journalctl.read")


def _signal_tool(name: str) -> Tool:
    def classify_signal(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
        signal = (
            _value(args, "-s", "--signal") or next((a[1:] for a in args if re.fullmatch(r"-\w+", a)), "")
        ).upper()
        signal = signal.removeprefix("SIG")
        if name == "kill" and args[:1] == ["-l"]:
            return _c("read", "kill.list")
        if signal == "0":
            return _c("read", f"{name}.probe")
        if signal in ("HUP", "1", "USR1", "USR2", "10", "12", "WINCH", "CONT", "18", "TTIN", "TTOU"):
            return _c("change", f"{name}.signal")
        return _c("destructive", f"{name}.terminate")

    return classify_signal


_GIT = _table(
    read="status log diff show fetch blame grep ls-files ls-tree rev-parse describe shortlog reflog "
    "ls-remote cat-file rev-list whatchanged show-ref version help bisect-log count-objects fsck",
    change="commit pull merge checkout switch push add rm mv rebase cherry-pick revert stash tag config "
    "clone init restore apply am branch remote submodule worktree notes bisect gc repack",
    destructive="filter-branch filter-repo prune",
)


def _git(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-C -c --git-dir --work-tree"))
    verb = words[0] if words else ""
    if "-c" in args[: args.index(verb)] if verb in args else "-c" in args:
        # configuration given on the command line can name a program (core.sshCommand, aliases)
        return _c("unknown", "git.config-override")
    rest = args[args.index(verb) + 1 :] if verb in args else []
    if verb == "push" and (
        _flag(rest, "--force", "-f", "--force-with-lease", "--mirror", "--delete", "-d", "--prune")
        or any(w.startswith("+") or w.startswith(":") for w in words[1:])
    ):
        return _c("destructive", "git.push-force")
    if verb == "reset":
        return (
            _c("destructive", "git.reset-hard")
            if _flag(rest, "--hard", "--merge", "--keep")
            else _c("change", "git.reset")
        )
    if verb == "clean":
        return (
            _c("destructive", "git.clean")
            if _flag(rest, "-f", "--force")
            else _c("read", "git.clean-dry-run")
        )
    if verb == "branch":
        if _flag(rest, "-D") or (_flag(rest, "-d", "--delete") and _flag(rest, "-f", "--force")):
            return _c("destructive", "git.branch-delete-force")
        if len(words) == 1 or _flag(rest, "-a", "-r", "--list", "-v", "-vv", "--show-current", "--contains"):
            return _c("read", "git.branch-list")
    if verb == "stash" and words[1:2] in (["drop"], ["clear"]):
        return _c("destructive", "git.stash-drop")
    if verb in ("stash", "remote", "tag", "config", "worktree", "submodule") and (
        words[1:2] in (["list"], ["show"], ["-v"])
        or len(words) == 1
        or _flag(rest, "-l", "--list", "--get", "-v")
    ):
        return _c("read", f"git.{verb}-list")
    if verb == "checkout" and _flag(rest, "-f", "--force"):
        return _c("destructive", "git.checkout-force")
    return _verbs("git", verb, _GIT)


# files and text ----------------------------------------------------------------------------------


def _find(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    from .wrappers import _argv  # wrappers imports the tool tables, and so this module

    parts = [_c("read", "find.read")]
    for i, arg in enumerate(args):
        if arg == "-delete":
            parts.append(_c("destructive", "find.delete"))
        elif arg in ("-fprint", "-fprint0", "-fprintf", "-fls"):
            parts.append(_c("change", "find.write"))
        elif arg in ("-exec", "-execdir", "-ok", "-okdir"):
            inner: list[str] = []
            for word in args[i + 1 :]:
                if word in (";", "+", "\\;"):
                    break
                inner.append("PLACEHOLDER" if word == "{}" else word)
            result = _argv(inner, depth + 1, None) if inner else _c("unknown", "find.exec")
            parts.append(Classification(result.risk, ("find.exec", *result.reasons)))
    return _combine(parts)


def _sed(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-f", "--file"):
        return _c("unknown", "sed.script-file")
    script = " ".join(a for a in args if not a.startswith("-"))
    # the w and e commands (and the s///w, s///e flags) write files or run commands
    if re.search(r"(?:^|[;{}\n])\s*[0-9,$]*\s*[wWe](?:\s|$)|/[gpiImM0-9]*[we](?:\s|$|;)", script):
        return _c("unknown", "sed.write-or-exec")
    if any(re.fullmatch(r"-[a-zA-Z]*i.*", a) and not a.startswith("--") for a in args) or _flag(
        args, "--in-place"
    ):
        return _c("change", "sed.in-place")
    return _c("read", "sed.read")


def _awk(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-f", "--file"):
        return _c("unknown", "awk.script-file")
    program = " ".join(a for a in args if not a.startswith("-"))
    if re.search(r"system\s*\(|\|\s*(\"|getline|&)|\|&", program):
        return _c("unknown", "awk.system")
    if re.search(r"(print|printf)[^;}]*>>?\s*\"", program):
        return _c("change", "awk.write")
    return _c("read", "awk.read")


def _tee(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    files = [a for a in _positionals(args) if a not in ("/dev/null", "/dev/stdout", "/dev/stderr")]
    return _c("change", "tee.write") if files else _c("read", "tee.stdout")


def _tar(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    mode = args[0] if args else ""
    if _flag(args, "-t", "--list") or (mode and not mode.startswith("-") and "t" in mode):
        return _c("read", "tar.list")
    return _c("change", "tar.write")


def _rsync(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if any(a.startswith("--delete") or a == "--remove-source-files" for a in args):
        return _c("destructive", "rsync.delete")
    if _flag(args, "-n", "--dry-run", "--list-only"):
        return _c("read", "rsync.dry-run")
    return _c("change", "rsync.copy")


def _crontab(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-r"):
        return _c("destructive", "crontab.remove")
    if _flag(args, "-l"):
        return _c("read", "crontab.list")
    return _c("change", "crontab.edit")


def _iptables(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-F", "--flush", "-X", "--delete-chain", "-D", "--delete", "-P", "--policy"):
        return _c("destructive", "iptables.delete")
    if _flag(args, "-A", "--append", "-I", "--insert", "-R", "--replace", "-N", "-Z", "--zero"):
        return _c("change", "iptables.change")
    if _flag(args, "-L", "--list", "-S", "--list-rules", "-C", "--check"):
        return _c("read", "iptables.list")
    return _c("unknown", "iptables.unknown-mode")


def _ip(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, frozenset({"-n", "-netns", "-f", "-family"}))
    if any(w in ("flush", "del", "delete") for w in words):
        return _c("destructive", "ip.delete")
    if any(w in ("add", "set", "change", "replace", "append", "up", "down") for w in words):
        return _c("change", "ip.change")
    return _c("read", "ip.show")


def _openssl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    verb = args[0] if args else ""
    if _flag(args, "-out", "-keyout"):
        return _c("change", "openssl.write")
    table = _table(
        read="x509 s_client verify crl asn1parse version ciphers dgst rsa ec pkey sess_time s_time "
        "storeutl list req crl2pkcs7 pkcs7 ocsp base64 sha256 sha1 md5 speed errstr x509v3 rand",
        change="genrsa genpkey ecparam pkcs12 ca enc",
    )
    return _verbs("openssl", verb, table)


def _nc(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    return _c("read", "nc.probe") if _flag(args, "-z") else _c("unknown", "nc.send")


def _ps_style(tool: str, table: dict[str, Risk], values: frozenset[str] = frozenset()) -> Tool:
    def classify_tool(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
        words = _positionals(args, values)
        verb = words[0] if words else ""
        if verb in ("container", "image", "volume", "network", "system", "node", "service", "pod"):
            verb = words[1] if len(words) > 1 else "ls"
        if verb == "exec":
            from .wrappers import _argv  # wrappers imports the tool tables, and so this module

            inner = words[2:] if len(words) > 2 else []
            if not inner:
                return _c("unknown", f"{tool}.exec.interactive")
            return _combine([_c("change", f"{tool}.exec"), _argv(inner, depth + 1, None)])
        return _verbs(tool, verb, table)

    return classify_tool


_CONTAINERS = _table(
    read="ps images logs inspect stats version info top events port history ls pods inspectp "
    "statsp imagefsinfo df",
    change="run start restart pull build tag push cp create update login logout pause unpause "
    "runp startp commit load save import export attach",
    destructive="rm rmi kill stop prune rmp stopp",
)
_CONTAINER_VALUES = _words(
    "-f --filter --format -n --tail --since -H --host -u --user -e --env -w -r --runtime-endpoint"
)


def _yq(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    return _c("change", "yq.in-place") if _flag(args, "-i", "--inplace") else _c("read", "yq.read")
