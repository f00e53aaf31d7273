"""`safe-fedllm state ...`: list and drop federations' namespaces in the Redis state store."""

from __future__ import annotations

import typer

state_app = typer.Typer(help="The Redis state store: list | clean.", no_args_is_help=True)


@state_app.command("list")
def list_namespaces(
    prefix: str = typer.Option("", help="Only namespaces starting with this (e.g. sim-)."),
) -> None:
    """Namespaces in the store (SAFE_FEDLLM_REDIS_URL, or the embedded one) and their key counts."""
    from services.aggregator.state import connect
    from services.aggregator.state.maintenance import namespaces

    for name, count in sorted(namespaces(connect(), prefix).items()):
        typer.echo(f"{name:<40} {count:>8} keys")


@state_app.command()
def clean(
    prefix: str = typer.Option("sim-", help="Drop every namespace starting with this."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Drop the namespaces simulations and demos left behind (a live federation's too, if it matches)."""
    from services.aggregator.state import connect
    from services.aggregator.state.maintenance import drop_namespace, namespaces

    if not prefix:
        raise typer.BadParameter("an empty prefix would drop every federation", param_hint="--prefix")
    client = connect()
    found = namespaces(client, prefix)
    if not found:
        typer.echo(f"no namespace starts with {prefix!r}")
        return
    if not yes:
        typer.confirm(f"drop {len(found)} namespaces ({sum(found.values())} keys)?", abort=True)
    deleted = sum(drop_namespace(client, name) for name in found)
    typer.echo(f"dropped {len(found)} namespaces, {deleted} keys")
