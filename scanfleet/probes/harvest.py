r"""Harvest: draft match rules from the services a run could not name.

``scanfleet probes harvest RUN_DIR_OR_MERGED_XML`` reads a merged nmap XML (a run directory's
``merged.xml``, or any nmap XML), takes the ``servicefp`` fingerprint of every open port whose service
was not identified, and writes ``harvest.probes``: one draft ``match``/``softmatch`` line per group of
equal or near-equal replies, in the ``files/probes/`` rule-file format, for a person to review.

Fingerprints
============
nmap writes a fingerprint for a service it could not fully name (no match, or a softmatch only)::

    SF-Port4222-TCP:V=7.93%I=7%D=12/2%Time=692E6F1A%P=x86_64-pc-linux-gnu%r(NULL,1A2,"INFO\x20{\"server_id
    SF:\":\"NDQ...\"...");

The first line starts ``SF-PortN-PROTO:``, every further line ``SF:`` (nmap wraps the text, even in the
middle of an escape); then ``%``-separated fields (``V`` nmap version, ``I`` intensity, ``D`` date,
``Time``, ``P`` platform, ``T=SSL`` when the replies came through TLS) and one ``%r(PROBE,HEXLEN,"REPLY")``
per probe that got a reply, in the order the probes were sent; ``HEXLEN`` is the reply's length in
hexadecimal. In REPLY nmap keeps letters, digits and punctuation, writes ``\0`` (``\x00`` before a
digit), ``\r``, ``\n``, ``\xNN`` for any other byte, and puts a backslash before ``\ ? " [ ] ( ) . * + $
^ |``; :func:`unescape_reply` reverses that. A reply nmap cut (its fingerprint is limited in size) is
shorter than HEXLEN: :attr:`Reply.truncated`.

Groups
======
Each fingerprint is filed under its FIRST reply: the probe that got it is the probe the rule goes under
(the NULL probe for a banner sent on connect, else the first probe the service answered), so the rule
fires at the first probe with a reply. Replies are cut into tokens: a "word" (letters, digits, ``_``,
joined by single ``.`` ``-`` ``:`` between them, e.g. ``2.9.10``, ``web1.example.test``,
``2026-12-02``), a run of 16 and more base64 characters holding an upper-case letter, a lower-case letter
and a digit (a key, salt or nonce: ``6RGUW8z2c+Li54Qh...=``), or any other single byte. Two replies to the
same probe (and the same tunnel) are:

* equal: the same bytes;
* near-equal: the same number of tokens, every non-word token (punctuation, spaces, line ends, binary
  bytes) the same at the same place, and the word tokens differing only where the words are "variable"
  in both (holding a digit, or 12 characters and more: ids, addresses, numbers, dates, versions) or at
  no more than a quarter of the word positions (hostnames, day names). The values of HTTP headers that
  differ per response by design (``Date``, ``Expires``, ``Last-Modified``, ``ETag``, ``Set-Cookie``,
  ``Content-Length``, request ids) are one variable token whatever their content.

So the same software answering from two hosts, with its own ids, addresses, hostnames and clock, is one
group; two programs whose replies share only a shape are not (the words that differ are not variable).
Groups are ranked by the number of ports they cover (then by probe and reply).

Drafts
======
A group's template is its token sequence with each position either stable (the same in every member)
or variable. A token that is an id by its form is variable even when every member has the same (a group of
one port, say): a UUID, 16 and more hex digits, a base64 run as above, or 16 and more letters and digits
holding both (``NB22YMW5JJMBVRCL7TDV...``); another host has another. The regex (flags ``s``, so ``.``
also matches line ends) is anchored at ``^`` and built from the stable tokens, escaped; a variable
position becomes a gap that stops at the next stable byte and at line ends (``[^"\r\n]+``), never the
varying text itself; spaces that pad a line to its end become `` *`` (their number follows the length of
what stands before them). Where the reply is:

* HTTP (``HTTP/1.x NNN``): the status line, then the ``Server:`` header when it is stable (header order
  free: ``(?:[^\r\n]*\r\n)*?``), then the page's ``<title>`` when stable, else the start of the body;
  service ``http``, product from the title or the Server header (a guess to review);
* anything else (banners, binary protocols, JSON): the stable prefix (protocol magic bytes, banner
  text, fixed JSON keys with gaps for their values), up to the end of the first line or 48 literal
  bytes, at least 16 literal bytes when the reply has them.

A token that looks like a version (``1.2`` or ``1.2.3``, not an IPv4 address) becomes ``([\d.]+)`` and
the first one ``v/$1/``, even when the group has one value (the next release changes it). The service
name is the port's ``nmap-services`` name when nmap gave one from that table (``method="table"``),
``http`` for an HTTP reply, else ``FILLME`` for the reviewer to replace; the output says which. The line
is a ``softmatch`` when its anchor is weak: fewer than 8 literal bytes beyond an HTTP status line.

Checks
======
Each draft is (1) parsed and pre-checked as a rule file (:func:`scanfleet.probes.check.precheck_rules`),
(2) refused when it can match the empty string (:func:`scanfleet.probes.check.can_match_empty`, nmap
7.991's rule), (3) compiled with Python's ``re`` and tested against every member of its group (it must
match all) and every reply of every other fingerprint in the run (any probe: the NULL probe is every TCP
probe's last fallback, so a conservative test takes them all) and the ``banner`` script output of the
identified services when the scan ran that script. nmap keeps no reply of an identified service in its
XML (only unnamed ones get a fingerprint), so those are checked only through ``banner``; the report
counts the identified services it could not check. A draft that matches another group's reply is
narrowed (a longer anchor: more of the reply's tokens) and retried; if even the whole template matches
another reply, the draft is dropped, and the report names the reply it matched.

Python ``re`` and nmap's PCRE agree on the patterns drafted here (literals, ``[^...]`` classes, ``\d``,
lazy groups, flag ``s``); PCRE differs in ``$`` only with ``PCRE_DOLLAR_ENDONLY`` (not used by nmap, and
no draft uses ``$``), and in Unicode classes (nmap matches bytes, so do the tests here).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from scanfleet import ScanfleetError
from scanfleet.files import atomic_path
from scanfleet.merge import is_identified
from scanfleet.probes.check import can_match_empty, compile_regex, precheck_rules
from scanfleet.probes.model import Origin
from scanfleet.probes.parsing import parse_match, parse_rules

HARVEST_FILE = "harvest.probes"
PLACEHOLDER = "FILLME"
MIN_LITERAL = 16  # literal bytes a banner anchor reaches for
MAX_LITERAL = 48  # ... and where it stops (unless narrowed)
WEAK_LITERAL = 8  # fewer distinctive literal bytes than this: softmatch
EXCERPT = 160  # bytes of a reply shown in a comment
EXAMPLES = 4  # example address:port per draft

# --------------------------------------------------------------------------------------------------
# Fingerprints


@dataclasses.dataclass(frozen=True)
class Reply:
    probe: str
    length: int  # as nmap recorded it (HEXLEN)
    data: bytes

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.length


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    port: int
    protocol: str  # TCP or UDP
    fields: dict[str, str]
    replies: tuple[Reply, ...]

    @property
    def ssl(self) -> bool:
        return self.fields.get("T") == "SSL"


_HEAD = re.compile(r"SF-Port(\d+)-(TCP|UDP):")
_REPLY_HEAD = re.compile(r"r\(([^,()]+),([0-9A-Fa-f]+),\"")
_SIMPLE = {"0": 0, "r": 13, "n": 10}  # what nmap writes; any other escaped character stands for itself


def unescape_reply(text: str) -> bytes:
    r"""The bytes of a reply as nmap escapes them in a fingerprint (\xNN, \0, \r, \n, \"; \ before any other)."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            out += c.encode("latin-1", "replace")
            i += 1
            continue
        if i + 1 >= n:
            break  # cut after the backslash (truncated fingerprint)
        e = text[i + 1]
        if e == "x":
            digits = text[i + 2:i + 4]
            if len(digits) < 2:
                break  # cut inside the escape
            try:
                out.append(int(digits, 16))
            except ValueError:
                raise ScanfleetError(f"bad escape \\x{digits} in a fingerprint reply") from None
            i += 4
        else:
            out.append(_SIMPLE.get(e, ord(e) if ord(e) < 256 else ord("?")))
            i += 2
    return bytes(out)


def decode_fingerprint(text: str) -> Fingerprint:
    """Decode nmap's ``servicefp`` text (the SF-Port line and its SF: continuation lines)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or not _HEAD.match(lines[0]):
        raise ScanfleetError(f"not an nmap service fingerprint (it must start with SF-PortN-TCP:): {text[:60]!r}")
    head = _HEAD.match(lines[0])
    assert head is not None
    body = lines[0][head.end():] + "".join(ln[3:] if ln.startswith("SF:") else ln for ln in lines[1:])
    fields: dict[str, str] = {}
    replies: list[Reply] = []
    pos = 0
    while pos < len(body):
        if body.startswith("r(", pos):
            m = _REPLY_HEAD.match(body, pos)
            if not m:
                raise ScanfleetError(f"malformed reply entry in the fingerprint of port {head.group(1)}: "
                                     f"{body[pos:pos + 40]!r}")
            i = m.end()
            while i < len(body) and body[i] != '"':
                i += 2 if body[i] == "\\" else 1
            replies.append(Reply(m.group(1), int(m.group(2), 16), unescape_reply(body[m.end():i])))
            pos = i + 3  # past '")%' (or '");' at the end)
            continue
        end = body.find("%", pos)
        item = body[pos:] if end < 0 else body[pos:end]
        if "=" in item:
            key, value = item.split("=", 1)
            fields[key] = value
        pos = len(body) if end < 0 else end + 1
    return Fingerprint(int(head.group(1)), head.group(2), fields, tuple(replies))


# --------------------------------------------------------------------------------------------------
# Reading the run


@dataclasses.dataclass
class PortService:
    address: str
    port: int
    protocol: str  # tcp / udp
    service: dict[str, str]
    fingerprint: Fingerprint | None
    banner: bytes | None  # the NSE banner script's output, when the scan ran it

    @property
    def where(self) -> str:
        return f"{self.address}:{self.port}" + ("" if self.protocol == "tcp" else f"/{self.protocol}")


def _xml_path(source: str | os.PathLike[str]) -> Path:
    path = Path(source)
    if path.is_dir():
        merged = path / "merged.xml"
        if not merged.is_file():
            raise ScanfleetError(f"{path}: no merged.xml in this directory: give a run directory whose report was "
                                 "written (scanfleet report / the scan play), or the path of an nmap XML file")
        return merged
    if not path.is_file():
        raise ScanfleetError(f"{path}: no such run directory or nmap XML file")
    return path


def read_services(source: str | os.PathLike[str]) -> tuple[Path, list[PortService]]:
    """Every open port with a <service> element of the merged XML (or any nmap XML) SOURCE."""
    path = _xml_path(source)
    out: list[PortService] = []
    try:
        for _event, elem in ET.iterparse(path, events=("end",)):
            if elem.tag != "host":
                continue
            addr = next((a.get("addr", "") for a in elem.findall("address")
                         if a.get("addrtype") in ("ipv4", "ipv6")), "")
            for port in elem.iterfind("ports/port"):
                state = port.find("state")
                svc = port.find("service")
                if svc is None or state is None or state.get("state") != "open":
                    continue
                service = dict(svc.attrib)
                fp_text = service.get("servicefp")
                try:
                    fp = decode_fingerprint(fp_text) if fp_text else None
                except ScanfleetError as exc:
                    raise ScanfleetError(f"{path}: {addr}:{port.get('portid')}: {exc}") from None
                banner = next((s.get("output", "") for s in port.findall("script") if s.get("id") == "banner"),
                              None)
                out.append(PortService(addr, int(port.get("portid", "0")), port.get("protocol", "tcp"), service,
                                       fp, None if banner is None else unescape_reply(banner)))
            elem.clear()
    except ET.ParseError as exc:
        raise ScanfleetError(f"{path}: not readable as nmap XML ({exc}): give a merged.xml or an nmap -oX file") \
            from None
    return path, out


def is_unnamed(ps: PortService) -> bool:
    """A port to harvest: it has a fingerprint and is not identified with a product (merge.is_identified)."""
    return ps.fingerprint is not None and bool(ps.fingerprint.replies) and \
        not (is_identified(ps.service) and ps.service.get("product"))


# --------------------------------------------------------------------------------------------------
# Tokens and groups

_TOKEN = re.compile(rb"[A-Za-z0-9_]+(?:[.:-][A-Za-z0-9_]+)*|.", re.S)
_BLOB = re.compile(rb"[A-Za-z0-9+/]{16,}={0,2}")
_UUID = re.compile(rb"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_HEX_ID = re.compile(rb"[0-9a-fA-F]{16,}")
_ALNUM_ID = re.compile(rb"(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{16,}")
_VARIABLE_HEADERS = re.compile(
    rb"(\r\n(?:Date|Expires|Last-Modified|ETag|Set-Cookie|Content-Length|X-Request-Id|Request-Id|"
    rb"X-Runtime|Age): )([^\r\n]*)", re.I)
_VERSION = re.compile(rb"\d+(?:\.\d+){1,3}[a-z]?")
_IPV4 = re.compile(rb"(?:\d{1,3}\.){3}\d{1,3}")
VAR = None  # a variable position of a template


def _is_blob(tok: bytes) -> bool:
    """True for a base64 run of the module docstring (upper- and lower-case letters and digits, 16 or more)."""
    return bool(_BLOB.fullmatch(tok)) and any(c.isupper() for c in tok.decode("latin-1")) \
        and any(c.islower() for c in tok.decode("latin-1")) and any(c in b"0123456789" for c in tok)


def _words(data: bytes) -> list[bytes]:
    """Tokens of DATA without the HTTP header rule: base64 runs whole, then words and single bytes."""
    out: list[bytes] = []
    pos = 0
    for m in _BLOB.finditer(data):
        start, end = m.start(), m.end()
        # a run inside a longer word (a hostname's label, say: a word joined by . _ : - on either side) is not a
        # blob of its own
        joined_before = start > 0 and data[start - 1] in b"._:-"
        joined_after = end + 1 < len(data) and data[end] in b"._:-" and chr(data[end + 1]).isalnum()
        if joined_before or joined_after or not _is_blob(m.group()):
            continue
        out += _TOKEN.findall(data[pos:start])
        out.append(m.group())
        pos = m.end()
    out += _TOKEN.findall(data[pos:])
    return out


def tokens(data: bytes) -> list[bytes]:
    """Cut DATA into tokens (see the module docstring); an HTTP header value that varies by design is one token."""
    out: list[bytes] = []
    pos = 0
    is_http = data.startswith(b"HTTP/")
    if is_http:
        head_end = data.find(b"\r\n\r\n")
        head = data if head_end < 0 else data[:head_end]
        for m in _VARIABLE_HEADERS.finditer(head):
            out += _words(data[pos:m.end(1)])
            out.append(m.group(2) or b"")
            pos = m.end()
    out += _words(data[pos:])
    return out


def is_id(tok: bytes | None) -> bool:
    """True for a token that is an id by its form (module docstring): never matched literally."""
    return tok is not None and (bool(_UUID.fullmatch(tok) or _HEX_ID.fullmatch(tok) or _ALNUM_ID.fullmatch(tok))
                                or _is_blob(tok))


def _is_word(tok: bytes) -> bool:
    return tok[:1].isalnum() or tok[:1] == b"_"


def _variable_word(tok: bytes) -> bool:
    return any(c in b"0123456789" for c in tok) or len(tok) >= 12


def _near_equal(a: list[bytes], b: list[bytes]) -> bool:
    if len(a) != len(b):
        return False
    words = differ = 0
    for x, y in zip(a, b, strict=True):
        if x == y:
            words += _is_word(x)
            continue
        if not ((_is_word(x) and _is_word(y)) or len(x) > 1 or len(y) > 1):
            return False  # punctuation or structure differs (words, and multi-byte header values, may differ)
        words += 1
        if not (_variable_word(x) and _variable_word(y)):
            differ += 1
    return differ * 4 <= max(words, 1)


@dataclasses.dataclass
class Group:
    protocol: str
    probe: str
    ssl: bool
    members: list[PortService]
    templates: list[list[bytes]]  # tokens of each member's reply
    parent: Group | None = None  # set for a group split off by a later probe (see refine)

    def reply_of(self, ps: PortService) -> Reply:
        assert ps.fingerprint is not None
        return next(r for r in ps.fingerprint.replies if r.probe == self.probe)

    @property
    def replies(self) -> list[bytes]:
        return [self.reply_of(m).data for m in self.members]

    @property
    def count(self) -> int:
        return len(self.members)


def first_reply(ps: PortService) -> Reply:
    assert ps.fingerprint is not None
    return ps.fingerprint.replies[0]


def group_replies(ports: Iterable[PortService]) -> list[Group]:
    """Group the unnamed PORTS by their first reply (equal or near-equal), most ports first."""
    groups: list[Group] = []
    for ps in ports:
        assert ps.fingerprint is not None
        reply = first_reply(ps)
        toks = tokens(reply.data)
        for g in groups:
            if (g.protocol, g.probe, g.ssl) == (ps.fingerprint.protocol, reply.probe, ps.fingerprint.ssl) and \
                    (reply.data == g.replies[0] or _near_equal(g.templates[0], toks)):
                g.members.append(ps)
                g.templates.append(toks)
                break
        else:
            groups.append(Group(ps.fingerprint.protocol, reply.probe, ps.fingerprint.ssl, [ps], [toks]))
    for g in groups:
        order = sorted(range(g.count), key=lambda i: _addr_key(g.members[i]))
        g.members = [g.members[i] for i in order]
        g.templates = [g.templates[i] for i in order]
    groups.sort(key=lambda g: (-g.count, g.probe != "NULL", g.probe, g.replies[0]))
    out: list[Group] = []
    for g in groups:
        out.append(g)
        out += sorted(refine(g), key=lambda c: (-c.count, c.replies[0]))
    return out


def _cluster(items: Sequence[tuple[PortService, bytes]]) -> list[list[tuple[PortService, list[bytes]]]]:
    clusters: list[list[tuple[PortService, list[bytes]]]] = []
    for ps, data in items:
        toks = tokens(data)
        for c in clusters:
            if toks == c[0][1] or _near_equal(c[0][1], toks):
                c.append((ps, toks))
                break
        else:
            clusters.append([(ps, toks)])
    return clusters


def refine(group: Group) -> list[Group]:
    """Split GROUP by the first later probe whose replies differ between its members (not near-equal).

    The same first reply can come from different software (every Go HTTP server answers GenericLines with the
    same "400 Bad Request"); their replies to a later probe (GetRequest: the page) tell them apart. The groups
    returned go under that probe; the parent's draft becomes a softmatch naming the protocol only.
    """
    if group.count < 2:
        return []
    first = group.members[0].fingerprint
    assert first is not None
    for r in first.replies[1:]:
        items = []
        for ps in group.members:
            assert ps.fingerprint is not None
            reply = next((x for x in ps.fingerprint.replies if x.probe == r.probe), None)
            if reply is None:
                break
            items.append((ps, reply.data))
        else:
            clusters = _cluster(items)
            if len(clusters) >= 2:
                return [Group(group.protocol, r.probe, group.ssl, [ps for ps, _ in c], [t for _, t in c], group)
                        for c in clusters]
    return []


def _addr_key(ps: PortService) -> tuple[int, bytes, int]:
    try:
        ip = ipaddress.ip_address(ps.address)
        return (ip.version, ip.packed, ps.port)
    except ValueError:
        return (9, ps.address.encode(), ps.port)


def template(group: Group) -> list[bytes | None]:
    """The group's token template: the token where every member has the same and it is no id, else VAR."""
    return [toks[0] if all(t == toks[0] for t in toks) and not is_id(toks[0]) else VAR
            for toks in zip(*group.templates, strict=True)]


# --------------------------------------------------------------------------------------------------
# Drafting


def escape(data: bytes) -> str:
    r"""DATA as PCRE text for a match line: metacharacters escaped, non-printable bytes as \xNN."""
    out = []
    for c in data:
        ch = chr(c)
        if ch == "\r":
            out.append(r"\r")
        elif ch == "\n":
            out.append(r"\n")
        elif ch == "\t":
            out.append(r"\t")
        elif ch == "\0":
            out.append(r"\0")
        elif ch in "\\^$.|?*+()[]{}":
            out.append("\\" + ch)
        elif 32 <= c < 127:
            out.append(ch)
        else:
            out.append(f"\\x{c:02x}")
    text = "".join(out)
    return re.sub(r"\\0(?=[0-7])", r"\\x00", text)  # \0 followed by a digit would read as an octal escape


def _gap(stop: bytes) -> str:
    """A gap over a variable part that ends before the byte STOP (or a line end)."""
    stops = {b"\r", b"\n", stop[:1]} - {b""}
    inner = "".join(sorted(escape(s) if s not in (b"-", b"]", b"^") else "\\" + s.decode() for s in stops))
    return f"[^{inner}]+"


@dataclasses.dataclass
class Draft:
    group: Group
    service: str
    service_from: str
    soft: bool
    pattern: str
    fields: dict[str, str]
    anchors: list[str]  # why it is anchored where it is
    literal: int  # literal bytes in the pattern
    status: str = "ok"  # ok, narrowed, dropped
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def line(self) -> str:
        word = "softmatch" if self.soft else "match"
        extra = "".join(f" {k}/{v}/" for k, v in self.fields.items())
        return f"{word} {self.service} m|{self.pattern}|s{extra}"


def _short(tok: bytes, limit: int = 16) -> str:
    text = tok.decode("latin-1")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_version(tok: bytes | None) -> bool:
    return tok is not None and bool(_VERSION.fullmatch(tok)) and not _IPV4.fullmatch(tok)


def _pads_to_line_end(tmpl: Sequence[bytes | None], i: int, stop: int) -> bool:
    """True when position I starts or continues a run of spaces that ends at a line end before STOP."""
    j = i
    while j < stop and tmpl[j] == b" ":
        j += 1
    return j < stop and tmpl[j] in (b"\r", b"\n")


def _sequence(tmpl: Sequence[bytes | None], start: int, stop: int, values: list[list[bytes]],
              state: dict[str, int]) -> str:
    """Regex for template positions START..STOP: literals escaped, variables as gaps, versions captured, and
    spaces that pad a line to its end as `` *`` (a field padded to a fixed width, e.g. Tarantool's greeting
    lines: how many depends on the length of the version and ids before them)."""
    parts: list[str] = []
    for i in range(start, stop):
        tok = tmpl[i]
        if tok == b" " and _pads_to_line_end(tmpl, i, stop):
            if not parts or parts[-1] != " *":
                parts.append(" *")
            continue
        column = [v[i] for v in values]
        nxt = next((t for t in tmpl[i + 1:stop + 1] if t is not None), b"") if i + 1 <= len(tmpl) else b""
        if all(_is_version(v) for v in column) and not state["version"]:
            state["version"] = 1
            parts.append(r"([\d.]+[a-z]?)")
        elif tok is None or _is_version(tok):
            gap = r"\d+" if all(v.isdigit() for v in column) else _gap(nxt or b"")
            parts.append(gap[:-1] + "*" if not all(column) else gap)  # an empty value (a header): may be empty
        else:
            parts.append(escape(tok))
            state["literal"] += len(tok)
    return "".join(parts)


def _banner_end(tmpl: Sequence[bytes | None], extra: int, versions: Sequence[bool] = ()) -> int:
    """Where a banner anchor stops: the first line end (or MAX_LITERAL literal bytes), plus EXTRA tokens.

    A version-like token (VERSIONS[i]) on the same line and within 2 * MAX_LITERAL literal bytes is taken in, with
    the token after it, so that the draft can report it (v/$1/).
    """
    literal = 0
    end = len(tmpl)
    for i, tok in enumerate(tmpl):
        if tok is not None and not _is_version(tok):
            literal += len(tok)
        if (tok in (b"\n",) and literal >= MIN_LITERAL) or literal >= MAX_LITERAL:
            end = i + 1
            break
    if versions and not any(versions[:end]):
        for i in range(end, len(tmpl)):
            if tmpl[i] in (b"\r", b"\n"):
                break
            if tmpl[i] is not None and not _is_version(tmpl[i]):
                literal += len(tmpl[i] or b"")
            if literal > 2 * MAX_LITERAL:
                break
            if versions[i]:
                end = min(len(tmpl), i + 2)
                break
    return min(len(tmpl), end + extra)


def _header(tmpl: Sequence[bytes | None], name: bytes) -> tuple[int, int] | None:
    """Token span of a stable header line 'NAME: value' (without its line end), or None."""
    for i in range(len(tmpl) - 3):
        if tmpl[i] == b"\r" and tmpl[i + 1] == b"\n" and tmpl[i + 2] is not None and \
                tmpl[i + 2].lower() == name.lower() and tmpl[i + 3] == b":":
            j = i + 2
            while j < len(tmpl) and tmpl[j] not in (b"\r", None):
                j += 1
            if j < len(tmpl) and tmpl[j] == b"\r":
                return (i + 2, j)
            return None
    return None


def _title(tmpl: Sequence[bytes | None]) -> tuple[int, int] | None:
    """Token span of a stable '<title>...</title>' (both tags included), or None."""
    joined = [t or b"" for t in tmpl]
    for i in range(len(joined) - 3):
        if joined[i] == b"<" and joined[i + 1].lower() == b"title" and joined[i + 2] == b">":
            for j in range(i + 3, len(joined) - 3):
                if joined[j] == b"<" and joined[j + 1] == b"/" and joined[j + 2].lower() == b"title":
                    span = (i, j + 4)
                    return span if all(t is not None for t in tmpl[i:j + 4]) else None
    return None


def draft(group: Group, extra: int = 0, *, parent: Draft | None = None, split: bool = False) -> Draft:
    """The draft rule of GROUP; EXTRA > 0 narrows it (a longer anchor).

    PARENT: the draft of the group this one was split from (refine): its service name is kept (after a softmatch
    nmap only takes rules of the same service). SPLIT: GROUP was split by a later probe: a softmatch.
    """
    tmpl = template(group)
    values = group.templates
    versions = [all(_is_version(v[i]) for v in values) for i in range(len(tmpl))]
    state = {"version": 0, "literal": 0}
    anchors: list[str] = []
    fields: dict[str, str] = {}
    first = group.members[0]
    service, service_from = PLACEHOLDER, f"placeholder: replace {PLACEHOLDER} with the service's name"
    if first.service.get("method") == "table" and first.service.get("name") not in (None, "", "unknown"):
        service, service_from = first.service["name"], "the port's nmap-services name (method=\"table\"): check it"
    data = group.replies[0]
    m = re.match(rb"HTTP/1\.[01] (\d\d\d)", data)
    if m and len(tmpl) >= 6:
        service, service_from = "http", "the reply is HTTP"
        code = m.group(1).decode()
        pattern = rf"^HTTP/1\.[01] {code} "
        distinctive = 0
        anchors.append(f"the status line HTTP/1.x {code} (any HTTP/1.0 or 1.1)")
        server = _header(tmpl, b"Server")
        if server:
            text = b"".join(t for t in tmpl[server[0]:server[1]] if t is not None)
            pattern += r"(?:[^\r\n]*\r\n)*?" + _sequence(tmpl, server[0], server[1], values, state) + r"\r\n"
            distinctive += len(text) - len(b"Server: ")
            anchors.append(f"the stable header {text.decode('latin-1')!r} (headers may come in any order)")
            product = re.match(rb"Server: ([A-Za-z][\w .-]*?)(?:/|$| )", text)
            if product:
                fields["p"] = product.group(1).decode("latin-1")
        title = _title(tmpl)
        if title:
            text = b"".join(t for t in tmpl[title[0]:title[1]] if t is not None)
            pattern += ".*?" + _sequence(tmpl, title[0], title[1], values, state)
            distinctive += len(text) - len(b"<title></title>")
            anchors.append(f"the page's {text.decode('latin-1')}, the same on every port of the group")
            if "p" not in fields and len(text) > len(b"<title></title>"):
                fields["p"] = text[7:-8].decode("latin-1")
        if (not server and not title) or extra:
            body = next((i + 4 for i in range(len(tmpl) - 3)
                         if tmpl[i:i + 4] == [b"\r", b"\n", b"\r", b"\n"]), None)
            if body is not None and body < len(tmpl):
                end = _banner_end(tmpl[body:], extra) + body
                before = state["literal"]
                pattern += r"(?:[^\r\n]*\r\n)*?\r\n" + _sequence(tmpl, body, end, values, state)
                distinctive += state["literal"] - before
                anchors.append(f"the start of the body ({end - body} tokens): no stable Server header or title")
        soft = distinctive < WEAK_LITERAL
    else:
        end = _banner_end(tmpl, extra, versions)
        pattern = "^" + _sequence(tmpl, 0, end, values, state)
        literal = state["literal"]
        kind = "protocol magic bytes" if any(c < 32 and c not in (9, 10, 13) for c in data[:8]) else "banner prefix"
        limits = f"up to the first line end or {MAX_LITERAL} literal bytes"
        limits += ", then to the version" if state["version"] else ""
        limits += f", plus {extra} tokens for narrowing" if extra else ""
        anchors.append(f"the {kind}: the stable start of the reply, {end} of its {len(tmpl)} tokens with {literal} "
                       f"literal bytes ({limits})")
        soft = literal < WEAK_LITERAL
    varying = [i for i, t in enumerate(tmpl) if t is None or (versions[i] and t is not None)]
    if varying:
        shown = ", ".join(repr(_short(values[0][i])) for i in varying[:4]) + (", ..." if len(varying) > 4 else "")
        anchors.append(f"{len(varying)} part(s) vary between ports or are versions, never matched literally "
                       f"(on {group.members[0].where}: {shown})")
    if state["version"]:
        fields["v"] = "$1"
        anchors.append("v/$1/: the first version-like token (captured even when the group has one value: the next "
                       "release changes it)")
    notes = []
    if parent is not None:
        service, service_from = parent.service, f"as the softmatch under {group.parent.probe if group.parent else '?'}"
    if split:
        soft = True
        notes.append("softmatch: ports with this same reply answer later probes differently (different software "
                     "behind one protocol): it names the protocol only; the drafts that follow name each")
    return Draft(group, service, service_from, soft, pattern, fields, anchors, state["literal"], notes=notes)


# --------------------------------------------------------------------------------------------------
# Checking


def _origin() -> Origin:
    """The origin of a draft line checked on its own (it has no file yet)."""
    return Origin(HARVEST_FILE, 0)


def check_draft(d: Draft, others: Sequence[tuple[str, bytes]]) -> tuple[str | None, str | None]:
    """(error, matched): a checker/empty-match error, or the first of OTHERS (label, bytes) the draft matches."""
    header = "" if d.group.probe == "NULL" else f"Probe {d.group.protocol} {d.group.probe}\n"
    try:
        rf = parse_rules(header + d.line + "\n", HARVEST_FILE)
    except ScanfleetError as exc:
        return f"the probes checker rejects it: {exc}", None
    errors = [p.message for p in precheck_rules(rf) if p.severity == "error"]
    if errors:
        return "the probes checker rejects it: " + "; ".join(errors), None
    match = parse_match(d.line, _origin())
    if can_match_empty(match):
        return "it can match the empty string (nmap 7.991 refuses such a pattern)", None
    regex = compile_regex(match)
    missed = [m.where for m, data in zip(d.group.members, d.group.replies, strict=True) if not regex.match(data)]
    if missed:
        return f"it does not match its own group's reply at {', '.join(missed)}", None
    for label, data in others:
        if regex.match(data):
            return None, label
    return None, None


def _others(group: Group, ports: Sequence[PortService]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    mine = {id(m) for m in group.members}
    for ps in ports:
        if ps.fingerprint is not None and id(ps) not in mine:
            for r in ps.fingerprint.replies:
                out.append((f"{ps.where} ({r.probe} reply)", r.data))
        if ps.banner:
            out.append((f"{ps.where} (banner script output, {ps.service.get('name', '?')})", ps.banner))
    return out


MAX_NARROW = 6


def harvest_drafts(groups: Sequence[Group], ports: Sequence[PortService]) -> list[Draft]:
    """A checked draft per group: narrowed while it matches another reply, dropped when it cannot be."""
    drafts: list[Draft] = []
    by_group: dict[int, Draft] = {}
    for g in groups:
        others = _others(g, ports)
        tries = 0
        parent = by_group.get(id(g.parent)) if g.parent is not None else None
        split = any(c.parent is g for c in groups)
        d = draft(g, parent=parent, split=split)
        while True:
            error, matched = check_draft(d, others)
            if error:
                d.status = "dropped"
                d.notes.append(f"dropped: {error}")
                break
            if matched is None:
                break
            longer = draft(g, extra=(tries + 1) * 8, parent=parent, split=split)
            tries += 1
            if longer.pattern == d.pattern or tries > MAX_NARROW:
                d.status = "dropped"
                d.notes.append(f"dropped: it matches the reply of {matched}, even with its longest anchor")
                break
            longer.notes = [*d.notes, f"narrowed: the shorter draft m|{d.pattern}| matched {matched}"]
            longer.status = "narrowed"
            d = longer
        drafts.append(d)
        by_group[id(g)] = d
    return drafts


# --------------------------------------------------------------------------------------------------
# Output


@dataclasses.dataclass
class Harvest:
    source: Path
    ports: list[PortService]
    unnamed: list[PortService]
    drafts: list[Draft]

    @property
    def unchecked_identified(self) -> int:
        return sum(1 for p in self.ports if p.fingerprint is None and p.banner is None
                   and is_identified(p.service))


_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_PORT = re.compile(r"[0-9]+")


def parse_names(specs: Iterable[str]) -> dict[int, str]:
    """``PORT=NAME`` strings (``--name 4222=nats``) -> {port: name}; a bad one raises ScanfleetError naming it."""
    names: dict[int, str] = {}
    for spec in specs:
        port, sep, name = spec.partition("=")
        # ASCII digits only: str.isdigit() also takes '²' (int() refuses it) and other scripts' digits
        if not (sep and _PORT.fullmatch(port) and 1 <= int(port) <= 65535 and _SERVICE_NAME.fullmatch(name)):
            raise ScanfleetError(f"--name {spec!r}: give PORT=NAME, a port 1-65535 and a service name of letters, "
                                 "digits and _.+- (e.g. --name 4222=nats)")
        if names.get(int(port), name) != name:
            raise ScanfleetError(f"--name {spec!r}: port {port} is already named {names[int(port)]!r}; give one name")
        names[int(port)] = name
    return names


def name_drafts(drafts: Sequence[Draft], names: Mapping[int, str]) -> None:
    """Give each draft whose ports all have one number in NAMES that name (the reviewer's, known beforehand)."""
    for d in drafts:
        numbers = {m.port for m in d.group.members}
        if len(numbers) == 1 and (port := numbers.pop()) in names:
            d.service, d.service_from = names[port], f"given: --name {port}={names[port]}"


def harvest(source: str | os.PathLike[str], names: Mapping[int, str] | None = None) -> Harvest:
    """Groups and checked drafts of the unnamed services of SOURCE (a run directory or an nmap XML file).

    NAMES: {port: service name} for the drafts whose ports all have that number (``--name``); the others keep
    the nmap-services name or FILLME.
    """
    path, ports = read_services(source)
    unnamed = [p for p in ports if is_unnamed(p)]
    drafts = harvest_drafts(group_replies(unnamed), ports)
    name_drafts(drafts, names or {})
    return Harvest(path, ports, unnamed, drafts)


def excerpt(data: bytes, limit: int = EXCERPT) -> str:
    r"""The start of a reply for a comment: printable ASCII as is, \r \n \t \0 and \xNN for other bytes."""
    simple = {13: r"\r", 10: r"\n", 9: r"\t", 0: r"\0", 92: r"\\"}
    text = "".join(simple.get(c, chr(c) if 32 <= c < 127 else f"\\x{c:02x}") for c in data[:limit])
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else "")


def _comment_block(d: Draft, n: int) -> list[str]:
    g = d.group
    where = ", ".join(m.where for m in g.members[:EXAMPLES]) + (", ..." if g.count > EXAMPLES else "")
    tunnel = " through SSL" if g.ssl else ""
    which = "Reply" if g.parent is not None else "First reply"
    lines = [f"# Draft {n}: {g.count} port(s): {where}",
             *_wrap(f"{which}{tunnel}: to {g.protocol} {g.probe}. Service: {d.service} ({d.service_from}).")]
    if g.parent is not None:
        lines += _wrap(f"Split from the ports whose first reply (to {g.parent.probe}) is the same: {g.probe} is "
                       "the first probe whose replies tell them apart.")
    if d.soft and not any(note.startswith("softmatch") for note in d.notes):
        lines += _wrap("softmatch: the anchor is weak (few distinctive bytes); nmap goes on probing for a version.")
    lines.append(f"# Reply of {g.members[0].where} ({len(g.replies[0])} bytes"
                 f"{', cut by nmap' if g.reply_of(g.members[0]).truncated else ''}):")
    lines.append(f"#   {excerpt(g.replies[0])}")
    lines += _wrap("Anchored on " + "; ".join(d.anchors) + ".")
    for note in d.notes:
        lines += _wrap(note[:1].upper() + note[1:] + ("" if note.endswith(".") else "."))
    return lines


def _wrap(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, 114, break_long_words=False, break_on_hyphens=False)]


