"""A peer's DP noise, from the side of the host: it knows every job field and still cannot replay it.

The host holds the job (its seed included), the global weights it sent, the peer's row
count (public: the sampling rate and FedAvg weight follow from it) and the update the
peer released. With a full-batch job (q = 1, one step per round) the peer's update is
w − lr·(Σ clip(g_i) + σC·N)/n: the host can compute everything but N, unless N follows
from something it knows.
"""

import math
from dataclasses import replace

import numpy as np
import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.client import app as client
from fedsilo.peers.client.local_training import reproducible_seed
from fedsilo.peers.daemon.signed_job import job_document, parse_document
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.job import DPSpec, JobConfig, TrainSpec, plan_dp
from fedsilo.peers.mechanism_check import check_mechanism
from fedsilo.peers.models import ModelSpec, build_model, get_weights, set_weights
from fedsilo.privacy.dpsgd import DPSGDConfig, DPSGDTrainer
from fedsilo.simulations.data.synthetic import generate_consortium
from tests.peers.test_client_app import _context, _train_message

ROUNDS, LR, CLIP = 2, 0.3, 1.0


@pytest.fixture(scope="module")
def bank_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("banks")
    frames = generate_consortium(2, seed=5, total_customers=2000)
    for i, frame in enumerate(frames):
        frame.to_parquet(root / f"bank-{i:05d}.parquet")
    encoder = TabularEncoder.fit_frames(frames, "default")
    (root / "encoder.json").write_text(encoder.to_json())
    return root, encoder


def full_batch_job(root, reproducible=False) -> JobConfig:
    return JobConfig(
        label="default",
        encoder_path=str(root / "encoder.json"),
        banks_dir=str(root),
        job_id="noise",
        peers=2,
        model=ModelSpec("mlp", (16,)),
        train=TrainSpec(rounds=ROUNDS, batch_size=100_000, lr=LR, seed=7),
        dp=DPSpec(epsilon=2.0, max_grad_norm=CLIP, reproducible=reproducible),
    )


def released(job, weights, bank=0, server_round=1) -> dict[str, np.ndarray]:
    reply = client.train(_train_message(weights, server_round), _context(job, partition=bank))
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    return {k: v.numpy() for k, v in reply.content["arrays"].items()}


def host_replay(job, weights, n_features, n_train, bank_seed, server_round=1) -> dict[str, np.ndarray]:
    """The host's recomputation of the peer's round from every public value and the job's seed.

    The host is even granted the peer's rows (the strongest host: all it lacks is the noise).
    """
    data = client.bank_data(job, _context(job, partition=0))
    assert data.n_train == n_train
    plan = plan_dp(job, n_train)
    model = build_model(job.model, n_features)
    set_weights(model, weights)
    config = DPSGDConfig(
        lr=LR, max_grad_norm=CLIP, noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate
    )
    seed = (job.train.seed * 1_000_003 + bank_seed * 7919 + server_round) % (2**31)
    DPSGDTrainer(model, config, reproducible_seed=seed).train(data.x_train, data.y_train, epochs=1)
    return get_weights(model)


def flat(weights: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in weights.values()])


def noise_scale(job, n_train) -> float:
    """Per-coordinate standard deviation of the noise in one full-batch update: lr·σ·C/n."""
    plan = plan_dp(job, n_train)
    assert plan.sample_rate == 1.0 and plan.steps_per_round == 1
    return LR * plan.noise_multiplier * CLIP / n_train


def test_the_same_job_twice_at_a_peer_gives_different_noise(bank_files):
    root, encoder = bank_files
    job = full_batch_job(root)
    weights = get_weights(build_model(job.model, encoder.n_features))
    first, second = flat(released(job, weights)), flat(released(job, weights))
    n_train = client.bank_data(job, _context(job)).n_train
    # same inputs, one full-batch step: the difference is two independent noise draws
    assert np.std(first - second) == pytest.approx(math.sqrt(2) * noise_scale(job, n_train), rel=0.15)


