"""The job host: a Flower ServerApp that runs a job's strategy over the accepting peers."""
