"""The MLflow pyfunc wrapper of the surrogate, logged as code ("models from code"): loading a registered
model runs this file and reads the model's native files (LightGBM text, JSON, .npz), no pickle."""

import mlflow
import mlflow.pyfunc
import pandas as pd


class SurrogatePyfunc(mlflow.pyfunc.PythonModel):
    """Input columns ``sequence``, ``seq_sha256``, ``host`` (plus the evo2 feature columns when the model
    was trained on a backend other than markov); output ``mu`` and ``sigma``."""

    def load_context(self, context) -> None:
        from codon_assets.core.surrogate import SurrogateModel

        self.model = SurrogateModel.load(context.artifacts["surrogate"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from codon_assets.core.surrogate import predict_frame

        mu, sigma = predict_frame(self.model, model_input)
        return pd.DataFrame({"mu": mu, "sigma": sigma})


mlflow.models.set_model(SurrogatePyfunc())
