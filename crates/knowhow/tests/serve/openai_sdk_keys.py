"""The official OpenAI Python SDK against `knowhow serve` with API keys: prints one JSON object of what it saw.

Usage: python openai_sdk_keys.py BASE_URL KEY   (KEY: a key limited to 60 requests per minute)
"""

import json
import sys
import time

import openai

base_url, key = sys.argv[1] + "/v1", sys.argv[2]
seen = {}


def failure(call):
    try:
        call()
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code}
    return None


# The SDK itself refuses to send no key at all; the server's answer to that is tested over plain HTTP.
seen["malformed_key"] = failure(
    lambda: openai.OpenAI(base_url=base_url, api_key="not-a-key", max_retries=0).models.list()
)
seen["wrong_key"] = failure(
    lambda: openai.OpenAI(base_url=base_url, api_key="kh_" + "0" * 40, max_retries=0).models.list()
)

impatient = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
burst = 0
# The bucket refills while the burst runs, so a slow machine gets a few more than 60 through.
while burst < 200:
    try:
        impatient.models.list()
    except openai.RateLimitError as e:
        seen["over_rate"] = {
            "class": type(e).__name__,
            "status": e.status_code,
            "retry_after_ms": int(e.response.headers["retry-after-ms"]),
        }
        break
    burst += 1
seen["burst_ok"] = burst

# The SDK's own retry honours retry-after-ms: the next request succeeds after a wait.
patient = openai.OpenAI(base_url=base_url, api_key=key, max_retries=3)
started = time.monotonic()
patient.models.list()
seen["retried"] = time.monotonic() - started > 0.2
print(json.dumps(seen))