def test_a_host_with_every_job_field_cannot_reproduce_a_released_update(bank_files):
    root, encoder = bank_files
    job = full_batch_job(root)
    weights = get_weights(build_model(job.model, encoder.n_features))
    n_train = client.bank_data(job, _context(job)).n_train
    update = flat(released(job, weights))
    sigma = noise_scale(job, n_train)
    for bank_seed in (0, 1):  # bank 0 is what the Deployment Engine gives every peer; 1 is its real index
        guess = flat(host_replay(job, weights, encoder.n_features, n_train, bank_seed))
        # the host is off by a whole independent noise draw per coordinate, not by float rounding
        assert np.std(update - guess) == pytest.approx(math.sqrt(2) * sigma, rel=0.15)


def test_the_research_mode_is_exactly_what_the_host_can_replay(bank_files):
    """The old behaviour, now only by explicit choice: the host subtracts the noise to float precision."""
    root, encoder = bank_files
    job = full_batch_job(root, reproducible=True)
    weights = get_weights(build_model(job.model, encoder.n_features))
    n_train = client.bank_data(job, _context(job)).n_train
    update = flat(released(job, weights))
    guess = flat(host_replay(job, weights, encoder.n_features, n_train, bank_seed=0))
    assert reproducible_seed(job, 0, 1) is not None
    assert np.max(np.abs(update - guess)) < 1e-3 * noise_scale(job, n_train)


def test_a_deployed_peer_refuses_a_job_asking_for_reproducible_noise(bank_files, tmp_path):
    root, encoder = bank_files
    job = full_batch_job(root, reproducible=True)
    weights = get_weights(build_model(job.model, encoder.n_features))
    context = _context(job)
    context.node_config["state-dir"] = str(tmp_path)  # what a deployed SuperNode has
    reply = client.train(_train_message(weights, 1), context)
    assert reply.has_error()
    assert "Refused" in reply.error.reason and "dp.reproducible" in reply.error.reason
    assert client.PRIVACY_STATE_KEY not in context.state  # nothing trained, nothing spent
    assert not list(tmp_path.iterdir())


