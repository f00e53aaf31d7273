"""One-line mutants of the aggregation rules, defense levels, features and calibration, and whether the
pinning tests kill them (issue #27, item 2). Standard library only.

Each mutant replaces one exact snippet (it must occur once in its file) in a throwaway copy of the tree
(services/, research/, shared/, probes/, tests/, pyproject.toml in a temp dir): the working tree is never
edited. The copy is restored after every mutant (try/finally) and deleted at the end. Bytecode is not
written, so a restored file is never shadowed by a stale .pyc.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/mutants.py            # every mutant
    .venv/bin/python scripts/mutants.py --only bulyan --list          # list the ones whose id has "bulyan"

Exit status 0 when at least --target (default 0.95) of the mutants are killed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("services", "research", "shared", "probes", "tests", "pyproject.toml")

PINNED = "tests/unit/services/aggregator/strategies/test_pinned.py"
FEDAVG = "tests/unit/services/aggregator/test_fedavg.py"
DEFENSES = "tests/unit/services/aggregator/test_defenses.py"
BOUNDARIES = "tests/unit/services/aggregator/test_defense_boundaries.py"
AUDIT = (  # the pure cases of the audit levels (the module's last test runs a whole service round)
    "tests/unit/services/aggregator/test_audit_level.py::test_audit_level_flags_at_the_threshold_inclusive",
    "tests/unit/services/aggregator/test_audit_level.py::test_audit_shadow_combines_the_factors",
)
VERIFIED = "tests/unit/services/aggregator/test_verification.py"
CALIBRATION = "tests/unit/shared/test_calibration.py"
FEATURES = "tests/unit/shared/test_features.py"

STRATEGY_TESTS = (PINNED, FEDAVG)
LEVEL_TESTS = (DEFENSES, BOUNDARIES, *AUDIT)


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]


def _m(id: str, path: str, original: str, replacement: str, tests: tuple[str, ...]) -> Mutant:
    return Mutant(id, path, original, replacement, tests)


S = "services/aggregator/strategies/"
D = "services/aggregator/defenses/"
MUTANTS: tuple[Mutant, ...] = (
    # Bulyan: θ = n − 2f picks, re-scored after each pick, β = θ − 2f closest to the selection's median
    _m("bulyan.theta", S + "bulyan.py", "len(selected) < n - 2 * f", "len(selected) < n - f", STRATEGY_TESTS),
    _m("bulyan.beta_f", S + "bulyan.py", "len(selected) - 2 * f)", "len(selected) - f)", STRATEGY_TESTS),
    _m("bulyan.beta_all", S + "bulyan.py", "max(1, len(selected) - 2 * f)", "len(selected)", STRATEGY_TESTS),
    _m(
        "bulyan.no_rescore",
        S + "bulyan.py",
        "krum_scores(deltas[remaining], f)",
        "krum_scores(deltas, f)[remaining]",
        STRATEGY_TESTS,
    ),
    _m(
        "bulyan.mean_centre",
        S + "bulyan.py",
        "np.median(chosen, axis=0)",
        "chosen.mean(axis=0)",
        STRATEGY_TESTS,
    ),
    _m("bulyan.f_bound", S + "bulyan.py", "(n - 3) // 4", "(n - 3) // 2", STRATEGY_TESTS),
    _m(
        "bulyan.f_unlowered",
        S + "bulyan.py",
        "f = min(self.num_attackers, max(0, (n - 3) // 4))",
        "f = self.num_attackers",
        STRATEGY_TESTS,
    ),
    # Krum family
    _m(
        "krum.neighbours",
        S + "krum.py",
        "n - num_attackers - 2), n - 1)",
        "n - num_attackers - 1), n - 1)",
        STRATEGY_TESTS,
    ),
    _m(
        "krum.self_distance",
        S + "krum.py",
        "np.fill_diagonal(distances, np.inf)",
        "np.fill_diagonal(distances, 0.0)",
        STRATEGY_TESTS,
    ),
    _m(
        "multi_krum.keep",
        S + "krum.py",
        "max(1, len(deltas) - self.num_attackers)",
        "max(1, len(deltas) - 2 * self.num_attackers)",
        STRATEGY_TESTS,
    ),
    _m(
        "krum_official.squared",
        S + "krum.py",
        "distances = np.sqrt(pairwise_sq_distances(deltas))",
        "distances = pairwise_sq_distances(deltas)",
        STRATEGY_TESTS,
    ),
    _m(
        "krum_official.keep",
        S + "krum.py",
        "keep = n - self.num_attackers",
        "keep = n - self.num_attackers - 1",
        STRATEGY_TESTS,
    ),
    # the rules weighted by n_i
    _m("fedavg.no_samples", S + "fedavg.py", "[u.num_samples * f for", "[f for", STRATEGY_TESTS),
    _m("fedavg.zero_sum", S + "fedavg.py", "if sum(raw) <= 0:", "if sum(raw) < 0:", STRATEGY_TESTS),
    _m(
        "geometric_median.equal_weights",
        S + "geometric_median.py",
        "normalised_weights([u.num_samples for u in updates])",
        "normalised_weights([1.0 for u in updates])",
        STRATEGY_TESTS,
    ),
    _m(
        "geometric_median.beta",
        S + "geometric_median.py",
        "beta = weights / distances",
        "beta = 1 / distances",
        STRATEGY_TESTS,
    ),
    _m(
        "norm_clipping.equal_weights",
        S + "norm_clipping.py",
        "normalised_weights([u.num_samples for u in updates])",
        "normalised_weights([1.0 for u in updates])",
        STRATEGY_TESTS,
    ),
    _m(
        "norm_clipping.max",
        S + "norm_clipping.py",
        "np.minimum(1.0, bound",
        "np.maximum(1.0, bound",
        STRATEGY_TESTS,
    ),
    _m(
        "norm_clipping.mean_bound",
        S + "norm_clipping.py",
        "float(np.median(np.linalg.norm(deltas, axis=1)))",
        "float(np.mean(np.linalg.norm(deltas, axis=1)))",
        STRATEGY_TESTS,
    ),
    # Residual
    _m(
        "residual.unsquared",
        S + "residual.py",
        "(confidence / confidence.max()) ** 2",
        "(confidence / confidence.max())",
        STRATEGY_TESTS,
    ),
    _m(
        "residual.unrestricted",
        S + "residual.py",
        "np.where(w >= thresh, y, line)",
        "np.where(w >= thresh, y, y)",
        STRATEGY_TESTS,
    ),
    _m("residual.intercept", S + "residual.py", "slope * (n - 1) / 2", "slope * n / 2", STRATEGY_TESTS),
    # median and trimmed mean
    _m(
        "trimmed_mean.one_side",
        S + "trimmed_mean.py",
        "ordered[self.trim : n - self.trim]",
        "ordered[self.trim : n]",
        STRATEGY_TESTS,
    ),
    _m(
        "trimmed_mean.fallback",
        S + "trimmed_mean.py",
        "if n > 2 * self.trim:",
        "if n >= 2 * self.trim:",
        STRATEGY_TESTS,
    ),
    _m("median.even", S + "tensors.py", 'if even == "mean":', 'if even != "mean":', STRATEGY_TESTS),
    # p = τ at every "≥" of the levels
    _m(
        "levels.flag_strict",
        D + "base.py",
        "p >= self.settings.threshold",
        "p > self.settings.threshold",
        LEVEL_TESTS,
    ),
    _m(
        "audit.flag_strict",
        D + "audit_level.py",
        "score >= self.audit.threshold",
        "score > self.audit.threshold",
        LEVEL_TESTS,
    ),
    _m(
        "evidence.audit_strict",
        D + "evidence_level.py",
        "if scores[-1] >= self.settings.threshold:",
        "if scores[-1] > self.settings.threshold:",
        LEVEL_TESTS,
    ),
    _m(
        "evidence.record_strict",
        D + "evidence_level.py",
        "malicious = scores[-1] >= self.settings.threshold",
        "malicious = scores[-1] > self.settings.threshold",
        LEVEL_TESTS,
    ),
    _m(
        "evidence.frozen_last",
        D + "evidence_level.py",
        'mean = sum(r["factor"] for r in window) / len(window)',
        'mean = window[-1]["factor"]',
        LEVEL_TESTS,
    ),
    _m(
        "evidence.frozen_one",
        D + "evidence_level.py",
        'mean = sum(r["factor"] for r in window) / len(window)',
        "mean = 1.0",
        LEVEL_TESTS,
    ),
    _m(
        "evidence.window_short",
        D + "evidence_level.py",
        "if len(window) == self.settings.evidence_window:",
        "if len(window) >= self.settings.evidence_window - 1:",
        LEVEL_TESTS,
    ),
    _m(
        "evidence.audit_due",
        D + "evidence_level.py",
        'trust.get("since_frozen", 0) + 1 >= self.settings.reprobe_interval',
        'trust.get("since_frozen", 0) >= self.settings.reprobe_interval',
        LEVEL_TESTS,
    ),
    _m(
        "evidence.audit_count",
        D + "evidence_level.py",
        "if count < self.settings.reprobe_interval:",
        "if count <= self.settings.reprobe_interval:",
        LEVEL_TESTS,
    ),
    # the freeze round R_p
    _m(
        "client.freeze_strict",
        D + "client_level.py",
        "if round_index >= self.settings.freeze_round:",
        "if round_index > self.settings.freeze_round:",
        LEVEL_TESTS,
    ),
    _m(
        "client.needs_scores",
        D + "client_level.py",
        "return round_index < self.settings.freeze_round",
        "return round_index <= self.settings.freeze_round",
        LEVEL_TESTS,
    ),
    _m(
        "step.freeze_strict",
        D + "step_level.py",
        "if round_index >= self.settings.freeze_round:",
        "if round_index > self.settings.freeze_round:",
        LEVEL_TESTS,
    ),
    _m(
        "step.freeze_early",
        D + "step_level.py",
        "if round_index >= self.settings.freeze_round:",
        "if round_index >= self.settings.freeze_round - 1:",
        LEVEL_TESTS,
    ),
    _m(
        "step.needs_scores",
        D + "step_level.py",
        "return round_index < self.settings.freeze_round",
        "return round_index <= self.settings.freeze_round",
        LEVEL_TESTS,
    ),
    _m("client.first_step", D + "client_level.py", "p = scores[-1]", "p = scores[0]", LEVEL_TESTS),
    _m(
        "client.unseen",
        D + "client_level.py",
        "total / rounds if rounds else 1.0",
        "total / rounds if rounds else 0.5",
        LEVEL_TESTS,
    ),
    _m("client.centre_branch", D + "client_level.py", "if p <= center:", "if p < center:", LEVEL_TESTS),
    _m(
        "step.no_forgetting",
        D + "step_level.py",
        "gamma * alpha + (n - harmful)",
        "alpha + (n - harmful)",
        LEVEL_TESTS,
    ),
    _m(
        "shadow.exponent",
        D + "shadow_level.py",
        "(1 - rho) ** self.settings.shadow_exponent",
        "(1 - rho)",
        LEVEL_TESTS,
    ),
    # the gate, the floor s_min and combine="filter"
    _m(
        "gate.strict",
        D + "gate.py",
        "if mean >= settings.skip_below:",
        "if mean > settings.skip_below:",
        LEVEL_TESTS,
    ),
    _m(
        "gate.raw_mean",
        D + "gate.py",
        "values = [max(factors[u.client_id], settings.min_weight) for u in updates]",
        "values = [factors[u.client_id] for u in updates]",
        LEVEL_TESTS,
    ),
    _m(
        "gate.unfloored_weights",
        D + "gate.py",
        "weights = [max(factors[u.client_id], settings.min_weight) for u in updates]",
        "weights = [factors[u.client_id] for u in updates]",
        LEVEL_TESTS,
    ),
    _m(
        "combined.filter_unfloored",
        D + "combined.py",
        "if max(factors[u.client_id], settings.min_weight) > 0]",
        "if factors[u.client_id] > 0]",
        LEVEL_TESTS,
    ),
    _m(
        "combined.filter_never",
        D + "combined.py",
        'if settings.combine == "filter":',
        'if settings.combine != "filter":',
        LEVEL_TESTS,
    ),
    _m(
        "audit.combine_max",
        D + "audit_level.py",
        "min(probe.factor, audit)",
        "max(probe.factor, audit)",
        LEVEL_TESTS,
    ),
    _m(
        "verified.no_min",
        D + "verified_level.py",
        "factor = min(u, total / rounds)",
        "factor = total / rounds",
        (VERIFIED,),
    ),
    # calibration
    _m(
        "calibration.bare_floor",
        "shared/calibration.py",
        "np.floor(fpr * scores.size + 1e-9)",
        "np.floor(fpr * scores.size)",
        (CALIBRATION,),
    ),
    _m(
        "calibration.ceil",
        "shared/calibration.py",
        "np.floor(fpr * scores.size + 1e-9)",
        "np.ceil(fpr * scores.size)",
        (CALIBRATION,),
    ),
    _m(
        "calibration.ties_flagged",
        "shared/calibration.py",
        "float(np.nextafter(descending[allowed], np.inf))",
        "float(descending[allowed])",
        (CALIBRATION,),
    ),
    _m(
        "calibration.fpr_strict",
        "shared/calibration.py",
        "np.mean(scores >= threshold)",
        "np.mean(scores > threshold)",
        (CALIBRATION,),
    ),
    # normalise: l2 (floor 1e-12) first, then NaN/Inf mapping
    _m(
        "normalise.map_first",
        "shared/features.py",
        "    x = np.asarray(x, dtype=np.float32)\n    if method",
        "    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=_INF_VALUE,"
        " neginf=-_INF_VALUE)\n    if method",
        (FEATURES,),
    ),
    _m(
        "normalise.no_floor",
        "shared/features.py",
        "np.where(norms < _NORM_FLOOR, 1.0, norms)",
        "np.where(norms <= 0.0, 1.0, norms)",
        (FEATURES,),
    ),
    _m(
        "normalise.floor_value",
        "shared/features.py",
        "np.where(norms < _NORM_FLOOR, 1.0, norms)",
        "np.where(norms < 1e-11, 1.0, norms)",
        (FEATURES,),
    ),
    _m("normalise.center_nan", "shared/features.py", "x - np.nanmean(", "x - np.mean(", (FEATURES,)),
)


def _copy_tree(destination: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(source, destination / name)


def _pytest(tree: Path, tests: tuple[str, ...], timeout_s: float) -> tuple[bool, str]:
    """(passed, last output line) of the tests run against the copy."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode == 0, lines[-1] if lines else done.stderr.strip()[-200:]


