"""The MLflow pyfunc wrapper of the surrogate, logged as code ("models from code"): loading a registered
model runs this file and reads the model's native files (LightGBM text, JSON, .npz), no pickle.

It imports ``codon_assets.core`` only, which the logged model carries as its code path (``code/``, see
``resources/mlflow_pyfunc.py``): a served model needs no installed ``codon-assets``. Its imports decide
what the logged model packs and requires, so keep them to what predicting needs."""

import hashlib

import mlflow
import mlflow.pyfunc
import pandas as pd


def with_seq_sha256(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``seq_sha256`` for every record: where the column is absent or empty, the SHA-256 of
    the sequence's UTF-8 text as given (what conversion stores for a cleaned CDS, so a training record sent
    as stored gets its cross-fitted Markov features)."""
    given = frame["seq_sha256"] if "seq_sha256" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    computed = [h if isinstance(h, str) and h else hashlib.sha256(str(s).encode()).hexdigest()
                for h, s in zip(given.tolist(), frame["sequence"].tolist())]
    return frame.assign(seq_sha256=computed)


class SurrogatePyfunc(mlflow.pyfunc.PythonModel):
    """Input columns ``sequence`` and ``host``, optionally ``protein_id`` (ignored: answers are in record
    order) and ``seq_sha256`` (computed when absent), plus the evo2 feature columns when the model was
    trained on a backend other than markov; output ``mu`` and ``sigma`` per record."""

    def load_context(self, context) -> None:
        from codon_assets.core.surrogate import SurrogateModel

        self.model = SurrogateModel.load(context.artifacts["surrogate"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from codon_assets.core.surrogate import predict_frame
        from codon_assets.core.surrogate_features import EVO2_COLUMNS

        # A feature column sent empty is no feature column (a markov model then computes them all).
        empty = [c for c in EVO2_COLUMNS if c in model_input.columns and model_input[c].isna().all()]
        frame = with_seq_sha256(model_input.drop(columns=empty))
        self.check_hosts(frame)
        mu, sigma = predict_frame(self.model, frame)
        return pd.DataFrame({"mu": mu, "sigma": sigma})

    def check_hosts(self, frame: pd.DataFrame) -> None:
        """A caller's error for a host the model cannot predict, before any feature is computed."""
        from codon_assets.core.surrogate_features import EVO2_COLUMNS

        hosts = set(frame["host"].tolist())
        unknown = sorted(hosts - set(self.model.builders))
        if unknown:
            raise ValueError(f"the model has no profile for host {', '.join(map(str, unknown))} "
                             f"(it knows {', '.join(self.model.builders)})")
        computed = not all(name in frame.columns for name in EVO2_COLUMNS)
        unscored = sorted(hosts - set(self.model.markov_models))
        if computed and self.model.backend == "markov" and unscored:
            raise ValueError(f"the model has no Markov model for host {', '.join(unscored)}: "
                             f"pass its feature columns ({', '.join(EVO2_COLUMNS)})")


mlflow.models.set_model(SurrogatePyfunc())
