"""Stand-ins for the guard tests: a deterministic guard that answers each verdict branch by the words of the message it
is asked about (Llama Guard 3's prompt format, as the front door sends it), and a model that answers with the words the
request's `say` field gives, whole or streamed; both record what they got. aiohttp in a thread of the test process."""

from __future__ import annotations

import asyncio
import json
import re
import threading

from aiohttp import web

from processes import free_port

# The word in the message the guard is asked about -> what the stand-in guard answers.
VERDICTS = {"harmless": "safe", "weapon": "unsafe\nS1", "hateful": "unsafe\nS10,S11", "odd": "it depends",
            "slow": None, "libel": "unsafe\nS5"}


class GuardStandIns:
    """The stand-in guard (POST /v1/completions) and model (chat and text completions, whole or streamed: the answer's
    words are the request's `say` field), each on its own port, recording what they got."""

    def __init__(self):
        self.guard_seen, self.model_seen = [], []
        self.guard_port, self.model_port = free_port(), free_port()

    async def guard(self, request):
        body = await request.json()
        self.guard_seen.append(body)
        role = re.search(r"ONLY THE LAST (\w+) message", body["prompt"]).group(1)
        conversation = body["prompt"].split("<BEGIN CONVERSATION>")[1].split("<END CONVERSATION>")[0]
        last = [t for t in re.split(r"\n\n(?=User: |Agent: )", conversation.strip()) if t.startswith(role + ": ")][-1]
        verdict = next((v for word, v in VERDICTS.items() if word in last), "safe")
        if verdict is None:
            await asyncio.sleep(5)
            verdict = "safe"
        return web.json_response({"object": "text_completion", "choices": [{"index": 0, "text": verdict, "finish_reason": "stop"}]})

    async def model(self, request):
        body = await request.json()
        self.model_seen.append(body)
        words = body.get("say", "fine words here").split(" ")
        chat = request.path.endswith("chat/completions")
        if not body.get("stream"):
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop"}
            else:
                choice = {"index": 0, "text": " ".join(words), "finish_reason": "stop"}
            return web.json_response({"id": "x", "object": "chat.completion" if chat else "text_completion", "created": 1,
                                      "model": body["model"], "choices": [choice],
                                      "usage": {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, word in enumerate(words):
            last = i == len(words) - 1
            if chat:
                choice = {"index": 0, "delta": {"content": word + " "}, "logprobs": None, "finish_reason": "stop" if last else None}
                kind = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": word + " ", "logprobs": None, "finish_reason": "stop" if last else None}
                kind = "text_completion"
            event = {"id": "s", "object": kind, "created": 1, "model": body["model"], "choices": [choice]}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def health(self, _request):
        return web.Response(text="ok")

    async def models(self, _request):
        return web.json_response({"object": "list", "data": [{"id": "tiny-a", "object": "model"}]})

    def start(self):
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main():
            guard, model = web.Application(), web.Application()
            guard.router.add_post("/v1/completions", self.guard)
            guard.router.add_get("/health", self.health)
            model.router.add_post("/v1/{tail:.*}", self.model)
            model.router.add_get("/health", self.health)
            model.router.add_get("/v1/models", self.models)
            for app, port in ((guard, self.guard_port), (model, self.model_port)):
                runner = web.AppRunner(app)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", port).start()
            ready.set()
        threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()), daemon=True).start()
        assert ready.wait(10)
        return self
