"""MLflow "model from code" entry point: MLflow runs this file to build the pyfunc model,
so no pickled Python object is stored with the model."""

import mlflow

from pipelines.themes import ThemeModel

mlflow.models.set_model(ThemeModel())
