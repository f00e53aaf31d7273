"""The probe service's FastAPI application: routes, request bodies, metrics."""
