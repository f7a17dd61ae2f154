"""Drives a Tollgate gateway with the official `openai` package and prints
what it saw as JSON, for the Rust test to assert on."""

import base64
import json
import sys

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-client-key-must-not-reach-upstream")
out = {}

chat = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
    max_tokens=16,
)
out["chat"] = {
    "content": chat.choices[0].message.content,
    "finish_reason": chat.choices[0].finish_reason,
    "total_tokens": chat.usage.total_tokens,
}

stream = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "Count"}], max_tokens=8, stream=True
)
chunks = list(stream)
out["stream"] = {
    "chunks": len(chunks),
    "text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "usage_chunks": sum(1 for c in chunks if c.usage is not None),
    "finish_reason": [c.choices[0].finish_reason for c in chunks if c.choices][-1],
}

stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Count"}],
    max_tokens=8,
    stream=True,
    stream_options={"include_usage": True},
)
usage = [c.usage.completion_tokens for c in stream if c.usage is not None]
out["stream_with_usage"] = usage

emb = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
out["embeddings"] = {"count": len(emb.data), "dims": len(emb.data[0].embedding)}

images = client.images.generate(model="dall-e-2", prompt="a lake", n=2, response_format="b64_json")
out["images"] = [base64.b64decode(i.b64_json)[:4].hex() for i in images.data]

resp = client.responses.create(model="gpt-4o", input="Say hi", max_output_tokens=10)
out["responses"] = {"text": resp.output_text, "output_tokens": resp.usage.output_tokens}
events = list(client.responses.create(model="gpt-4o", input="Say hi", stream=True))
out["responses_stream"] = {
    "types": sorted({e.type for e in events}),
    "text": "".join(e.delta for e in events if e.type == "response.output_text.delta"),
}

speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello from the gateway")
audio = speech.read()
out["speech"] = {"riff": audio[:4].decode(), "bytes": len(audio)}

wav = speech_bytes = audio
transcript = client.audio.transcriptions.create(model="whisper-1", file=("hello.wav", wav, "audio/wav"))
out["transcription"] = transcript.text

try:
    client.chat.completions.create(model="gpt-4o-mini", messages="not a list")
    out["error"] = None
except openai.BadRequestError as e:
    out["error"] = {"status": e.status_code, "message": str(e)}

print(json.dumps(out))