def _check(mutant: Mutant, tree: Path) -> str:
    text = (tree / mutant.path).read_text()
    count = text.count(mutant.original)
    if count != 1:
        return f"snippet occurs {count} times in {mutant.path}"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="run the mutants whose id contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--target", type=float, default=0.95, help="kill rate for exit status 0")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per pytest run")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if args.only in m.id]
    if args.list:
        for m in mutants:
            print(f"{m.id:32} {m.path}: {m.original!r} -> {m.replacement!r}")
        return 0

    with tempfile.TemporaryDirectory(prefix="mutants-") as temp:
        tree = Path(temp)
        _copy_tree(tree)
        problems = [f"{m.id}: {error}" for m in mutants if (error := _check(m, tree))]
        if problems:
            print("stale mutants (fix the list):\n  " + "\n  ".join(problems))
            return 2
        probe = subprocess.run(
            [sys.executable, "-c", "import services, shared; print(services.__file__, shared.__file__)"],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            capture_output=True,
            text=True,
        )
        if not all(Path(p).is_relative_to(tree) for p in probe.stdout.split()) or not probe.stdout:
            print(f"the copy's packages do not shadow the installed ones: {probe.stdout}{probe.stderr}")
            return 2
        baseline_tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        passed, line = _pytest(tree, baseline_tests, args.timeout)
        if not passed:
            print(f"the unmutated tests fail ({line}): no verdict")
            return 2
        survivors: list[str] = []
        started = time.monotonic()
        for number, mutant in enumerate(mutants, 1):
            target = tree / mutant.path
            original = target.read_text()
            try:
                target.write_text(original.replace(mutant.original, mutant.replacement, 1))
                passed, line = _pytest(tree, mutant.tests, args.timeout)
            finally:
                target.write_text(original)
            verdict = "SURVIVED" if passed else "killed"
            if passed:
                survivors.append(mutant.id)
            print(f"[{number:2}/{len(mutants)}] {verdict:8} {mutant.id:32} ({line})", flush=True)
        killed = len(mutants) - len(survivors)
        rate = killed / len(mutants) if mutants else 1.0
        print(
            f"\n{killed}/{len(mutants)} killed ({rate:.0%}) in {time.monotonic() - started:.0f} s"
            + (f"; survived: {', '.join(survivors)}" if survivors else "")
        )
        return 0 if rate >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
