"""Agent frameworks with their defaults, pointed at `tollgate pay proxy`
(base URL = the proxy), which pays the Tollgate gateway behind it:

- `openai-agents`: an Agent with a default `@function_tool` (strict schema)
  on a Claude model (translated by the gateway) and on gpt-4o-mini;
- `langchain-openai`: a `bind_tools` loop on a Claude model, plain and
  streamed;
- the `openai` SDK's `models.retrieve` and `chat.completions.parse`
  (structured output) on gpt-4o-mini and on a Claude model, and
  `reasoning_effort` on a Claude model;
- the `anthropic` SDK's `messages.count_tokens`.

Usage: agent_frameworks.py BASE_URL. Prints one JSON object.
"""

import json
import sys

import anthropic
import openai
from pydantic import BaseModel

from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

BASE = sys.argv[1]
CLAUDE = "claude-sonnet-4-5"
KEY = "sk-client-key-not-for-upstream"

set_tracing_disabled(True)
out = {}
tool_runs = []


@function_tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    tool_runs.append(city)
    return f"{city}: 18 C, clear"


def agent_run(model):
    client = openai.AsyncOpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0)
    agent = Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=OpenAIChatCompletionsModel(model=model, openai_client=client),
    )
    before = len(tool_runs)
    result = Runner.run_sync(agent, "What's the weather in Paris?")
    return {"final": result.final_output, "tool_runs": tool_runs[before:]}


out["agents_claude"] = agent_run(CLAUDE)
out["agents_gpt"] = agent_run("gpt-4o-mini")


def weather(city: str) -> str:
    """Current weather for a city."""
    return f"{city}: 18 C, clear"


def langchain_loop(stream):
    llm = ChatOpenAI(model=CLAUDE, base_url=BASE + "/v1", api_key=KEY, max_retries=0, max_tokens=256)
    bound = llm.bind_tools([weather])
    messages = [HumanMessage("What's the weather in Paris?")]
    if stream:
        first = None
        for chunk in bound.stream(messages):
            first = chunk if first is None else first + chunk
    else:
        first = bound.invoke(messages)
    call = first.tool_calls[0]
    messages += [first, ToolMessage(weather(**call["args"]), tool_call_id=call["id"])]
    if stream:
        answer = "".join(str(c.content) for c in bound.stream(messages))
    else:
        answer = bound.invoke(messages).content
    return {"tool": call["name"], "args": call["args"], "answer": answer}


out["langchain_claude"] = langchain_loop(False)
out["langchain_claude_stream"] = langchain_loop(True)

oc = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0)
model = oc.models.retrieve("gpt-4o-mini")
out["models_retrieve"] = {
    "id": model.id,
    "object": model.object,
    "input_per_mtok": (model.model_extra or {}).get("tollgate", {}).get("prices", {}).get("input_per_mtok"),
}


class Weather(BaseModel):
    city: str
    temp_c: float


def parse(model):
    r = oc.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Weather report for Paris"}],
        response_format=Weather,
        max_tokens=200,
    )
    parsed = r.choices[0].message.parsed
    return {"city": parsed.city, "temp_c": parsed.temp_c}


out["parse_gpt"] = parse("gpt-4o-mini")
out["parse_claude"] = parse(CLAUDE)

r = oc.chat.completions.create(
    model=CLAUDE,
    messages=[{"role": "user", "content": "Think, then say hi"}],
    reasoning_effort="low",
    max_completion_tokens=2048,
)
extra = r.choices[0].message.model_extra or {}
out["reasoning_claude"] = {
    "reasoning": extra.get("reasoning_content"),
    "blocks": [b.get("type") for b in extra.get("thinking_blocks") or []],
    "content": r.choices[0].message.content,
}

ac = anthropic.Anthropic(base_url=BASE, api_key="sk-ant-" + KEY, max_retries=0)
count = ac.messages.count_tokens(
    model="claude-haiku-4-5",
    system="Be brief.",
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
)
out["count_tokens"] = {"input_tokens": count.input_tokens}

print(json.dumps(out))
