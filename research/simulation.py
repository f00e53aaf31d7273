"""The research simulation: benign and malicious clients as Ray actors, federated rounds, safety metrics.

One call can sweep several malicious ratios; Ray, the shared frozen base and the evaluation of the
starting model are set up once and reused across them.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from peft import PeftModel
from pydantic import BaseModel, ConfigDict, Field

from probes.artifact import ProbeManifest
from research.clients.actor import HostReserve, RayClientPool
from research.clients.attacks import AttackConfig
from research.clients.population import ClientSpec, build_population
from research.clients.update_cache import CachedClientPool, TrainingPool
from research.orchestrator import RoundOrchestrator
from services.aggregator.defenses import DEFENSES, DefenseSettings
from services.aggregator.defenses.audit_level import AUDIT_INPUT, AuditedDefense, AuditLevelSettings
from services.aggregator.inputs import Inputs
from services.aggregator.probe_binding import bind_probe, resolve_probe
from services.aggregator.realignment import RealignmentSettings, split_realignment
from services.aggregator.scoring import HandleAuditor, HandleScorer
from services.aggregator.service import AggregatorService, RoundSummary
from services.aggregator.settings import AggregatorSettings, FederationConfig, aggregation_rule
from services.aggregator.state import InMemoryStateStore, RedisStateStore, StateStore, connect
from services.aggregator.strategies import takes_option
from services.aggregator.strategies.tensors import expected_attackers
from services.aggregator.verification import VerificationSettings
from services.ray_runtime import ensure_ray
from shared.config import LocalTrainingConfig, LoraSettings, runtime_settings
from shared.data.pools import DataPools, build_pools
from shared.evaluation.cache import cached_evaluation
from shared.evaluation.metrics import EvalSettings, SafetyReport, evaluate_model
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.lora_state import LoraState
from shared.model_zoo import LoadedModel, load_base_model
from shared.model_zoo.sharing import export_frozen_base


class SimulationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2-135m"
    num_clients: int = Field(10, ge=1)
    samples_per_client: int = Field(100, ge=1)
    benign_source: str = "helpful"
    defense_settings: DefenseSettings = DefenseSettings()
    strategy_options: dict[str, object] = Field(
        default_factory=dict,
        description=(
            "Options of the aggregation rule (a baseline, or a level's defense_settings.aggregator). "
            "num_attackers, where the rule takes one and it is not given, is the expected number of "
            "malicious clients per round: round(clients_per_round * malicious / clients)."
        ),
    )
    probe_id: str | None = Field(None, description="Probe for the Safe-FedLLM levels (default: by model).")
    realignment: RealignmentSettings = Field(
        default_factory=RealignmentSettings,
        description="Server-side realignment; a defense named '<name>+realign' (shadow+realign) turns it on.",
    )
    attack: AttackConfig | None = Field(
        None, description="What every malicious client does beyond training on harmful data (E6, E7)."
    )
    verification: VerificationSettings = Field(
        default_factory=VerificationSettings,
        description="The server's checks (norm bound, structure); unset fields take each level's defaults.",
    )
    store: str = Field("memory", description="memory, or redis (SAFE_FEDLLM_REDIS_URL; embedded if unset).")
    federation: FederationConfig = FederationConfig()
    lora: LoraSettings = LoraSettings()
    training: LocalTrainingConfig = LocalTrainingConfig()
    eval: EvalSettings = EvalSettings()
    eval_threads: int = Field(2, ge=1)
    max_live_clients: int | None = Field(
        None,
        ge=1,
        description=(
            "At most this many client actors alive (and training) at once; None: every sampled client "
            "trains at once. A training SmolLM2 client holds ~2 GiB."
        ),
    )
    cache_dir: str | None = Field(
        None,
        description=(
            "Remember client training and evaluations here (experiment grids): a client given the same "
            "adapter, data, settings, round and lr is not trained twice, an adapter not evaluated twice. "
            "None trains and evaluates everything."
        ),
    )


def _row(
    config: SimulationConfig, ratio: float, label: str, report: SafetyReport, extra: dict[str, Any]
) -> dict:
    return {
        "defense": label,
        "malicious_ratio": ratio,
        "harmless_rate": report.harmless_rate,
        "harmless_rate_ci95": list(report.harmless_rate_ci95),
        "over_refusal_rate": report.over_refusal_rate,
        "harm_preference": report.harm_preference,
        "harm_preference_ci95": list(report.harm_preference_ci95),
        "benign_loss": report.benign_loss,
        "rounds": config.federation.num_rounds,
        "model": config.model,
        "seed": config.federation.seed,
        **extra,
    }


@dataclass
class ProbeHookup:
    manifest: ProbeManifest
    scorer: HandleScorer


class ProbeConnection:
    """The probe service deployed on this Ray once; per level, the probe made for this base model, LoRA
    shape and the level's input (PROBE_POLICIES: snapshot levels read layer-0 B, the verified level the
    whole update), with its fingerprint checked."""

    def __init__(self, config: SimulationConfig, fingerprint: str) -> None:
        from services.probe_service.deployment import scorer_handle, start_probe_service
        from services.probe_service.scoring import ProbeBank
        from services.probe_service.settings import ProbeServiceSettings

        settings = ProbeServiceSettings()
        self.config, self.fingerprint = config, fingerprint
        self.bank = ProbeBank(settings.artifacts_dir)
        start_probe_service(settings)
        self.scorer = HandleScorer(scorer_handle(settings))
        self._hookups: dict[str, ProbeHookup] = {}

    def for_input(self, inputs: Inputs) -> ProbeHookup:
        if inputs not in self._hookups:
            manifest = resolve_probe(
                self.bank,
                model=self.config.model,
                lora=self.config.lora,
                inputs=inputs,
                base_fingerprint=self.fingerprint,
                probe_id=self.config.probe_id,
            )
            self._hookups[inputs] = ProbeHookup(manifest, self.scorer)
        return self._hookups[inputs]


def connect_audit(config: SimulationConfig) -> HandleAuditor:
    """Deploy the audit service on this Ray for the simulated model (canaries: SAFE_FEDLLM_AUDIT_*)."""
    from services.audit_service.deployment import audit_handle, start_audit_service
    from services.audit_service.settings import AuditServiceSettings

    settings = AuditServiceSettings(models=(config.model,), lora=config.lora)
    start_audit_service(settings)
    return HandleAuditor(audit_handle(settings))


def _store(config: SimulationConfig, label: str) -> StateStore:
    if config.store == "memory":
        return InMemoryStateStore()
    return RedisStateStore(connect(), namespace=f"sim-{label}-{uuid.uuid4().hex[:8]}")


@dataclass
class SweepBase:
    """A base model as the sweeps use it: loaded (and wrapped with a fresh adapter, θ^0) in the driver for
    evaluation, and in the object store for the client actors; the data pools beside it."""

    loaded: LoadedModel
    pools: DataPools
    frozen_ref: ray.ObjectRef
    peft_model: PeftModel
    initial_state: LoraState


class SimulationSession:
    """What consecutive sweeps in one process share while it is open (an experiment's configurations):
    each base model loaded and put in the object store once, the probe and audit services deployed once,
    and idle client actors, which the clients of the next federation take instead of starting workers.
    Results do not depend on it: clients train from seeds per client and round, not from process state."""

    def __init__(self) -> None:
        self.hosts = HostReserve()
        self._bases: dict[tuple[str, LoraSettings], SweepBase] = {}
        self._probes: dict[tuple[str, LoraSettings, str | None, str], ProbeConnection] = {}
        self._auditors: dict[tuple[str, LoraSettings], HandleAuditor] = {}

    def base(self, config: SimulationConfig) -> SweepBase:
        key = (config.model, config.lora)
        if key not in self._bases:  # per LoRA shape too: PEFT wraps the loaded model in place
            loaded = load_base_model(config.model)
            ensure_ray()
            frozen_ref = ray.put(export_frozen_base(loaded.model, loaded.fingerprint))  # before PEFT wraps it
            peft_model = attach_lora(loaded.model, config.lora)
            pools = build_pools(runtime_settings().data_dir)
            self._bases[key] = SweepBase(loaded, pools, frozen_ref, peft_model, get_lora_state(peft_model))
        return self._bases[key]

    def probes(self, config: SimulationConfig, fingerprint: str) -> ProbeConnection:
        key = (config.model, config.lora, config.probe_id, fingerprint)
        if key not in self._probes:
            self._probes[key] = ProbeConnection(config, fingerprint)
        return self._probes[key]

    def auditor(self, config: SimulationConfig) -> HandleAuditor:
        key = (config.model, config.lora)
        if key not in self._auditors:
            self._auditors[key] = connect_audit(config)
        return self._auditors[key]

    def close(self) -> None:
        self.hosts.close()
        for connection in self._probes.values():
            connection.scorer.close()
        for auditor in self._auditors.values():
            auditor.close()


_SESSION: ContextVar[SimulationSession | None] = ContextVar("simulation_session", default=None)


@contextmanager
def simulation_session() -> Iterator[SimulationSession]:
    """Share set-up across the sweeps run inside (`SimulationSession`); the idle actors stop at the end."""
    session = SimulationSession()
    token = _SESSION.set(session)
    try:
        yield session
    finally:
        _SESSION.reset(token)
        session.close()


def run_sweep(
    config: SimulationConfig,
    runs: Sequence[tuple[float, str]],
    *,
    evaluate_start: bool = True,
    on_round: Callable[[float, str, RoundSummary], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """One federation per (malicious ratio, defense) from the same start; one result row per run. Inside
    `simulation_session()`, the set-up is shared with the session's other sweeps."""
    with ExitStack() as stack:
        session = _SESSION.get() or stack.enter_context(simulation_session())
        sweep = Sweep(config, [label for _, label in runs], session)
        rows: list[dict] = []
        if evaluate_start:
            report = sweep.evaluate(sweep.initial_state)
            rows.append(_row(config, 0.0, "none (start model)", report, {**sweep.base_extra, "rounds": 0}))
        for ratio, label in runs:
            report_round = functools.partial(on_round, ratio, label) if on_round is not None else None
            rows.append(sweep.federation(ratio, label, report_round, progress))
        return rows


class Sweep:
    """What every federation of a sweep shares: the session's base model (in the object store for the
    client actors, and the driver's copy for θ^0 and evaluation), data pools, probe service and audit."""

    def __init__(self, config: SimulationConfig, labels: Sequence[str], session: SimulationSession) -> None:
        torch.set_num_threads(config.eval_threads)
        self.config, self.session = config, session
        base = session.base(config)
        self.loaded, self.pools, self.frozen_ref = base.loaded, base.pools, base.frozen_ref
        self.peft_model, self.initial_state = base.peft_model, base.initial_state
        named = {split_realignment(label)[0] for label in labels}
        levels = [DEFENSES[defense] for defense in named if defense in DEFENSES]
        needs_probe = any(level.inputs != AUDIT_INPUT for level in levels)
        self.probes = session.probes(config, self.loaded.fingerprint) if needs_probe else None
        audited = any(issubclass(level, AuditedDefense) for level in levels)
        aggregate_threshold = AuditLevelSettings().aggregate_threshold  # every run's, from the environment
        self.auditor = session.auditor(config) if audited or aggregate_threshold is not None else None
        self.base_extra = {"aligned_base": self.loaded.aligned, "base_fingerprint": self.loaded.fingerprint}

    def evaluate(self, state: LoraState) -> SafetyReport:
        config = self.config

        def run() -> SafetyReport:
            torch.set_num_threads(config.eval_threads)
            set_lora_state(self.peft_model, state)
            return evaluate_model(self.peft_model, self.loaded.tokenizer, self.pools.evaluation, config.eval)

        if config.cache_dir is None:
            return run()
        key = (self.loaded.fingerprint, config.eval)
        return cached_evaluation(Path(config.cache_dir), key, state, run)

    def client_pool(self, specs: Sequence[ClientSpec], training: LocalTrainingConfig) -> TrainingPool:
        """The clients as Ray actors, behind the training cache when the config has one."""
        config = self.config
        pool: TrainingPool = RayClientPool(
            specs,
            self.frozen_ref,
            config.model,
            config.lora,
            training,
            config.federation.seed,
            max_live_actors=config.max_live_clients,
            reserve=self.session.hosts,
        )
        if config.cache_dir is None:
            return pool
        context = {
            "model": config.model,
            "base": self.loaded.fingerprint,
            "lora": config.lora.model_dump(mode="json"),
            "training": training.model_dump(mode="json", exclude={"shadow_lr"}),
            "seed": config.federation.seed,
        }
        return CachedClientPool(pool, specs, Path(config.cache_dir) / "updates", context, training.shadow_lr)

    def strategy_options(
        self, rule: str, specs: Sequence[ClientSpec], training: LocalTrainingConfig, stack: ExitStack
    ) -> dict[str, Any]:
        """The rule's options: the config's, the expected attacker count where the rule takes one, and for
        FLTrust the server's own update on the root set (an actor pool closed with `stack`)."""
        config = self.config
        options = dict(config.strategy_options)
        if takes_option(rule, "num_attackers") and "num_attackers" not in options:
            malicious_count = sum(s.malicious for s in specs)
            cpr = min(config.federation.clients_per_round, config.num_clients)
            options["num_attackers"] = expected_attackers(cpr, malicious_count, config.num_clients)
        if rule == "fltrust":  # the server's own update on the root set, with the clients' training
            rows = tuple((x.instruction, x.response) for x in self.pools.root.alpaca)
            root_training = training.model_copy(update={"shadow_lr": None})
            root = stack.enter_context(
                RayClientPool(
                    [ClientSpec("server-root", "benign", rows)],
                    self.frozen_ref,
                    config.model,
                    config.lora,
                    root_training,
                    config.federation.seed,
                    reserve=self.session.hosts,
                )
            )
            schedule = config.federation

            def server_update(state: LoraState, r: int) -> LoraState:
                lr = schedule.lr.at_round(r, schedule.num_rounds)
                return root.train_round(["server-root"], state, r, lr)[0].lora_state

            options["server_update"] = server_update
        return options

    def federation(
        self,
        ratio: float,
        label: str,
        on_round: Callable[[RoundSummary], None] | None,
        progress: bool,
    ) -> dict:
        """One federation (`label`: a level or a baseline, `+realign` adds the server's realignment)."""
        config = self.config
        defense, realign = split_realignment(label)
        realignment = (
            config.realignment.model_copy(update={"enabled": True}) if realign else config.realignment
        )
        specs = build_population(
            self.pools.client,
            config.num_clients,
            ratio,
            config.samples_per_client,
            config.benign_source,
            config.federation.seed,
            attack=config.attack,
        )
        level = defense in DEFENSES
        training, defense_settings = config.training, config.defense_settings
        probed = level and self.probes is not None and DEFENSES[defense].inputs != AUDIT_INPUT
        probe = (
            self.probes.for_input(DEFENSES[defense].inputs) if probed and self.probes is not None else None
        )
        if probe is not None:
            needs_shadow = DEFENSES[defense].inputs == "shadow"
            defense_settings, training = bind_probe(probe.manifest, defense_settings, training, needs_shadow)
        rule = aggregation_rule(defense, config.defense_settings)
        with ExitStack() as stack:
            pool = stack.enter_context(self.client_pool(specs, training))
            options = self.strategy_options(rule, specs, training, stack)
            settings = AggregatorSettings(
                model=config.model,
                defense=defense,
                defense_settings=defense_settings,
                strategy_options=options,
                federation=config.federation,
                training=training,
                trusted_execution=True,  # the clients are our own Ray actors: the shadow branch runs as told
                realignment=realignment,
                verification=config.verification,
            )
            service = AggregatorService(
                _store(config, f"{defense}-{ratio}"),
                settings,
                self.initial_state,
                scorer=probe.scorer if probe else None,
                probe_id=probe.manifest.probe_id if probe else None,
                probe_spec=probe.manifest.feature_spec if probe else None,
                population=[s.client_id for s in specs],
                auditor=self.auditor,
            )
            orchestrator = stack.enter_context(closing(RoundOrchestrator(service, pool)))
            started = time.perf_counter()
            summaries = orchestrator.run(on_round=on_round, progress=progress)
            train_seconds = time.perf_counter() - started
        _, final_state = service.store.get_global()
        malicious = {s.client_id for s in specs if s.malicious}
        trust = service.store.get_trust()
        final_factors: dict[str, float] = {}
        for summary in summaries:
            final_factors.update(summary.factors)
        extra = {
            **self.base_extra,
            "num_clients": config.num_clients,
            "num_malicious": len(malicious),
            "clients_per_round": config.federation.clients_per_round,
            "local_steps": training.local_steps,
            "malicious_client_rounds": sum(len(set(s.sampled) & malicious) for s in summaries),
            "client_rounds": sum(len(s.sampled) for s in summaries),
            "skipped_rounds": sum(s.phase.value == "skipped" for s in summaries),
            "train_seconds": round(train_seconds, 1),
            "training_cache": asdict(pool.counts) if isinstance(pool, CachedClientPool) else None,
            "probe_id": probe.manifest.probe_id if probe else None,
            "threshold": defense_settings.threshold if level else None,
            "min_step": defense_settings.min_step if level else None,
            "audit_threshold": (
                service.defense.audit.threshold if isinstance(service.defense, AuditedDefense) else None
            ),
            "aggregate_audit_threshold": (
                service.audit.settings.aggregate_threshold if service.audit else None
            ),
            "aggregate_audits": [s.aggregate_audit for s in summaries],
            "realignment": realignment.model_dump() if realignment.enabled else None,
            "realignment_seconds": [s.realignment.seconds for s in summaries if s.realignment],
            "shadow_lr": training.shadow_lr,
            "batch_size": training.batch_size,
            "state_namespace": getattr(service.store, "ns", None),
            "aggregator": rule,
            "strategy_options": {k: v for k, v in options.items() if k != "server_update"},
            "clients": {
                s.client_id: {
                    "malicious": s.malicious,
                    "final_factor": final_factors.get(s.client_id),
                    "trust": trust.get(s.client_id),
                }
                for s in specs
            },
        }
        return _row(config, ratio, label, self.evaluate(final_state), extra)
