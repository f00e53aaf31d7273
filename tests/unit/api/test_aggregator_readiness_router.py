"""services/aggregator/api/routes/readiness.py in process: ready while the store answers, else 503."""

from fastapi.testclient import TestClient

from services.aggregator.api.app import create_app
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings
from services.aggregator.state import InMemoryStateStore, StoreUnavailable
from tests.unit.api.apps import adapter


class DownStore(InMemoryStateStore):
    """A store that stops answering once the service is built (ping is what readiness asks)."""

    down = False

    def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("redis at 127.0.0.1:1 does not answer")


def test_readyz_follows_the_store():
    store = DownStore()
    service = AggregatorService(store, AggregatorSettings(defense="fedavg"), adapter())
    with TestClient(create_app(service)) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        store.down = True
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json() == {"status": "unavailable", "detail": "redis at 127.0.0.1:1 does not answer"}
        assert client.get("/healthz").status_code == 200  # liveness does not depend on the store