def test_a_signed_job_cannot_ask_for_reproducible_noise(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(
        '[job]\nid = "j"\nhost = "a"\nparticipants = ["a", "b"]\nsource = "s"\nlabel = "y"\n[dp]\nreproducible = true\n'
    )
    with pytest.raises(ConfigError, match="unknown key 'reproducible' in \\[dp\\]"):
        job_document(path, owner="o")
    # an owner who writes the signed body by hand (an int passes the scalar check) is refused too
    path.write_text('[job]\nid = "j"\nhost = "a"\nparticipants = ["a", "b"]\nsource = "s"\nlabel = "y"\n')
    body = job_document(path, owner="o")
    body["run_config"]["dp.reproducible"] = 1
    with pytest.raises(ConfigError, match="unknown job setting 'dp.reproducible'"):
        parse_document(body)


# -- the mechanism check (peers.mechanism_check) ---------------------------------------


def test_the_mechanism_check_passes_secret_noise_and_fails_reproducible_noise(bank_files):
    root, encoder = bank_files
    job = JobConfig(
        label="default",
        encoder_path=str(root / "encoder.json"),
        banks_dir=str(root),
        job_id="check",
        peers=2,
        model=ModelSpec("mlp", (32, 16)),
        train=TrainSpec(rounds=3, batch_size=64, lr=LR, seed=7),
        dp=DPSpec(epsilon=2.0, max_grad_norm=CLIP),
    )
    data = client.bank_data(job, _context(job))
    weights = get_weights(build_model(job.model, encoder.n_features))
    secret = check_mechanism(job, data.x_train, data.y_train, weights, bank_seed=1)
    assert secret.passed, secret.verdict
    assert secret.interval[0] < secret.expected_sd < secret.interval[1]
    assert secret.interval[0] <= secret.replay_sd <= secret.interval[1]
    assert secret.sampling_differs

    seeded = check_mechanism(
        replace(job, dp=replace(job.dp, reproducible=True)), data.x_train, data.y_train, weights, bank_seed=1
    )
    assert not seeded.passed
    assert seeded.replay_sd == 0.0 and seeded.host_sd == 0.0 and not seeded.sampling_differs
    assert "two replays differ by sd 0" in seeded.verdict and "host's recomputation" in seeded.verdict


def test_the_mechanism_check_fails_noise_weaker_than_planned(bank_files, monkeypatch):
    """A forgotten factor in the noise (σ/2 applied, σ accounted) is caught by the scale, not only by freshness."""
    from fedsilo.privacy import dpsgd

    root, encoder = bank_files
    job = JobConfig(
        label="default",
        encoder_path=str(root / "encoder.json"),
        banks_dir=str(root),
        job_id="weak",
        peers=2,
        model=ModelSpec("mlp", (32, 16)),
        train=TrainSpec(rounds=3, batch_size=64, lr=LR),
        dp=DPSpec(epsilon=2.0, max_grad_norm=CLIP),
    )
    data = client.bank_data(job, _context(job))
    weights = get_weights(build_model(job.model, encoder.n_features))
    monkeypatch.setattr(dpsgd, "_applied_noise", lambda sigma: sigma / 2)
    weak = check_mechanism(job, data.x_train, data.y_train, weights, bank_seed=1)
    assert not weak.passed and weak.replay_sd < weak.interval[0]


def test_a_deployed_jobs_card_says_where_the_noise_came_from_and_what_is_public():
    import datetime as dt

    from fedsilo.peers.daemon.card import build_card
    from fedsilo.peers.daemon.participants import Acceptance, Participant
    from fedsilo.peers.daemon.signed_job import SignedJob
    from fedsilo.privacy.accounting import Mechanism

    job = SignedJob(
        "j",
        "owner",
        "bank-a",
        ("bank-a", "bank-b"),
        2,
        "credit",
        "default",
        "n",
        dt.datetime.now(dt.UTC),
        JobConfig(label="default", encoder_path=""),
        {"job": {"id": "j"}},
    )
    acceptance = Acceptance("bank-b", 100, 80, "sha256", (Mechanism(1.0, 0.1, 8),), 1e-5, "rdp", "key")
    participants = [Participant("bank-b", "accepted", "", acceptance)]
    card = build_card(job, participants, {}, {"rounds": []})
    assert card["privacy"]["noise"].startswith(
        "secret: each participant drew its DP noise and sampling from its own OS CSPRNG"
    )
    assert "training rows is released exactly" in card["privacy"]["public"]
    assert card["participants"][0]["training_rows"] == 80


def test_a_deployed_peer_checks_its_noise_on_request(bank_files, tmp_path, capsys, monkeypatch):
    from fedsilo.cli import main
    from fedsilo.privacy import dpsgd

    root, _ = bank_files
    path = tmp_path / "job.toml"
    path.write_text(
        '[job]\nid = "j"\nhost = "a"\nparticipants = ["a", "b"]\nsource = "s"\nlabel = "default"\n'
        "[model]\nhidden = [32, 16]\n[train]\nrounds = 3\nbatch-size = 64\nseed = 9\n[dp]\nepsilon = 2.0\n"
    )
    data = str(root / "bank-00000.parquet")
    assert main(["peer", "check-noise", "--job", str(path), "--data", data]) == 0
    assert "check-noise: passed: fresh noise of the planned scale" in capsys.readouterr().out
    monkeypatch.setattr(dpsgd, "_applied_noise", lambda sigma: 0.0)  # a forgotten noise call
    assert main(["peer", "check-noise", "--job", str(path), "--data", data]) == 2
    assert "check-noise FAILED: two replays differ by sd 0" in capsys.readouterr().err
