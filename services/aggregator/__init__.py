"""The FL server: rounds, state, defenses and aggregation."""
