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


def test_open_registration_is_rate_limited_by_a_sliding_window():
    store = InMemoryStateStore()
    clock = Clock(1000.0)
    settings = AggregatorSettings(
        registration="open", open_registration_limit=3, open_registration_window_s=60
    )
    registrar = Registrar(store, settings, clock)
    for i, now in enumerate((1000.0, 1010.0, 1059.5)):
        clock.now = now
        registrar.register(f"c{i}", None)
    clock.now = 1059.75  # the oldest (t=1000) leaves the window at t=1060: 0.25 s, Retry-After 1
    assert _refused(registrar, "c3", None) == (429, "open registration is limited to 3 per 60 s", 1)
    clock.now = 1030.0
    assert _refused(registrar, "c3", None)[2] == 30
    assert _refused(registrar, "c0", None)[0] == 429  # counted before the duplicate check: no probing
    clock.now = 1060.0  # exactly at the edge: t=1000 is out, (1000, 1060] holds 2
    registrar.register("c3", None)
    assert _refused(registrar, "c4", None)[2] == 10  # full again until t=1010 leaves at 1070
    clock.now = 1069.999
    assert _refused(registrar, "c4", None)[0] == 429
    clock.now = 1070.0
    assert _refused(registrar, "c0", None)[0] == 409  # admitted by the window, refused as a duplicate
    assert store.registered_clients() == ["c0", "c1", "c2", "c3"]


def test_a_burst_across_a_fixed_window_edge_gets_only_the_limit():
    # A fixed 60 s window starting at t=960 would let 3 through at t=1019.9 and 3 more at t=1020.0.
    store = InMemoryStateStore()
    clock = Clock(1019.9)
    settings = AggregatorSettings(
        registration="open", open_registration_limit=3, open_registration_window_s=60
    )
    registrar = Registrar(store, settings, clock)
    admitted = 0
    for i, now in enumerate([1019.9] * 3 + [1020.0] * 3):
        clock.now = now
        try:
            registrar.register(f"b{i}", None)
            admitted += 1
        except RegistrationError as error:
            assert (error.status_code, error.retry_after_s) == (429, 60)  # 59.9 s -> 60
    assert admitted == 3
