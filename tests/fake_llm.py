"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol, for tests and the
drafting benchmark. What it does for a request is chosen by the picture it is sent: images are
solid colours, and the red channel encodes a case number (see `case_colour`), whose mode comes
from `modes`. Latency, structured-output support and modes can be changed while it runs."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

GOOD_REPLY = {
    "caption": {
        "color": ["red", "brown"],
        "location": ["back"],
        "shape": ["round"],
        "lesion_type": ["papules"],
        "number": "few",
        "size": "5-10 mm",
        "size_mm": None,
        "texture": [],
        "border_surface": ["sharp"],
        "distribution": ["scattered"],
        "surrounding": [],
        "other": "",
    },
    "diagnoses": [
        {"diagnosis": "BCC", "confidence": 0.6},
        {"diagnosis": "nevus", "confidence": 0.3},
        {"diagnosis": "basal cell carcinoma", "confidence": 0.1},
    ],
}
REASONING = (
    "The lesion is a solitary pearly papule with a raised, rolled border and fine telangiectasia on the face. "
    "Its shiny surface and the arborising vessels point to basal cell carcinoma rather than a nevus."
)
HOSTILE_TEXT = (
    "PWNED ![p](http://127.0.0.1:9/pixel.png) [Session expired: log in again](http://2130706433:18777/login) "
    "<img src=x onerror=alert(1)> http://2130706433:18777/ **bold** ENDPWNED"
)
# replies the way real vision models write them: each keeps its good fields after salvage (curation/assist/salvage.py)
LOOSE_REPLIES = {
    "counts_and_ranges": {"number": "2", "size": "3-4 mm", "other": ["silvery scale", "Auspitz sign"], "confidence": 0.8},
    "band_against_measure": {"number": "multiple (about 10)", "size": "1-2 cm", "size_mm": 8},
    "unknown_measure": {"size_mm": 0, "number": "three", "color": 7},
    "nothing_usable": {"color": 7, "number": "tons", "size_mm": -1},
}
MODES = (
    "ok",
    "429",
    "500",
    "hang",
    "malformed",
    "wrong_enum",
    "truncated",
    "huge",
    "echo_key",
    "nested",
    "hostile_text",
    *LOOSE_REPLIES,
    *("usage_infinite", "usage_text", "usage_list", "diagnoses_number", "deep_body", "long_size", "endless_body"),
)
# answers crafted to crash a reader (a hostile probe): each must fail its own image, with a reason
HOSTILE_ANSWERS = ("usage_infinite", "usage_text", "usage_list", "diagnoses_number", "deep_body", "long_size")


def case_colour(case: int) -> tuple[int, int, int]:
    return (10 + 20 * case, 128, 128)


def case_of(data_url: str) -> int | None:
    try:
        raw = base64.b64decode(data_url.split(",", 1)[1])
        red = Image.open(io.BytesIO(raw)).convert("RGB").getpixel((2, 2))[0]
    except Exception:  # noqa: BLE001 - any picture that is not one of ours has no case number
        return None
    return round((red - 10) / 20)


