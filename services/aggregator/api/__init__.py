"""The aggregator's REST API: remote clients (register, task, submit) and operators (status, trust, audit)."""
