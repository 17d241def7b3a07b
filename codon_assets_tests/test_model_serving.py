"""A registered surrogate serves: ``mlflow models serve --env-manager local`` on loopback answers REST
predictions equal to the in-process ones, from the code the logged model packs (``code/codon_assets``),
with requirements that name no ``codon-assets`` distribution (it is not on PyPI).

The integration tests train a small yeast surrogate through the real code path (~20 s on 2 cores), start a
model server subprocess and a Python without the installed package (~45 s in all)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.core.enhance import build_enhanced
from codon_assets.core.features import MarkovBatchScorer, extract_features
from codon_assets.core.hosts import get_host
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.surrogate import predict_frame
from codon_assets.core.training import train_surrogate
from codon_assets.core.tsv import read_release_table
from codon_assets_tests.conftest import EXAMPLES

MODEL_NAME = "codon-surrogate-S_cerevisiae"
START_TIMEOUT_S = 180  # the server imports mlflow, copies the model out of the store and loads it
REQUEST_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20


@dataclass(frozen=True)
class Registered:
    tracking_uri: str
    model_uri: str
    model_dir: Path  # the registered model's files, downloaded
    records: pd.DataFrame  # protein_id, sequence, host: what a caller sends
    seq_sha256: list[str]  # the records' hashes as conversion computed them
    expected: pd.DataFrame  # mu, sigma of the trained model in this process (predict_frame)


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> Registered:
    """A yeast surrogate trained as the model asset trains it (Markov features, measured labels), logged
    and registered by MlflowTracking.log_training in a temporary sqlite store."""
    import mlflow

    from resources.mlflow_tracking import MlflowTracking

    saved_env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    folder = tmp_path_factory.mktemp("serving")
    converted = convert_files([read_release_table(EXAMPLES / "Sac.tsv")], get_host("S_cerevisiae"),
                              ConversionSettings()).valid
    markov = MarkovCdsModel.train(converted["sequence"].combine_chunks(), converted["seq_sha256"].to_pylist())
    features, _ = extract_features(converted.select(["protein_id", "sequence", "seq_sha256"]),
                                   MarkovBatchScorer(markov))
    enhanced, _ = build_enhanced(converted, features, "model_enhanced", EXAMPLES / "Sac_measured.tsv", None)
    result = train_surrogate(enhanced, {"S_cerevisiae": markov})
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    try:
        logged = tracking.log_training(result, MODEL_NAME, tags={"dagster.run_id": "model-serving-test"})
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.model_uri,
                                                             dst_path=str(folder / "downloaded")))
    finally:  # log_training exports MLFLOW_TRACKING_URI; later tests (and their processes) must not see it
        for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
            del os.environ[name]
        os.environ.update(saved_env)

    # Three training records as stored, and a sequence the Markov model never saw (one synonymous change).
    head = converted.slice(0, 3)
    sequences = head["sequence"].to_pylist()
    changed = sequences[0][:3] + ("GCC" if sequences[0][3:6] != "GCC" else "GCT") + sequences[0][6:]
    records = pd.DataFrame({"protein_id": [*head["protein_id"].to_pylist(), "changed"],
                            "sequence": [*sequences, changed], "host": "S_cerevisiae"})
    hashes = [*head["seq_sha256"].to_pylist(), hashlib.sha256(changed.encode()).hexdigest()]
    mu, sigma = predict_frame(result.model, records.assign(seq_sha256=hashes))
    return Registered(tracking.uri(), logged.model_uri, model_dir, records, hashes,
                      pd.DataFrame({"mu": mu, "sigma": sigma}))


def test_pyfunc_packs_core_modules_and_pins_their_imports_only():
    """What the wrapper imports decides the code and requirements: core modules, no Dagster, no CLI."""
    from resources.mlflow_pyfunc import pinned_requirements, pyfunc_dependencies

    found = pyfunc_dependencies()
    assert {"codon_assets", "codon_assets.core", "codon_assets.core.surrogate", "codon_assets.core.markov",
            "codon_assets.core.surrogate_features"} <= set(found.modules)
    assert all(m == "codon_assets" or m.startswith("codon_assets.core") for m in found.modules)
    assert "codon_assets.core.design" not in found.modules and "codon_assets.core.training" not in found.modules
    assert {"mlflow", "lightgbm", "numpy", "pandas", "pyarrow", "scikit-learn", "scipy"} <= set(found.distributions)
    assert not any(d.lower().startswith(("dagster", "codon")) for d in found.distributions)
    assert "mlflow-skinny" not in found.distributions  # the distribution named like the module
    assert all("==" in pin for pin in pinned_requirements(*found.distributions))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextmanager
def model_server(model_uri: str, tracking_uri: str, folder: Path):
    """``mlflow models serve`` for ``model_uri`` on a free loopback port, in its own process group (the CLI
    starts uvicorn as its child); yields the base URL once /ping answers, and always stops the group."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           # env-manager local runs `uvicorn` from PATH: this interpreter's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    log = folder / "server.log"
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri,
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the model server exited ({proc.returncode}) before answering /ping:\n{log_tail(log)}")
            try:
                if requests.get(f"{base}/ping", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the model server did not answer /ping within {START_TIMEOUT_S} s:\n{log_tail(log)}")
            time.sleep(1)
        yield base
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it is still there after STOP_TIMEOUT_S."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)  # any member of the group left?
            except ProcessLookupError:
                return
            time.sleep(0.2)


def invoke(base: str, payload: dict) -> pd.DataFrame:
    response = requests.post(f"{base}/invocations", json=payload, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text[:2000]
    return pd.DataFrame(response.json()["predictions"])


@pytest.mark.integration
def test_registered_model_packs_its_code_and_requires_no_codon_assets(registered):
    model_dir = registered.model_dir
    requirements = (model_dir / "requirements.txt").read_text()
    assert "codon-assets" not in requirements.lower() and "codon_assets" not in requirements.lower()
    pins = dict(line.split("==") for line in requirements.split() if "==" in line)
    assert {"mlflow", "lightgbm", "numpy", "pandas", "pyarrow", "scikit-learn", "scipy"} <= set(pins)
    assert "dagster" not in pins
    from importlib.metadata import version
    assert all(pins[name] == version(name) for name in pins)  # the versions trained with
    code = model_dir / "code" / "codon_assets"
    assert (code / "__init__.py").is_file() and (code / "core" / "surrogate.py").is_file()
    assert (code / "data" / "trna" / "S_cerevisiae.csv").is_file()
    packed = list(code.rglob("*.py"))
    assert not any("dagster" in p.read_text() for p in packed)
    assert not (code / "core" / "design.py").exists()  # only what the wrapper imports
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "code: code" in mlmodel and "input_example" in mlmodel


@pytest.mark.integration
def test_packed_model_predicts_without_the_installed_package(registered, tmp_path):
    """A Python that cannot see the installed codon_assets (no site processing: the editable install's
    finder is not there) loads the model from its files and predicts the same."""
    paths = os.pathsep.join(dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]))
    script = """
import json, sys
import pandas as pd
import mlflow.pyfunc
try:
    import codon_assets  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("codon_assets importable before the model is loaded: " + codon_assets.__file__)
model = mlflow.pyfunc.load_model(sys.argv[1])
import codon_assets
records = pd.read_json(sys.argv[2], orient="split")
out = model.predict(records)
print(json.dumps({"codon_assets": codon_assets.__file__, "dagster": "dagster" in sys.modules,
                  "predictions": out.to_dict(orient="list")}))
"""
    records = tmp_path / "records.json"
    records.write_text(registered.records.to_json(orient="split"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"PYTHONPATH": paths}
    proc = subprocess.run([sys.executable, "-S", "-c", script, str(registered.model_dir), str(records)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(answer["codon_assets"]).resolve().is_relative_to(registered.model_dir.resolve() / "code")
    assert not answer["dagster"]
    np.testing.assert_allclose(answer["predictions"]["mu"], registered.expected["mu"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(answer["predictions"]["sigma"], registered.expected["sigma"], rtol=1e-12, atol=0)


@pytest.mark.integration
def test_served_model_answers_rest_predictions_on_loopback(registered, tmp_path):
    records, expected = registered.records, registered.expected
    # What the server computes for a missing seq_sha256 is what conversion stored for these records.
    assert [hashlib.sha256(s.encode()).hexdigest() for s in records["sequence"]] == registered.seq_sha256
    with model_server(registered.model_uri, registered.tracking_uri, tmp_path) as base:
        # MLflow's dataframe_split JSON, protein_id / sequence / host only: seq_sha256 is computed inside.
        served = invoke(base, {"dataframe_split": {"columns": list(records.columns),
                                                   "data": records.to_numpy().tolist()}})
        assert list(served.columns) == ["mu", "sigma"] and len(served) == len(records)
        assert served.notna().all().all() and (served["sigma"] > 0).all()
        np.testing.assert_allclose(served["mu"], expected["mu"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(served["sigma"], expected["sigma"], rtol=1e-12, atol=0)
        # The same records with their stored hashes, as dataframe_records: the same answer.
        with_hashes = records.assign(seq_sha256=registered.seq_sha256)
        again = invoke(base, {"dataframe_records": with_hashes.to_dict(orient="records")})
        np.testing.assert_allclose(again.to_numpy(), served.to_numpy(), rtol=1e-12, atol=0)
        # A host the model has no profile for is the caller's error, not a server failure.
        response = requests.post(f"{base}/invocations", timeout=REQUEST_TIMEOUT_S, json={
            "dataframe_split": {"columns": ["sequence", "host"], "data": [[records["sequence"][0], "E_coli"]]}})
        assert 400 <= response.status_code < 600 and "no profile for host" in response.text
