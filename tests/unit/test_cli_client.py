"""The CLI's HTTP/1.1 client over a unix socket, against a real socket server that sends
exact bytes: lengths, chunked streams, connections closed early, errors."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flatstack.api import frames
from flatstack.api.client import ApiError, Client, DaemonUnreachable, path
from flatstack.errors import FlatstackError


class RawServer:
    """Answers one request per connection with canned bytes; keeps what it was sent."""

    def __init__(self, sock_path: Path) -> None:
        self.path = str(sock_path)
        self.answers: list[bytes] = []
        self.requests: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(self.answers.pop(0))

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RawServer]:
    made = RawServer(tmp_path / "api.sock")
    yield made
    made.close()


def _chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def test_request_line_query_and_json_body(server: RawServer) -> None:
    server.answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n"
                          b"Content-Type: application/json\r\n\r\n{\"ok\": 1}\r\n")
    answer = Client(server.path).call("POST", path("images", "docker.io/a:b c"),
                                      params={"force": True, "t": 1.5, "skip": None,
                                              "q": "a&b=c"}, body={"x": [1]})
    assert answer == {"ok": 1}
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == ("POST /v1/images/docker.io%2Fa%3Ab%20c?force=true&t=1.5&q=a%26b%3Dc "
                        "HTTP/1.1")
    assert "Content-Type: application/json" in lines and "Content-Length: 10" in lines
    assert json.loads(body) == {"x": [1]}


def test_chunked_ndjson_lines_split_anywhere(server: RawServer) -> None:
    docs = [{"event": "start", "n": i} for i in range(3)]
    text = b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    server.answers.append(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + _chunked(text[:5], text[5:30], text[30:31], text[31:]))
    assert list(Client(server.path).lines("POST", path("images", "pull"))) == docs


def test_chunked_frames_read_exactly_and_headers(server: RawServer) -> None:
    stream = (frames.frame(frames.STDOUT, b"hello\n") + frames.frame(frames.STDERR, b"e" * 70000)
              + frames.status({"exit_code": 3}))
    server.answers.append(b"HTTP/1.1 200 OK\r\nX-Flatstack-Container: abc\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n"
                          + _chunked(*[stream[i:i + 4097] for i in range(0, len(stream), 4097)]))
    resp = Client(server.path).open("POST", path("containers"))
    assert resp.status == 200 and resp.getheader("x-flatstack-container") == "abc"
    got = list(frames.read(resp))  # type: ignore[arg-type]
    resp.close()
    assert got == [(1, b"hello\n"), (2, b"e" * 70000), (3, b'{"exit_code": 3}')]


def test_body_until_close_and_empty_body(server: RawServer) -> None:
    server.answers.append(b"HTTP/1.1 200 OK\r\n\r\n[1, 2]")
    server.answers.append(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    api = Client(server.path)
    assert api.call("GET", path("x")) == [1, 2]
    assert api.call("DELETE", path("x")) is None


def test_errors_carry_status_message_and_field(server: RawServer) -> None:
    doc = json.dumps({"error": "image 'x' is not in the store", "field": "image"}).encode()
    server.answers.append(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(doc), doc))
    server.answers.append(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops")
    api = Client(server.path)
    with pytest.raises(ApiError) as err:
        api.call("POST", path("containers"))
    assert (err.value.status, err.value.field) == (404, "image")
    assert str(err.value) == "image 'x' is not in the store"
    with pytest.raises(ApiError, match="daemon answered 500 Internal Server Error"):
        api.call("GET", path("x"))


def test_stream_cut_short_is_a_clear_error(server: RawServer) -> None:
    server.answers.append(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"20\r\n{\"event\": \"start\"}\n")
    with pytest.raises(FlatstackError, match=r"the daemon closed the stream \(IncompleteRead\)"):
        list(Client(server.path).lines("GET", path("x")))
    server.answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"a\"")
    with pytest.raises(FlatstackError, match=r"daemon at .*: the connection closed with"):
        Client(server.path).call("GET", path("x"))


def test_not_http_is_an_error_naming_the_socket(server: RawServer) -> None:
    server.answers.append(b"SSH-2.0-nope\r\n")
    with pytest.raises(FlatstackError, match=f"daemon at {server.path}: bad status line"):
        Client(server.path).call("GET", path("x"))


def test_no_daemon(tmp_path: Path) -> None:
    sock = tmp_path / "missing.sock"
    with pytest.raises(DaemonUnreachable, match=f"cannot reach the flatstack daemon at {sock} "
                       r"\(no such file or directory\); is it running\?"):
        Client(str(sock)).call("GET", path("version"))
