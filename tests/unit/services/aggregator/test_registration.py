import pytest

from services.aggregator.registration import Registrar, RegistrationError, digest
from services.aggregator.settings import AggregatorSettings
from services.aggregator.state import InMemoryStateStore


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _refused(registrar: Registrar, client: str, token: str | None) -> tuple[int, str, int | None]:
    with pytest.raises(RegistrationError) as caught:
        registrar.register(client, token)
    return caught.value.status_code, str(caught.value), caught.value.retry_after_s


def test_enrollment_tokens_are_single_use_bound_and_survive_a_restart():
    store = InMemoryStateStore()
    settings = AggregatorSettings(enrollment_tokens=["preloaded"])
    registrar = Registrar(store, settings)
    assert registrar.load_configured_tokens() == 1
    assert _refused(registrar, "a", None)[0] == 401
    assert _refused(registrar, "a", "forged")[:2] == (403, "unknown enrollment token")
    token = registrar.register("a", "preloaded")
    assert store.client_token_hash("a") == digest(token)
    assert _refused(registrar, "b", "preloaded")[:2] == (403, "this enrollment token was already used")
    assert Registrar(store, settings).load_configured_tokens() == 0  # reloading does not revive it
    assert _refused(registrar, "b", "preloaded")[0] == 403
    bound = registrar.issue(1, client_id="c")[0]
    assert _refused(registrar, "d", bound)[:2] == (
        403,
        "this enrollment token was issued for another client id",
    )
    free = registrar.issue(2)
    assert _refused(registrar, "a", free[0])[0] == 409  # the id is taken; the token stays unused
    registrar.register("c", bound)
    registrar.register("e", free[0])
    assert store.registered_clients() == ["a", "c", "e"]


def test_open_registration_is_rate_limited_per_window():
    store = InMemoryStateStore()
    clock = Clock(1000.0)  # window [960, 1020): 20 s left
    settings = AggregatorSettings(
        registration="open", open_registration_limit=3, open_registration_window_s=60
    )
    registrar = Registrar(store, settings, clock)
    for i in range(3):
        registrar.register(f"c{i}", None)
    assert _refused(registrar, "c3", None) == (429, "open registration is limited to 3 per 60 s", 20)
    assert _refused(registrar, "c0", None)[0] == 429  # counted before the duplicate check: no probing
    clock.now = 1020.0
    registrar.register("c3", None)
    assert _refused(registrar, "c0", None)[0] == 409
    assert store.registered_clients() == ["c0", "c1", "c2", "c3"]
