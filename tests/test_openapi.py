"""The OpenAPI document describes the responses the API really sends (schemathesis holds the live
server to it: tests/reliability/test_schemathesis.py)."""

from __future__ import annotations


def test_the_document_lists_real_statuses_and_bodies(make_client):
    client, _ = make_client(batch=True)
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorResponse"]["properties"]) == {"error"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            success = [s for s in responses if s.startswith("2")]
            assert len(success) == 1, (method, path)
            body = responses[success[0]]["content"]
            assert any(c["schema"] != {} for c in body.values()), (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")) and path != "/health":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/ErrorResponse", (method, path, status)
            if path.startswith("/v1"):
                assert "401" in responses and "503" in responses, (method, path)
                assert op["security"], (method, path)
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert chat["200"]["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletion")
    assert "text/event-stream" in chat["200"]["content"]
    assert {"400", "404", "413", "422", "429"} <= set(chat)
    assert "422" not in doc["paths"]["/v1/models"]["get"]["responses"]
