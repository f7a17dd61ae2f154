"""Claude through Tollgate with the official SDKs: the `openai` package on
the translated /v1/chat/completions route, the `anthropic` package on the
native /v1/messages route. Prints one JSON object."""

import json
import sys

import anthropic
import openai

BASE = sys.argv[1]
MODEL = "claude-sonnet-4-5"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    }
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

out = {}
oc = openai.OpenAI(base_url=BASE + "/v1", api_key="sk-not-used", max_retries=0)

r = oc.chat.completions.create(
    model=MODEL,
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ],
    max_tokens=16,
)
out["chat"] = {
    "text": r.choices[0].message.content,
    "finish_reason": r.choices[0].finish_reason,
    "prompt_tokens": r.usage.prompt_tokens,
    "completion_tokens": r.usage.completion_tokens,
    "model": r.model,
    "object": r.object,
}

text, finish, usage, roles = "", None, None, []
for chunk in oc.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Say hello"}],
    max_tokens=8,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices:
        delta = chunk.choices[0].delta
        if delta.role:
            roles.append(delta.role)
        text += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage.completion_tokens
out["stream"] = {"text": text, "finish_reason": finish, "usage": usage, "roles": roles}

r = oc.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=64)
call = r.choices[0].message.tool_calls[0]
out["tools"] = {
    "finish_reason": r.choices[0].finish_reason,
    "name": call.function.name,
    "arguments": json.loads(call.function.arguments),
    "id_prefix": call.id[:6],
}
follow = oc.chat.completions.create(
    model=MODEL,
    messages=ASK
    + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ],
    tools=TOOLS,
    max_tokens=16,
)
out["tool_followup"] = {
    "text": follow.choices[0].message.content,
    "finish_reason": follow.choices[0].finish_reason,
}

calls, finish = {}, None
for chunk in oc.chat.completions.create(
    model=MODEL, messages=ASK, tools=TOOLS, max_tokens=64, stream=True
):
    if not chunk.choices:
        continue
    for tc in chunk.choices[0].delta.tool_calls or []:
        entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
        entry["id"] = tc.id or entry["id"]
        entry["name"] += (tc.function.name or "") if tc.function else ""
        entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
    finish = chunk.choices[0].finish_reason or finish
first = calls[0]
out["stream_tools"] = {
    "count": len(calls),
    "name": first["name"],
    "arguments": json.loads(first["arguments"]),
    "finish_reason": finish,
}

try:
    oc.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8, n=2
    )
    out["refused"] = None
except openai.BadRequestError as e:
    out["refused"] = {"status": e.status_code, "param": e.body.get("param") if isinstance(e.body, dict) else None}

ac = anthropic.Anthropic(base_url=BASE, api_key="sk-ant-not-used", max_retries=0)
m = ac.messages.create(
    model="claude-haiku-4-5",
    max_tokens=16,
    system="Be brief.",
    messages=[{"role": "user", "content": "Say hello"}],
)
out["messages"] = {
    "text": m.content[0].text,
    "stop_reason": m.stop_reason,
    "input_tokens": m.usage.input_tokens,
    "output_tokens": m.usage.output_tokens,
}
with ac.messages.stream(
    model="claude-haiku-4-5",
    max_tokens=8,
    messages=[{"role": "user", "content": "Say hello"}],
) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
out["messages_stream"] = {
    "text": streamed,
    "stop_reason": final.stop_reason,
    "output_tokens": final.usage.output_tokens,
}

print(json.dumps(out))
