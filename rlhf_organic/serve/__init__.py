"""Serve a policy as a chat page that collects organic feedback in the formats ``ingest`` reads (docs/serve.md)."""
