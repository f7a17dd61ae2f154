"""Lists the gateway's models with the official `openai` package."""

import json
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
print(json.dumps([m.id for m in client.models.list()]))
