"""The audit service: the behavioural audit (shared.audit) on Ray Serve behind a FastAPI route.

`bank` holds the base models and their canary audits (no Ray, no HTTP), `payloads` decodes requests,
`api` is the FastAPI app, `deployment` the Serve application, `client` the HTTP clients.
"""
