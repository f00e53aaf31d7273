from services.aggregator.service import RoundSummary
from services.aggregator.state import RoundPhase
from services.cli.main import _print_round


def _summary(phase: RoundPhase, reason: str = "", aggregate_audit: float | None = None) -> RoundSummary:
    return RoundSummary(
        0,
        ["client-000", "client-001"],
        phase,
        {"client-000": 1.0},
        {"client-000": 1.0, "client-001": 0.0},
        {"client-000": 0.12},
        reason=reason,
        aggregate_audit=aggregate_audit,
    )


def test_a_round_line_shows_each_client_and_the_aggregate_audit(capsys) -> None:
    _print_round(0.5, "shadow", _summary(RoundPhase.AGGREGATED, aggregate_audit=0.0271))
    assert capsys.readouterr().out == (
        "[shadow 50%] round  0 aggregated 000:p=0.12,s=1.00,w=1.00 001:s=0.00,w=0.00"
        "  (aggregate audit Δ=0.027)\n"
    )


def test_a_skipped_round_names_its_reason_once(capsys) -> None:
    reason = "aggregate audit: Δ=0.063 >= 0.0434"
    _print_round(0.5, "fedavg", _summary(RoundPhase.SKIPPED, reason, 0.063))
    assert capsys.readouterr().out.endswith(f"w=0.00  ({reason})\n")
    _print_round(0.5, "fedavg", _summary(RoundPhase.AGGREGATED))
    assert capsys.readouterr().out.endswith("w=0.00\n")
