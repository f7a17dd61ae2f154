"""The official `openai` and `anthropic` SDKs pointed at `tollgate pay proxy`
(base URL = the proxy), which pays the Tollgate gateway behind it. The SDKs
know nothing about payments: they send their (unused) API keys and get
plain answers and streams.

Usage: sdk_proxy_clients.py BASE_URL [refused]
Prints one JSON object. With `refused`, the proxy is expected to refuse to
pay: each call's error (status, error type, message) is recorded instead.
"""

import json
import sys

import anthropic
import openai

BASE = sys.argv[1]
REFUSED = len(sys.argv) > 2 and sys.argv[2] == "refused"

oc = openai.OpenAI(base_url=BASE + "/v1", api_key="sk-client-key-not-for-upstream", max_retries=0)
ac = anthropic.Anthropic(base_url=BASE, api_key="sk-ant-client-key-not-for-upstream", max_retries=0)
out = {}


def chat():
    r = oc.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
        max_tokens=16,
    )
    return {
        "object": r.object,
        "text": r.choices[0].message.content,
        "finish_reason": r.choices[0].finish_reason,
        "completion_tokens": r.usage.completion_tokens,
    }


def chat_stream():
    chunks, objects, text, finish = 0, set(), "", None
    for chunk in oc.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=12,
        stream=True,
    ):
        chunks += 1
        objects.add(str(chunk.object))
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return {"chunks": chunks, "objects": sorted(objects), "text": text, "finish_reason": finish}


def messages():
    m = ac.messages.create(
        model="claude-haiku-4-5",
        max_tokens=16,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
    )
    return {
        "type": m.type,
        "text": m.content[0].text,
        "stop_reason": m.stop_reason,
        "output_tokens": m.usage.output_tokens,
    }


def messages_stream():
    types = set()
    with ac.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=10,
        messages=[{"role": "user", "content": "Say hello"}],
    ) as stream:
        text = ""
        for event in stream:
            types.add(event.type)
            if event.type == "text":
                text += event.text
        final = stream.get_final_message()
    return {
        "text": text,
        "event_types": sorted(types),
        "stop_reason": final.stop_reason,
        "output_tokens": final.usage.output_tokens,
    }


CALLS = {
    "chat": chat,
    "chat_stream": chat_stream,
    "messages": messages,
    "messages_stream": messages_stream,
}

if REFUSED:
    for name in ("chat", "messages"):
        try:
            CALLS[name]()
            out[name] = {"refused": False}
        except (openai.APIStatusError, anthropic.APIStatusError) as e:
            body = e.body if isinstance(e.body, dict) else {}
            error = body.get("error", body) if isinstance(body, dict) else {}
            out[name] = {
                "refused": True,
                "status": e.status_code,
                "type": error.get("type"),
                "code": error.get("code"),
                "message": error.get("message"),
            }
else:
    for name, call in CALLS.items():
        out[name] = call()

print(json.dumps(out))