def render(h: Harvest) -> str:
    """harvest.probes: the drafts, NULL probe first, then by probe; dropped drafts listed at the end as comments."""
    kept = [d for d in h.drafts if d.status != "dropped"]
    dropped = [d for d in h.drafts if d.status == "dropped"]
    out = [f"# scanfleet harvest: draft rules from {h.source}.",
           "# Review every draft: check the service name (replace FILLME), add p/ v/ i/ and cpe: as known, tighten",
           "# the pattern where needed; then copy the rules you keep into files/probes/ (scanfleet probes check",
           "# FILE), provision the scanners (roles/nmap_probes) and scan again.",
           f"# {len(h.unnamed)} unnamed port(s) with a fingerprint, {len(h.drafts)} group(s): {len(kept)} draft(s), "
           f"{len(dropped)} dropped.",
           "# Each draft was checked against every other reply of the run; "
           f"{h.unchecked_identified} identified service(s) could not be",
           "# checked (nmap keeps no reply of a service it names: scan with --script banner to include their "
           "banners).",
           ""]
    order = sorted(kept, key=lambda d: (d.group.probe != "NULL", d.group.protocol, d.group.probe))
    section: tuple[str, str] | None = None
    for n, d in enumerate(order, 1):
        key = (d.group.protocol, d.group.probe)
        if key != section:
            section = key
            if d.group.probe == "NULL":
                out.append("# --- NULL probe (replies sent on connect) ---")
            else:
                out += [f"# --- {d.group.protocol} {d.group.probe} ---", f"Probe {d.group.protocol} {d.group.probe}"]
            out.append("")
        out += _comment_block(d, n)
        out += [d.line, ""]
    if dropped:
        out.append("# --- Dropped drafts (no rule written) ---")
        for d in dropped:
            out += _comment_block(d, 0)
            out.append(f"#   was: {d.line}")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def as_json(h: Harvest) -> dict[str, object]:
    return {
        "source": str(h.source),
        "unnamed_ports": len(h.unnamed),
        "unchecked_identified": h.unchecked_identified,
        "groups": [{
            "rank": n, "protocol": d.group.protocol, "probe": d.group.probe, "ssl": d.group.ssl,
            "count": d.group.count, "ports": [m.where for m in d.group.members],
            "service": d.service, "service_from": d.service_from, "softmatch": d.soft,
            "status": d.status, "rule": d.line, "anchors": d.anchors, "notes": d.notes,
            "reply_excerpt": excerpt(d.group.replies[0]),
        } for n, d in enumerate(h.drafts, 1)],
    }


