"""The ServerApp a job host runs under Flower's Deployment Engine.

It reads the job from `context.run_config` (see `peers.flower_app`) and hosts it. The
simulation harness builds its own `JobHost` instead, to attach a yardstick evaluation
and a progress display.
"""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from peers.job import JobConfig
from peers.server.host import JobHost

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    JobHost(JobConfig.from_run_config(context.run_config)).run(grid, context)
