"""HAR 1.2 recordings: written entry by entry as exchanges finish, read back for replay.

The file is valid HAR once closed; while it is being written each entry sits on its own
line, so a recording cut short by a kill is still readable by :func:`read_har` (every
complete entry is kept). Credentials never reach the file: values of credential-looking
headers are replaced (``Authorization`` keeps its scheme: ``Basic ***redacted***``), and
every secret those headers carried (the key, a Basic token, its decoded user and password)
is scrubbed from the URL, the other headers and both bodies.

Fields follow http://www.softwareishard.com/blog/har-12-spec/; cohortctl's own additions
start with an underscore, as the spec asks (``_call``, ``_error``, ``_verdict``, and
``log._baseUrl``, the base URL the requests were sent to, which replay rebases on).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cohortctl import __version__
from cohortctl.errors import InputError
from cohortctl.http.observe import Exchange
from cohortctl.http.redact import REDACTED, Redactor, is_sensitive_header
from cohortctl.http.settings import add_observer, remove_observer

HAR_VERSION = "1.2"
CREATOR = "cohortctl"
_ENTRIES_OPEN = '"entries": ['


def redact_url(url: str) -> str:
    """``url`` as it may be recorded: no password, credential-looking query values hidden."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{REDACTED}@{hostport}" if user else hostport
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_sensitive_header(k) for k, _ in pairs):
            shown = [(k, REDACTED if is_sensitive_header(k) else v) for k, v in pairs]
            query = urlencode(shown, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class _Shown:
    """How a recorded exchange's text is shown: its secrets and known ones hidden."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def text(self, text: str) -> str:
        return self.redactor.text(text)

    def url(self, url: str) -> str:
        return self.redactor.text(redact_url(url))

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"name": k, "value": v} for k, v in self.redactor.headers(headers)]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers:
        if key.lower() == lowered:
            return value
    return None


def _body_text(body: bytes, redactor: _Shown) -> tuple[str, bool]:
    """The body as HAR text and whether it had to be base64 (not UTF-8)."""
    try:
        return redactor.text(body.decode("utf-8")), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


def _ms(value: float) -> float:
    return round(max(0.0, value), 3)


CallOf = Callable[[str, str], "str | None"]


def har_entry(
    exchange: Exchange, redactor: Redactor | None = None, call_of: CallOf | None = None
) -> dict[str, Any]:
    """One HAR 1.2 entry for ``exchange``, every credential redacted.

    Transports hand exchanges over redacted already; the credential headers' own secrets and
    ``redactor``'s are hidden again anyway, so nothing depends on every sender getting it
    right. ``call_of(method, url)`` names the partner call (``_call``).
    """
    merged = Redactor.for_headers(exchange.request_headers)
    if redactor is not None:
        merged = merged.merged(redactor)
    shown = _Shown(merged)
    url = shown.url(exchange.url)
    request: dict[str, Any] = {
        "method": exchange.method,
        "url": url,
        "httpVersion": exchange.http_version,
        "cookies": [],
        "headers": shown.headers(exchange.request_headers),
        "queryString": [
            {"name": k, "value": v}
            for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)
        ],
        "headersSize": -1,
        "bodySize": len(exchange.request_body),
    }
    if exchange.request_body or exchange.method not in ("GET", "HEAD"):
        text, encoded = _body_text(exchange.request_body, shown)
        post: dict[str, Any] = {
            "mimeType": _header(exchange.request_headers, "Content-Type") or "",
            "text": text,
        }
        if encoded:
            post["_encoding"] = "base64"
        request["postData"] = post
    answered = exchange.status is not None
    content: dict[str, Any] = {
        "size": len(exchange.response_body),
        "mimeType": _header(exchange.response_headers, "Content-Type") or "x-unknown",
    }
    if exchange.response_body:
        text, encoded = _body_text(exchange.response_body, shown)
        content["text"] = text
        if encoded:
            content["encoding"] = "base64"
    response: dict[str, Any] = {
        "status": exchange.status if answered else 0,
        "statusText": exchange.reason if answered else "",
        "httpVersion": exchange.http_version if answered else "",
        "cookies": [],
        "headers": shown.headers(exchange.response_headers),
        "content": content,
        "redirectURL": shown.url(_header(exchange.response_headers, "Location") or ""),
        "headersSize": -1,
        "bodySize": (exchange.response_size or len(exchange.response_body)) if answered else -1,
    }
    connect = _ms(exchange.connect_ms)
    send, wait, receive = _ms(exchange.send_ms), _ms(exchange.wait_ms), _ms(exchange.receive_ms)
    entry: dict[str, Any] = {
        "startedDateTime": _iso(exchange.started),
        "time": round(connect + send + wait + receive, 3),
        "request": request,
        "response": response,
        "cache": {},
        "timings": {
            "blocked": -1,
            "dns": -1,
            "connect": connect if exchange.connect_ms else -1,
            "send": send,
            "wait": wait,
            "receive": receive,
            "ssl": -1,
        },
    }
    call = call_of(exchange.method, exchange.url) if call_of is not None else None
    if call:
        entry["_call"] = call
    if exchange.error:
        entry["_error"] = shown.text(exchange.error)
    if exchange.proxy:
        entry["_proxy"] = shown.url(exchange.proxy)
    if exchange.response_cut:
        entry["_responseCut"] = True
    return entry


class HarWriter:
    """Streams exchanges into a HAR 1.2 file: one entry written (and flushed) per exchange.

    Use as a context manager, or call :meth:`close`: the closing brackets are written on a
    normal exit and on an interruption alike. Safe to call from several threads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        base_url: str | None = None,
        secrets: Iterable[str] = (),
        comment: str | None = None,
        call_of: CallOf | None = None,
        option: str = "--har",
    ) -> None:
        self.path = Path(path)
        self.count = 0
        self._redactor = Redactor(secrets)
        self._call_of = call_of
        self._lock = threading.Lock()
        try:
            self._file: IO[str] | None = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{option} {path}: cannot write: {exc.strerror or exc}") from None
        log: dict[str, Any] = {
            "version": HAR_VERSION,
            "creator": {"name": CREATOR, "version": __version__},
            "pages": [],
        }
        if comment:
            log["comment"] = comment
        if base_url:
            log["_baseUrl"] = _Shown(self._redactor).url(base_url)
        head = json.dumps({"log": log}, ensure_ascii=False)
        assert head.endswith("}}")
        self._file.write(head[:-2] + ", " + _ENTRIES_OPEN + "\n")
        self._file.flush()

    def __call__(self, exchange: Exchange) -> None:
        """Write ``exchange`` as the next entry (an observer for :func:`add_observer`)."""
        self.write(har_entry(exchange, self._redactor, self._call_of))

    def write(self, entry: Mapping[str, Any]) -> None:
        """Append one ready HAR entry (already redacted)."""
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self._file is None:
                return
            self._file.write(("," if self.count else "") + line + "\n")
            self._file.flush()
            self.count += 1

    def close(self) -> None:
        """Close the entries and the log: the file is complete, valid JSON."""
        with self._lock:
            if self._file is None:
                return
            self._file.write("]}}\n")
            self._file.close()
            self._file = None

    def __enter__(self) -> HarWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _salvage(text: str) -> dict[str, Any] | None:
    """The complete entries of a recording cut short (one entry per line after the head)."""
    head, sep, rest = text.partition(_ENTRIES_OPEN + "\n")
    if not sep:
        return None
    try:
        doc = json.loads(head + _ENTRIES_OPEN + "]}}")
    except ValueError:
        return None
    entries = []
    for line in rest.splitlines():
        line = line.strip().lstrip(",")
        try:
            entries.append(json.loads(line))
        except ValueError:
            break
    doc["log"]["entries"] = entries
    doc["log"]["_truncated"] = True
    return doc


