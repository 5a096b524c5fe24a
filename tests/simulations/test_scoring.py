"""`fedsilo score` and `load_run(...).score(df)` on a real run folder and on a signed (pulled-layout) model.

Expected scores are computed here independently of fedsilo's model code: the encoded
rows pushed through the safetensors weights with numpy (tanh MLP, sigmoid).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

import fedsilo
from fedsilo.cli import main
from fedsilo.errors import DataError
from fedsilo.peers.daemon.model_store import publish
from fedsilo.peers.data.encoding import TabularEncoder
from fedsilo.peers.errors import IntegrityError, SignatureError
from fedsilo.peers.identity.consortium import Identity, admit, init_consortium, init_peer

pytestmark = pytest.mark.slow  # the session's run folder comes from Flower's Simulation Engine (Ray)


def numpy_scores(folder, frame: pd.DataFrame) -> np.ndarray:
    """The MLP (input, hidden1, ..., head; tanh) of the run's card applied with numpy."""
    weights = load_file(str(folder / "model.safetensors"))
    x = TabularEncoder.load(folder / "encoder.json").transform_features(frame).astype(np.float64)
    layers = ["input"] + sorted(
        (k[:-7] for k in weights if k.startswith("hidden") and k.endswith(".weight")), key=lambda name: int(name[6:])
    )
    for name in layers:
        x = np.tanh(x @ weights[f"{name}.weight"].T.astype(np.float64) + weights[f"{name}.bias"])
    logits = (x @ weights["head.weight"].T.astype(np.float64) + weights["head.bias"])[:, 0]
    return 1 / (1 + np.exp(-logits))


