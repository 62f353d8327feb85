"""The official OpenAI Python SDK's chat completions against live `knowhow serve`s: prints one JSON object.

Usage: python openai_sdk_chat.py CHAT_URL TOOLS_URL RAG_URL
  CHAT_URL   a server with --llm local:TINY_QWEN2 (model id "local")
  TOOLS_URL  a server whose model answers "w" with a get_weather tool call
  RAG_URL    a server with the collection "handbook"
"""

import json
import sys

import openai

chat_url, tools_url, rag_url = (url + "/v1" for url in sys.argv[1:4])
seen = {}


def client(url):
    return openai.OpenAI(base_url=url, api_key="not-needed-on-loopback", max_retries=0)


chat = client(chat_url)
seen["models"] = [m.model_dump() for m in chat.models.list().data]
hello = [{"role": "user", "content": "Hello"}]

plain = chat.chat.completions.create(model="local", messages=hello, max_tokens=8)
seen["plain"] = {
    "content": plain.choices[0].message.content,
    "finish_reason": plain.choices[0].finish_reason,
    "usage": plain.usage.model_dump(),
    "id": plain.id,
}

chunks = list(
    chat.chat.completions.create(
        model="local", messages=hello, max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
)
seen["stream"] = {
    "ids": sorted({c.id for c in chunks}),
    "content": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "finish_reasons": [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason],
    "usage_nulls": sum(1 for c in chunks[:-1] if c.usage is None),
    "chunks": len(chunks),
    "last": chunks[-1].model_dump(),
}

text = plain.choices[0].message.content
stop = text[3:6]
stopped = chat.chat.completions.create(model="local", messages=hello, max_tokens=8, stop=[stop])
seen["stop"] = {"stop": stop, "content": stopped.choices[0].message.content, "finish_reason": stopped.choices[0].finish_reason}

try:
    chat.chat.completions.create(model="no-such-model", messages=hello)
except openai.NotFoundError as e:
    seen["unknown_model"] = {"status": e.status_code, "code": e.code}

weather = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
calls = {}
finish = None
for c in client(tools_url).chat.completions.create(
    model="local", messages=[{"role": "user", "content": "w"}], tools=weather, stream=True
):
    if not c.choices:
        continue
    for call in c.choices[0].delta.tool_calls or []:
        entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
        entry["id"] = call.id or entry["id"]
        if call.function and call.function.name:
            entry["name"] += call.function.name
        if call.function and call.function.arguments:
            entry["arguments"] += call.function.arguments
    finish = c.choices[0].finish_reason or finish
seen["tool_call"] = {"calls": [calls[i] for i in sorted(calls)], "finish_reason": finish}

rag = client(rag_url)
seen["rag_models"] = [m.id for m in rag.models.list().data]
question = [{"role": "user", "content": "How many days of paid vacation do employees get?"}]
answer = rag.chat.completions.create(model="rag:handbook", messages=question)
message = answer.choices[0].message.model_dump()
seen["rag"] = {"content": message["content"], "citations": message.get("citations"), "abstained": message.get("abstained")}
last_delta = None
for c in rag.chat.completions.create(model="rag:handbook", messages=question, stream=True):
    if c.choices and c.choices[0].finish_reason:
        last_delta = c.choices[0].delta.model_dump()
seen["rag_stream_citations"] = last_delta.get("citations") if last_delta else None
print(json.dumps(seen))