def read_har(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The HAR log in ``path`` (a recording cut short by a kill keeps its complete entries).

    InputError, naming the file and the entry, for anything that is not a HAR log of requests.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a HAR file (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        salvaged = _salvage(text)
        if salvaged is None:
            raise InputError(f"{path}: not a HAR file: invalid JSON: {exc}") from None
        doc = salvaged
    log = doc.get("log") if isinstance(doc, dict) else None
    if not isinstance(log, dict) or not isinstance(log.get("entries"), list):
        raise InputError(f"{path}: not a HAR file: no log.entries list")
    for index, entry in enumerate(log["entries"]):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            raise InputError(f"{path}: entry {index}: no request object")
        for name in ("method", "url"):
            if not isinstance(request.get(name), str) or not request[name]:
                raise InputError(f"{path}: entry {index}: request.{name} missing")
        response = entry.get("response")
        if response is not None and not isinstance(response, dict):
            raise InputError(f"{path}: entry {index}: response is not an object")
    return log


def request_body(entry: Mapping[str, Any]) -> bytes:
    """The request body of a HAR entry as bytes (base64 text decoded)."""
    post = entry["request"].get("postData") or {}
    text = post.get("text") or ""
    if post.get("_encoding") == "base64" or post.get("encoding") == "base64":
        try:
            return base64.b64decode(text)
        except (binascii.Error, ValueError):
            return text.encode("utf-8")
    return str(text).encode("utf-8")


def response_text(entry: Mapping[str, Any]) -> str:
    """The recorded response body as text ('' when none was recorded)."""
    content = (entry.get("response") or {}).get("content") or {}
    text = content.get("text") or ""
    if content.get("encoding") == "base64":
        try:
            return base64.b64decode(text).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return str(text)
    return str(text)


@contextmanager
def recording(
    path: str | os.PathLike[str] | None,
    *,
    base_url: str | None = None,
    secrets: Iterable[str] = (),
    call_of: CallOf | None = None,
) -> Iterator[HarWriter | None]:
    """While inside, every exchange of the transports made goes to a HAR file at ``path``.

    ``path`` None records nothing. The file is closed (valid HAR) however the block ends,
    Ctrl-C included.
    """
    if path is None:
        yield None
        return
    writer = HarWriter(path, base_url=base_url, secrets=secrets, call_of=call_of)
    add_observer(writer)
    try:
        yield writer
    finally:
        remove_observer(writer)
        writer.close()
