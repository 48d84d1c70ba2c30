"""schemathesis hooks for scripts/openapi-fuzz.

A few rules of the API cannot be stated in an OpenAPI document, because they depend on server
state or relate values arithmetically; a schema-valid request can therefore meet them. Each is
documented in the field descriptions and README, and answered 400 with a message naming it:

- `no_limit`: no configured limit for the key and none sent (DESIGN.md section 2);
- `cost` above the applicable limit's `max_requests` (the limit may be configured);
- a request's window longer than the tenant's `max_request_window_seconds` (a setting);
- two limits of one key with the same algorithm and window (uniqueness by a derived key);
- a GCRA `burst` × (window / max_requests) beyond what the Redis script holds exactly (a product).

The first check below is schemathesis' own `positive_data_acceptance`, except that it lets
exactly those answers through. Any other refusal of a schema-valid request is still a finding.

The fuzz also writes the global settings (it fuzzes every operation), e.g. `new_keys_per_second: 1`
or `max_tenant_queue_size: 0`; later decisions are then shed with the documented 503 answers
(`key_budget_exhausted`, or `{"status": "rejected" | "timeout"}` from the tenant queue). The
second check is schemathesis' `not_a_server_error`, except that it lets exactly those 503s through;
a 500, any other 5xx or any other 503 is still a finding.

The fuzz runs both in place of the built-in ones.
"""

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

STATE_DEPENDENT_CODES = {"no_limit"}
INEXPRESSIBLE_RULES = (
    "cost must be an integer from 1 to max_requests",
    "(max_request_window_seconds)",
    "another limit of this key has the same algorithm and window",
    "burst × (window_duration_seconds / max_requests)",
)


def _known_rule(response):
    if response.status_code != 400:
        return False
    try:
        body = response.json()
    except Exception:
        return False
    if not isinstance(body, dict):
        return False
    if body.get("error") in STATE_DEPENDENT_CODES:
        return True
    message = body.get("message") or ""
    return body.get("error") == "invalid_argument" and any(r in message for r in INEXPRESSIBLE_RULES)


@schemathesis.check
def positive_data_acceptance_except_stated_rules(ctx, response, case):
    if _known_rule(response):
        return None
    return positive_data_acceptance(ctx, response, case)


def _documented_shed(response):
    if response.status_code != 503:
        return False
    try:
        body = response.json()
    except Exception:
        return False
    if not isinstance(body, dict):
        return False
    return body.get("error") == "key_budget_exhausted" or (
        body.get("allowed") is False and body.get("status") in ("rejected", "timeout")
    )


@schemathesis.check
def not_a_server_error_except_shedding(ctx, response, case):
    if _documented_shed(response):
        return None
    return not_a_server_error(ctx, response, case)