def write_harvest(h: Harvest, out: str | os.PathLike[str], *, write: bool = True) -> bool:
    """Write harvest.probes to OUT unless it already holds that text; True when it changed (or would)."""
    text = render(h)
    path = Path(out)
    try:
        if path.read_text(encoding="utf-8", errors="surrogateescape") == text:
            return False
    except OSError:
        pass
    if write:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8", errors="surrogateescape")
    return True


def summary_lines(h: Harvest) -> list[str]:
    lines = [f"{len(h.unnamed)} unnamed port(s) with a fingerprint, {len(h.drafts)} group(s)"]
    for n, d in enumerate(h.drafts, 1):
        lines.append(f"{n}. {d.group.count} port(s), {d.group.protocol} {d.group.probe}: {d.status}: {d.line}")
    return lines


def dumps(h: Harvest) -> str:
    return json.dumps(as_json(h), indent=2)


def harvest_run(results: str | os.PathLike[str], run_id: str, *, write: bool = True) -> dict[str, object]:
    """The role's step: RESULTS/RUN_ID/merged.xml -> RESULTS/RUN_ID/harvest.probes (only written when it changes).

    Returns the module result: changed, path, drafts, dropped, unnamed ports, the summary lines. WRITE false
    (check mode) writes nothing and reports whether the file would change.
    """
    run_dir = Path(results) / run_id
    out = run_dir / HARVEST_FILE
    if not (run_dir / "merged.xml").is_file():
        return {"changed": False, "path": str(out), "skipped": True,
                "lines": [f"{run_dir}: no merged.xml yet, nothing to harvest"]}
    h = harvest(run_dir)
    changed = write_harvest(h, out, write=write)
    return {"changed": changed, "path": str(out), "unnamed": len(h.unnamed),
            "drafts": sum(d.status != "dropped" for d in h.drafts),
            "dropped": sum(d.status == "dropped" for d in h.drafts), "lines": summary_lines(h)}