def score_cli(capsys, *args):
    code = main(["score", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_one_score_per_row_in_the_files_order_with_its_id(tiny_run, tmp_path, capsys):
    result, data = tiny_run
    frame = pd.read_csv(data).sample(frac=1.0, random_state=3).head(300)  # shuffled: order must follow the file
    frame.to_csv(tmp_path / "new.csv", index=False)
    code, out, err = score_cli(capsys, result.run_dir, "--data", tmp_path / "new.csv", "--out", tmp_path / "s.csv")
    assert code == 0, err
    scores = pd.read_csv(tmp_path / "s.csv")
    assert list(scores.columns) == ["customer_id", "score"]  # the run's id column, by default
    assert scores["customer_id"].tolist() == frame["customer_id"].tolist()
    np.testing.assert_allclose(scores["score"], numpy_scores(result.run_dir, frame), rtol=1e-5, atol=1e-6)
    assert "scored 300 rows" in out


def test_api_scores_equal_the_cli_and_ignore_the_label_column(tiny_run):
    result, data = tiny_run
    frame = pd.read_csv(data).head(50)
    model = fedsilo.load_run(result.run_dir)
    scores = model.score(frame)  # label present: ignored; id column known from the card
    assert scores.name == "score" and scores.index.equals(frame.index)
    np.testing.assert_allclose(scores, numpy_scores(result.run_dir, frame), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.score(frame.drop(columns=["default"])), scores)


def test_missing_and_extra_columns_are_refused_by_name(tiny_run, tmp_path, capsys):
    result, data = tiny_run
    frame = pd.read_csv(data).head(20)
    frame.drop(columns=["income"]).to_csv(tmp_path / "lacks.csv", index=False)
    code, _, err = score_cli(capsys, result.run_dir, "--data", tmp_path / "lacks.csv", "--out", tmp_path / "a.csv")
    assert code == 2 and "lacks column(s) 'income'" in err and not (tmp_path / "a.csv").exists()
    frame.assign(branch_code=7).to_csv(tmp_path / "extra.csv", index=False)
    code, _, err = score_cli(capsys, result.run_dir, "--data", tmp_path / "extra.csv", "--out", tmp_path / "b.csv")
    assert code == 2 and "column(s) 'branch_code' that the model was not trained on" in err
    assert not (tmp_path / "b.csv").exists()
    with pytest.raises(DataError, match="id column 'loan_no' is not in the table"):
        fedsilo.load_run(result.run_dir).score(frame, id_column="loan_no")


def test_an_unseen_category_is_encoded_as_in_training_and_counted(tiny_run, tmp_path, capsys):
    result, data = tiny_run
    frame = pd.read_csv(data).head(10)
    frame.loc[[2, 5], "region"] = "west"  # never seen in training
    frame.to_csv(tmp_path / "new.csv", index=False)
    code, out, err = score_cli(capsys, result.run_dir, "--data", tmp_path / "new.csv", "--out", tmp_path / "s.parquet")
    assert code == 0, err
    assert "region: 2 rows with a category not seen in training" in out
    scores = pd.read_parquet(tmp_path / "s.parquet")
    assert len(scores) == 10
    np.testing.assert_allclose(scores["score"], numpy_scores(result.run_dir, frame), rtol=1e-5, atol=1e-6)
    x = TabularEncoder.load(result.run_dir / "encoder.json").transform_features(frame)
    region = [
        i
        for i, name in enumerate(TabularEncoder.load(result.run_dir / "encoder.json").feature_names)
        if name.startswith("region=")
    ]
    assert x[[2, 5]][:, region].sum() == 0 and x[[0, 1]][:, region].sum() == 2


def test_a_tampered_model_or_encoder_is_refused_by_its_hash(tiny_run, tmp_path, capsys):
    result, data = tiny_run
    for name in ("model.safetensors", "encoder.json"):
        copy = tmp_path / name.split(".")[0]
        shutil.copytree(result.run_dir, copy)
        raw = bytearray((copy / name).read_bytes())
        raw[-2] ^= 0x01  # one bit of one weight (or of the encoder's JSON)
        (copy / name).write_bytes(bytes(raw))
        code, _, err = score_cli(capsys, copy, "--data", data, "--out", tmp_path / "s.csv")
        assert code == 2 and f"{name} does not match the SHA-256 in model_card.json" in err
        assert not (tmp_path / "s.csv").exists()


@pytest.fixture
def signed_copy(tiny_run, tmp_path):
    """The run's model published as the network does (signed card, artefacts by file name), and an identity."""
    result, _ = tiny_run
    init_consortium(tmp_path / "consortium", "test")
    request = init_peer(tmp_path / "host" / "identity", "bank-a")
    admit(tmp_path / "consortium", request, ("peer",), "https://127.0.0.1:1", request.with_name("peer.pem"))
    for file in ("ca.pem", "manifest.json"):
        shutil.copy(tmp_path / "consortium" / file, tmp_path / "host" / "identity" / file)
    identity = Identity.load(tmp_path / "host" / "identity")
    run_card = json.loads((result.run_dir / "model_card.json").read_text())
    card = {"job": {"label": "default", "model": run_card["job"]["model"]}, "metrics": {}}
    files = {name: result.run_dir / name for name in ("model.safetensors", "encoder.json", "metrics.json")}
    _, folder = publish(tmp_path / "models", identity, "job-1", files, card)
    return folder, tmp_path / "host" / "identity"


def test_a_pulled_model_folder_scores_and_its_signature_is_checked(tiny_run, signed_copy, tmp_path, capsys):
    result, data = tiny_run
    folder, identity = signed_copy
    frame = pd.read_csv(data).head(40)
    code, out, err = score_cli(
        capsys,
        folder,
        "--data",
        data,
        "--out",
        tmp_path / "s.csv",
        "--id-column",
        "customer_id",
        "--identity",
        identity,
    )
    assert code == 0, err
    assert "card signature verified" in out
    scores = pd.read_csv(tmp_path / "s.csv").head(40)
    np.testing.assert_allclose(scores["score"], numpy_scores(result.run_dir, frame), rtol=1e-5, atol=1e-6)
    # An attacker who alters the model and rewrites the card's hash to match passes the hash check,
    # but not the host's signature.
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-2] ^= 0x01
    (folder / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="model.safetensors does not match the SHA-256"):
        fedsilo.load_run(folder)
    card = json.loads((folder / "model_card.json").read_text())
    from fedsilo.peers.provenance import sha256_file

    card["artifacts"]["model.safetensors"]["sha256"] = sha256_file(folder / "model.safetensors")
    (folder / "model_card.json").write_text(json.dumps(card))
    fedsilo.load_run(folder)  # the hash alone is satisfied by the rewritten card
    with pytest.raises(SignatureError):
        fedsilo.load_run(folder, identity=identity)