class FakeLLM:
    def __init__(self, latency_s: float = 0.0, structured: bool = True, modes: dict[int, str] | None = None, hang_s: float = 3.0):
        self.latency_s, self.structured, self.modes, self.hang_s = latency_s, structured, dict(modes or {}), hang_s
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.requests = 0
        self.attempts: Counter = Counter()  # case -> requests seen
        self.times: dict[int, list[float]] = defaultdict(list)
        self.rejected_response_format = 0
        self.endless_sent: list[int] = []  # bytes of each endless answer sent before the client hung up
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in separate writes: with Nagle on, each reply would wait ~40 ms
            # for the client's delayed ACK, an artefact no real server has
            disable_nagle_algorithm = True

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.requests += 1
                try:
                    server.handle(self, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.request_queue_size = 128  # the default backlog of 5 stalls a burst of new connections
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset_counts(self) -> None:
        with self.lock:
            self.requests = self.max_in_flight = self.rejected_response_format = 0
            self.attempts.clear()

    # -- behaviour ------------------------------------------------------------------------------
    def handle(self, request: BaseHTTPRequestHandler, body: dict) -> None:  # noqa: C901 - one branch per scripted behaviour
        if request.path.rstrip("/") == "/stats":
            return self._send(request, 200, {"requests": self.requests, "max_in_flight": self.max_in_flight})
        if request.path.rstrip("/") != "/v1/chat/completions":
            return self._send(request, 404, {"error": {"message": "not found"}})
        if "response_format" in body and not self.structured:
            with self.lock:
                self.rejected_response_format += 1
            return self._send(request, 400, {"error": {"message": "response_format json_schema is not supported by this server"}})
        text_parts, image_url = [], None
        for message in body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                text_parts.append(content)
            else:
                for part in content or []:
                    if part.get("type") == "text":
                        text_parts.append(part["text"])
                    elif part.get("type") == "image_url":
                        image_url = part["image_url"]["url"]
        case = case_of(image_url) if image_url and self.modes else None  # decoding costs: only when cases matter
        with self.lock:
            self.attempts[case] += 1
            attempt = self.attempts[case]
            self.times[case].append(time.monotonic())
        mode = self.modes.get(case, "ok")
        assert mode in MODES, f"unknown fake-server mode {mode!r}"
        time.sleep(self.latency_s)
        if mode == "429" and attempt == 1:
            return self._send(request, 429, {"error": {"message": "slow down"}}, {"Retry-After": "0.3"})
        if mode == "500" and attempt == 1:
            return self._send(request, 500, {"error": {"message": "boom"}})
        if mode == "hang":
            time.sleep(self.hang_s)
        if mode == "echo_key":
            return self._send(request, 401, {"error": {"message": f"bad key {request.headers.get('authorization')}"}})
        if mode == "deep_body":  # the answer itself nested 100,000 deep (RecursionError in a plain json.loads)
            return self._send_raw(request, 200, ('{"choices": ' + "[" * 100_000 + "]" * 100_000 + "}").encode())
        if mode == "endless_body":  # an answer that never ends: how much is sent before the client hangs up
            return self._send_endless(request)
        if mode == "hostile_text":  # markup, a tracking pixel, a fake link and a bare dotless URL
            content = HOSTILE_TEXT
            mode = "ok"
        else:
            content = None
        prompt = " ".join(text_parts)
        if content is not None:
            pass
        elif "diagnostic reasoning" in prompt:
            content = REASONING
        else:
            reply = json.loads(json.dumps(GOOD_REPLY))
            if mode == "wrong_enum":
                reply["caption"]["number"] = "zillions"
            elif mode == "nothing_usable":  # only bad fields
                reply["caption"] = dict(LOOSE_REPLIES[mode])
            elif mode in LOOSE_REPLIES:  # the good reply with these fields written loosely
                reply["caption"].update(LOOSE_REPLIES[mode])
            if mode == "diagnoses_number":
                reply["diagnoses"] = 5
            elif mode == "long_size":
                reply["caption"]["size"] = "1" * 30_000
            content = json.dumps(reply)
            if mode == "malformed":
                content = "I think this is a lesion {but I will not give you JSON"
            elif mode == "truncated":
                content = content[: len(content) // 2]
            elif mode == "nested":  # a hostile reply: 90,000 nested brackets inside an object (under the size cap)
                content = '{"caption": ' + "[" * 90_000 + "]" * 90_000 + "}"
            elif mode == "huge":
                content = json.dumps({"caption": {"other": "x" * 5_000_000}, "diagnoses": []})
            if not self.structured and mode == "ok":
                content = f"Here is my description.\n```json\n{content}\n```\nHope this helps."
        usage = {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
        if mode == "usage_infinite":
            usage["prompt_tokens"] = float("inf")  # sent as Infinity, which json.loads reads
        elif mode == "usage_text":
            usage["completion_tokens"] = "forty"
        elif mode == "usage_list":
            usage = [1, 2]
        self._send(
            request,
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": usage,
            },
        )

    def _send_endless(self, request: BaseHTTPRequestHandler) -> None:
        chunk = b" " * 65536
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(400 * 1024 * 1024))
        request.end_headers()
        sent = 0
        try:
            request.wfile.write(b'{"choices": [{"message": {"content": "')
            while sent < 400 * 1024 * 1024:
                request.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        with self.lock:
            self.endless_sent.append(sent)

    @staticmethod
    def _send_raw(request: BaseHTTPRequestHandler, code: int, data: bytes) -> None:
        try:
            request.send_response(code)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, code: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            request.send_response(code)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                request.send_header(key, value)
            request.end_headers()
            request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to send to


if __name__ == "__main__":  # run as its own process (benchmarks): python -m tests.fake_llm --latency 0.2
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    with FakeLLM(latency_s=args.latency) as fake:
        print(fake.url, flush=True)
        fake.thread.join()
