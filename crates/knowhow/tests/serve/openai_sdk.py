"""The official OpenAI Python SDK against a live `knowhow serve`: prints one JSON object of what it saw.

Usage: python openai_sdk.py BASE_URL MODEL TEXTS_JSON
"""

import json
import sys

import openai

base_url, model, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = openai.OpenAI(base_url=base_url + "/v1", api_key="not-needed-on-loopback", max_retries=0)

listed = [m.id for m in client.models.list().data]
# No encoding_format: the SDK asks for base64 and decodes it to floats itself.
default = client.embeddings.create(model=model, input=texts)
floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
single = client.embeddings.create(model="default", input=texts[0], encoding_format="float")

errors = {}
try:
    client.embeddings.create(model="no-such-model", input="x")
except openai.NotFoundError as e:
    errors["unknown_model"] = {"status": e.status_code, "code": e.code}
try:
    client.embeddings.create(model=model, input=[[101, 2023, 102]])
except openai.BadRequestError as e:
    errors["token_ids"] = {"status": e.status_code, "param": e.param}
try:
    client.embeddings.create(model=model, input="x", dimensions=7)
except openai.BadRequestError as e:
    errors["dimensions"] = {"status": e.status_code, "param": e.param}

print(json.dumps({
    "models": listed,
    "default": [d.embedding for d in default.data],
    "float": [d.embedding for d in floats.data],
    "indexes": [d.index for d in floats.data],
    "single": single.data[0].embedding,
    "usage": floats.usage.prompt_tokens,
    "model": floats.model,
    "errors": errors,
}))
