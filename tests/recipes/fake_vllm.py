"""A small stand-in for a vLLM server (`vllm serve` in dev mode), for the tests of mmrl.rollout.vllm.

It listens on 127.0.0.1 (a free port) in a thread and records every request. Like the real server it renders the
chat turns with its own processor (the tiny model's, with its own pixel budget) and echoes the prompt token ids;
completions are random tokens drawn from the request's seed (the vision tokens never, as logit_bias asks), ending
with <|im_end|> unless they reach max_tokens. The weight-transfer endpoints record their payloads and answer {}.
It speaks what TRL 1.16's `VLLMClient` sends (`chat`, `get_server_info`, `weight_update`, `update_named_params`,
`reset_prefix_cache`). Faults on demand: `failures` is a list of HTTP statuses the next chat requests get (then
normal answers), `delay` seconds before every chat answer (for timeouts).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse


class FakeVLLM:
    def __init__(self, model_dir: str, min_pixels: int, max_pixels: int, advertised: dict | None = None) -> None:
        from transformers import AutoProcessor

        from mmrl.models.loading import set_pixel_budget

        self.processor = AutoProcessor.from_pretrained(model_dir)
        set_pixel_budget(self.processor, min_pixels, max_pixels)  # what it really resizes images to
        # what /server_info says (None: no mm_processor_kwargs at all)
        self.advertised = {"min_pixels": min_pixels, "max_pixels": max_pixels} if advertised is None else advertised
        self.dev_mode = True  # off: the development endpoints (/server_info, weights) answer 404, as without
        # VLLM_SERVER_DEV_MODE=1
        self.requests: list[tuple[str, str, Any]] = []
        self.authorization: list[str | None] = []  # the Authorization header of each request
        self.failures: list[int] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.timeout = 5
        self.url_port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeVLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def calls(self, path: str | None = None) -> list[tuple[str, str, Any]]:
        with self.lock:
            return [r for r in self.requests if path is None or r[1] == path]

    # --- what the server does -------------------------------------------------------------------------------------

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, body))
        if path == "/health":
            return 200, {}
        if path == "/v1/models":
            return 200, {"data": [{"id": "fake-qwen"}]}
        if path == "/server_info" and self.dev_mode:
            mm = {} if self.advertised == {} else {"mm_processor_kwargs": self.advertised}
            config = {"model_config": {"multimodal_config": mm}, "weight_transfer_config": {"backend": "nccl"}}
            return 200, {"vllm_config": config}
        if path == "/get_world_size" and self.dev_mode:
            return 200, {"world_size": 1}
        if path == "/v1/chat/completions":
            with self.lock:
                status = self.failures.pop(0) if self.failures else 200
            time.sleep(self.delay)
            return (status, {"detail": "overloaded"}) if status != 200 else (200, self.complete(body))
        if path in ("/init_weight_transfer_engine", "/start_weight_update", "/update_weights",
                    "/finish_weight_update", "/reset_prefix_cache") and self.dev_mode:  # fmt: skip
            return 200, {}
        return 404, {"detail": "Not Found"}

    def complete(self, body: dict) -> dict:
        from PIL import Image

        messages, images = [], []
        for message in body["messages"]:
            content = []
            for part in message["content"]:
                if part["type"] == "image_url":
                    data = part["image_url"]["url"].split(",", 1)[1]
                    images.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
                    content.append({"type": "image"})
                else:
                    content.append(part)
            messages.append({"role": message["role"], "content": content})
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = self.processor(text=[text], images=images, return_tensors="pt")["input_ids"][0].tolist()
        tokenizer = self.processor.tokenizer
        banned = {int(k) for k in body.get("logit_bias", {})} | set(body["stop_token_ids"])
        allowed = [i for i in range(len(tokenizer)) if i not in banned]
        choices = []
        for k in range(body["n"]):
            rng = random.Random(body["seed"] * 1000 + k)
            length = rng.randint(1, body["max_tokens"])
            ids = [rng.choice(allowed) for _ in range(length)]
            finish = "length"
            if length < body["max_tokens"]:
                ids[-1], finish = body["stop_token_ids"][0], "stop"
            logprobs = {"content": [{"token": f"token_id:{i}", "logprob": -rng.random(), "top_logprobs": []}
                                    for i in ids]}  # fmt: skip
            choices.append({"index": k, "token_ids": ids, "finish_reason": finish, "logprobs": logprobs,
                            "message": {"role": "assistant", "content": tokenizer.decode(ids)}})  # fmt: skip
        return {"id": "chatcmpl-fake", "model": "fake-qwen", "prompt_token_ids": prompt_ids, "choices": choices}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with fake.lock:
                    fake.authorization.append(self.headers.get("Authorization"))
                status, payload = fake.answer(method, urlparse(self.path).path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError):  # the client gave up waiting (the timeout test)
                    self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._reply("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._reply("POST")

            def log_message(self, *args: object) -> None:
                pass

        return Handler
