"""A fake OpenAI-compatible service for the query tests: good answers, the SDK's completion type,
and a real local HTTP server (``OpenAICompatibleServer``, the ``openai_server`` fixture) that the
SDK's own request code talks to. Test modules import the fixture by name."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from openai.types.chat import ChatCompletion


def good_answer(prompt: str) -> list[str]:
    """What a well-behaved model answers: n distinct queries without the title, per item."""
    n = int(re.search(r"exactly (\d+) search queries", prompt).group(1))
    genres = re.search(r"^Genres: (.*)$", prompt, re.MULTILINE).group(1).lower()
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:6]
    return [f"{genres} pick {i} ref{tag}" for i in range(n)]


def chat_completion(content: str) -> ChatCompletion:
    """An OpenAI chat completion whose one message is ``content``."""
    message = {"role": "assistant", "content": content}
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
        }
    )


class OpenAICompatibleServer:
    """A local stand-in for vLLM/Ollama: /v1/chat/completions answering good queries as JSON.

    It logs each request's prompt in order (``received``), with whether it answered it (``log``);
    ``answered`` is what a real service would bill. With ``set_answer_limit(n)`` it answers n requests in all, then holds
    the rest unanswered until :meth:`release`, so a test can kill its client at a known point.
    ``runners=2`` holds every request until two different keys have asked, so that two clients
    started together really overlap.
    """

    def __init__(self, runners: int = 1, delay_seconds: float = 0.0):
        self.authorizations: list[str] = []
        self.received: list[str] = []
        self.answered: list[str] = []
        self.log: list[tuple[str, bool]] = []  # (prompt, answered) per request, in arrival order
        self.answer_limit: int | None = None
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._runners_arrived = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"]
                with server._lock:
                    server.authorizations.append(self.headers.get("Authorization", ""))
                    server.received.append(prompt)
                    if len(set(server.authorizations)) >= runners:
                        server._runners_arrived.set()
                    answering = server.answer_limit is None or len(server.answered) < server.answer_limit
                    if answering:
                        server.answered.append(prompt)
                    server.log.append((prompt, answering))
                    released = server._released
                server._runners_arrived.wait(10)
                if not answering:
                    released.wait(60)
                    return  # never answered: its client was killed meanwhile
                time.sleep(delay_seconds)
                content = json.dumps({"queries": good_answer(prompt)})
                payload = chat_completion(content).model_dump_json().encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def set_answer_limit(self, limit: int | None) -> None:
        with self._lock:
            self.answer_limit = limit
            self._released = threading.Event()

    def release(self) -> None:
        """Let the held requests go, unanswered."""
        self._released.set()

    def close(self):
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def openai_server(monkeypatch):
    """A running OpenAICompatibleServer, reached directly (no proxy), closed after the test."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = OpenAICompatibleServer()
    yield server
    server.close()
