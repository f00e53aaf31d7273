"""The probe service: ONNX LoRA-probes on Ray Serve behind a FastAPI ingress, plus its Python client.

Pure pieces (request decoding, probe selection and scoring) know nothing of Ray or HTTP, so they are unit
tested in-process; `deployment` wires them into Serve, `api` into FastAPI, `client` talks to it over HTTP.
"""
