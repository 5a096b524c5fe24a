"""Many peers on one machine or a Ray cluster: data, the simulation runner, reports, the CLI."""
