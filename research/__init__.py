"""Research code: the simulated federation and the experiments, apart from the deployable services.

- `clients/`: simulated FL clients from a `ClientSpec` population, benign or malicious (every attack of the
  red team), as Ray actors; the update cache that lets experiment grids train each distinct update once;
- `simulation.py`: the in-process federation (`safe-fedllm simulate`, the demo, the chart's simulation
  RayJob), driven round by round by `orchestrator.py` against the real `AggregatorService`;
- `participant_cluster.py`: N real participants from such a population as Ray actors, talking to a
  deployed aggregator over REST (`safe-fedllm client federate`, the chart's federation RayJob);
- `experiments/`: E3-E7 (docs/experiments.md): resumable runner, federation grid, server cost, plots.

Apart from `services/` so that `services/` holds only what is deployed (aggregator, probe and audit
services, the participant, the CLI) and nothing deployed depends on attack code: `services/` never imports
`research` at module level; the CLI imports it inside the commands that need it. It ships in the same
image, since the chart's RayJobs run the simulation and the participant cluster from it.
"""
