"""The plainest HTTP/1.1 POST, and the plainest answer to it, in the forms gunicorn gives them, built without gunicorn's
request and response objects: what the worker (churn.serve.worker) uses for a request it answers on its poller.

For a one-customer request, gunicorn's Request (its parsing), wsgi.create() and Response took 89, 21 and 34 µs of CPU
(`python -m bench.inprocess`), more than the service's own answer. Here one strict pattern reads the head into the
environ wsgi.create() would build (11 µs), and a plain answer becomes the bytes gunicorn's Response would send
(14 µs), in one send rather than two. Anything less plain returns None, and gunicorn's own code handles it: a request
that is not an HTTP/1.1 POST of printable ASCII with each field once, or that has a field gunicorn gives a meaning
beyond its environ key (Expect, Upgrade, Connection: close, X-Forwarded-Proto and its kind from a proxy gunicorn
trusts, any name with an underscore); an answer without a Content-Length that matches its body, with a hop-by-hop
field, or of a status without a body. tests/unit/test_plainhttp.py holds both environs and both answers equal,
request by request; the environ lacks only gunicorn's own wsgi.early_hints (a 103 before an API's answer has nothing
to preload).
"""

import functools
import io
import os
import re

from gunicorn import SERVER, util
from gunicorn.http.message import TOKEN_RE, _ip_in_allow_list
from gunicorn.http.wsgi import HEADER_VALUE_RE, STATUS_RE, base_environ

REQUEST_LINE = re.compile(rb"POST (/[\x21-\x7e]*) HTTP/1\.1\r\n")
# A token without "_" (gunicorn drops or refuses such names), its value printable ASCII, optional whitespace around.
FIELD = rb"([-!#$%&'*+.^`|~0-9A-Za-z]+):[ \t]*((?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?)[ \t]*\r\n"
ONE_FIELD = re.compile(FIELD)
FIELDS = re.compile(rb"(?:%s)*\r\n" % FIELD)
# Fields that make gunicorn do more than map them into the environ (100 Continue, an upgrade, chunked framing).
MEANINGFUL = frozenset({"EXPECT", "UPGRADE", "HTTP2-SETTINGS", "TRANSFER-ENCODING"})
UNBODIED_STATUSES = ("1", "204", "304")  # gunicorn drops what the app sends with these: its Response does it


class PostRequest:
    """What gunicorn's Response reads of a plain request: a kept-alive HTTP/1.1 POST."""

    method, version = "POST", (1, 1)

    def should_close(self) -> bool:
        return False


POST = PostRequest()


class PlainRequests:
    """A worker's reading of plain requests under its gunicorn configuration (cfg)."""

    def __init__(self, cfg, access_log: bool):
        # As gunicorn's gthread worker sets it for every request.
        self.base = base_environ(cfg) | {"wsgi.multithread": True}
        self.scheme_fields = frozenset(cfg.secure_scheme_headers)
        # gunicorn's own test of a peer that may set the scheme (forwarded_allow_ips), by address.
        self.trusted = functools.lru_cache(maxsize=1024)(
            functools.partial(
                _ip_in_allow_list, allow_list=cfg.forwarded_allow_ips, networks=cfg.forwarded_allow_networks()
            )
        )
        self.limit_line = cfg.limit_request_line
        self.limit_fields = cfg.limit_request_fields
        self.limit_field_size = cfg.limit_request_field_size
        # Settings under which gunicorn does more for a request than this module and the worker do: none is taken.
        hooks = ("pre_request", "post_request")
        default_hooks = all(cfg.settings[hook].value is cfg.settings[hook].default for hook in hooks)
        plain_server = cfg.proxy_protocol == "off" and not cfg.is_ssl and not os.environ.get("SCRIPT_NAME")
        self.taken = plain_server and default_hooks and not access_log

    def environ(self, request: bytes, sock, client, server) -> dict | None:
        """The WSGI environ gunicorn would give this request (the whole of it, head and body), if it is plain."""
        if not (self.taken and type(client) is tuple and type(server) is tuple):
            return None
        line = REQUEST_LINE.match(request)
        if not line:
            return None
        head_end = request.find(b"\r\n\r\n") + 4
        fields = self.fields(request, line.end(), head_end)
        if fields is None or (0 < self.limit_line < line.end() - 2) or b"#" in line[1]:
            return None
        uri = line[1].decode("ascii")
        path, _, query = uri.partition("?")
        environ = self.base | {
            "wsgi.input": io.BytesIO(request[head_end:]),
            "gunicorn.socket": sock,
            "REQUEST_METHOD": "POST",
            "QUERY_STRING": query,
            "RAW_URI": uri,
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        for name, value in fields:
            key = name.upper()
            if key in MEANINGFUL or (key == "CONNECTION" and value.lower() == "close"):
                return None
            # From a proxy gunicorn trusts, X-Forwarded-Proto and its kind set the scheme; from any other peer (Cloud
            # Run's front end) they are fields like any other.
            if key in self.scheme_fields and self.trusted(client[0]):
                return None
            key = "CONTENT_TYPE" if key == "CONTENT-TYPE" else "CONTENT_LENGTH" if key == "CONTENT-LENGTH" else key
            key = key if key.startswith("CONTENT_") else "HTTP_" + key.replace("-", "_")
            if key in environ:  # a field sent twice: gunicorn joins some and refuses others
                return None
            environ[key] = value
        environ |= {
            "wsgi.url_scheme": "http",
            "REMOTE_ADDR": client[0],
            "REMOTE_PORT": str(client[1]),
            "SERVER_NAME": server[0],
            "SERVER_PORT": str(server[1]),
            "PATH_INFO": util.unquote_to_wsgi_str(path) if "%" in path else path,
            "SCRIPT_NAME": "",
        }
        return environ

    def fields(self, request: bytes, start: int, end: int) -> list[tuple[str, str]] | None:
        """The head's fields, if all are plain and within gunicorn's limits."""
        # All the fields within one field's limit: none is over it, however gunicorn counts a field's size.
        if end - start > self.limit_field_size or not FIELDS.fullmatch(request, start, end):
            return None
        fields = ONE_FIELD.findall(request, start, end)
        if len(fields) > self.limit_fields:
            return None
        return [(name.decode("ascii"), value.decode("ascii")) for name, value in fields]


@functools.lru_cache(maxsize=256)
def plain_name(name: str) -> bool:
    """Whether gunicorn's Response sends a field of this name as it is: a token, and not hop-by-hop."""
    return TOKEN_RE.fullmatch(name) is not None and not util.is_hoppish(name)


def answer(status, headers, body, close: bool, date: str) -> bytes | None:
    """The bytes gunicorn's Response would send for this answer to a plain request (its body a list of bytes),
    if the answer is plain."""
    if type(status) is not str or not STATUS_RE.fullmatch(status) or status.startswith(UNBODIED_STATUSES):
        return None
    if type(body) not in (list, tuple) or not all(type(chunk) is bytes for chunk in body):
        return None
    if not all(type(name) is str and type(value) is str and plain_name(name) for name, value in headers):
        return None
    # Whether a value may be sent is a property of each of its characters, so one match checks them all.
    if not HEADER_VALUE_RE.fullmatch("".join(value for _, value in headers)):
        return None
    fields = [(name, value.strip(" \t")) for name, value in headers]
    content = b"".join(body)
    if [value for name, value in fields if name.lower() == "content-length"][-1:] != [str(len(content))]:
        return None
    connection = "close" if close else "keep-alive"
    lines = [f"HTTP/1.1 {status}\r\nServer: {SERVER}\r\nDate: {date}\r\nConnection: {connection}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in fields]
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + content
