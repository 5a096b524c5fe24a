"""A deployed ClientApp is a new process per message: the modules a boosting message needs
(the ClientApp and its `query.gbdt` handler) import neither torch nor Opacus, which only
the neural handlers (train, evaluate) load when called. bench/clientapp_import.py times it."""

import json
import subprocess
import sys


def heavy_modules_after(imports: str) -> list[str]:
    code = f"import json, sys\n{imports}\nprint(json.dumps([m for m in ('torch', 'opacus') if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_boosting_message_imports_no_torch_nor_opacus():
    imports = (
        "import fedsilo.peers.client.app, fedsilo.peers.gbdt.client_app, fedsilo.peers.gbdt.bank\n"
        "from fedsilo.peers.client.app import build_client_app\n"
        "build_client_app()"
    )
    assert heavy_modules_after(imports) == []


def test_the_neural_handlers_still_load_them_when_called():
    assert heavy_modules_after("from fedsilo.peers.client.local_training import train_round") == ["torch", "opacus"]
