"""The ServerApp a job host runs under Flower's Deployment Engine.

It reads the job from `context.run_config` (see `fedsilo.peers.flower_app`) and hosts it. A
job with no encoder path is a deployed one (`fedsilo.peers.server.deployed`): the encoder is
first fitted from the peers' summaries, only the nodes `FEDSILO_JOB_NODES` lists
take part, and the result is written into the directory `FEDSILO_HOST_OUTPUT` names. In a
transfer job (a shared vocabulary) the peers summarize only the vocabulary columns, the fitted
encoder is the shared block's, and the host holds and writes only the shared parameters. Once
the peers have all connected the grid watches them: a peer lost during the job is a dropout, and
the run fails at once (`PeersLost`) when fewer are left than SecAgg+ needs or the job's
owner-signed min-participants (`FEDSILO_JOB_MIN_PEERS`); either way the lost node ids go into
`lost.json` there. A deployed job whose run config carries boosting terms (``gbdt.*``) boosts
trees instead (`fedsilo.peers.gbdt.server_app.run_deployed_gbdt`). The simulation harness builds its own `JobHost`
instead, to attach a yardstick evaluation and a progress display.
"""

import os
from dataclasses import replace

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsilo.peers.flower_app import HOST_OUTPUT_ENV, JOB_MIN_PEERS_ENV, JOB_NODES_ENV
from fedsilo.peers.gbdt.job import PREFIX as GBDT_PREFIX
from fedsilo.peers.gbdt.job import GBDTJob
from fedsilo.peers.identity.round_keys import SUITE_KEY
from fedsilo.peers.job import JobConfig
from fedsilo.peers.server.deployed import (
    RoundClock,
    announce_finish,
    fit_encoder_from_peers,
    job_min_peers,
    job_nodes,
    output_directory,
    survivors_needed,
    wait_for_peers,
    write_lost,
    write_result,
)
from fedsilo.peers.server.host import JobHost
from fedsilo.peers.server.polling_grid import PromptGrid
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE

GBDT_SESSION_KEY = GBDT_PREFIX + "session"

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    job = JobConfig.from_run_config(context.run_config)
    if job.encoder_path:
        JobHost(job).run(grid, context)
        return
    output = output_directory(os.environ.get(HOST_OUTPUT_ENV))
    grid = PromptGrid(grid, nodes=job_nodes(os.environ.get(JOB_NODES_ENV)))
    if GBDT_SESSION_KEY in context.run_config:  # a boosting job: trees level by level (`fedsilo.peers.gbdt`)
        from fedsilo.peers.gbdt.server_app import run_deployed_gbdt

        run_deployed_gbdt(grid, job, GBDTJob.from_run_config(context.run_config), output)
        return
    nodes = wait_for_peers(grid, job.peers)
    grid.watch(nodes, len(nodes))  # until the rounds start, every peer is needed
    try:
        encoder = fit_encoder_from_peers(grid, nodes, job.job_id, job.label)
        encoder_path = output / "encoder.json"
        encoder_path.write_text(encoder.to_json())
        job = replace(job, encoder_path=str(encoder_path))
        if job.vocabulary:  # transfer: the encoder is the shared vocabulary's, the width of the shared block
            job = replace(job, model=replace(job.model, shared_features=encoder.n_features))
        clock = RoundClock()
        host = JobHost(job, on_round=clock.on_round)
        n_params = int(sum(v.size for v in host.initial_weights().values()))
        minimum = max(
            survivors_needed(job, n_params, str(context.run_config.get(SUITE_KEY, DEFAULT_SUITE))),
            job_min_peers(os.environ.get(JOB_MIN_PEERS_ENV)),
        )
        grid.minimum = minimum
        host.min_nodes = minimum
        outcome = host.run(grid, context)
        write_result(output, job.job_id, outcome, clock.seconds, [e.to_dict() for e in grid.exchanges])
        announce_finish(grid, grid.alive, job.job_id)
    finally:
        write_lost(output, grid.lost)
