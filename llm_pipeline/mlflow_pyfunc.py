"""The MLflow model flavor of a stage's model folder: the `loader_module` of every registered model.

`tracking.runs.StageRun.register_model` logs a folder (model.safetensors + model.json, tokenizer.json,
manifest.json) with `mlflow.pyfunc.log_model(loader_module="llm_pipeline.mlflow_pyfunc",
data_path=folder)`; `mlflow.pyfunc.load_model(...)` and `mlflow models serve` then call
`_load_pyfunc` here on the downloaded folder. `predict` takes a DataFrame with a `text` column
(and any column the fine-tune's template names, e.g. `lang`) and returns one text or label per
row (llm_pipeline.inference says which); params (tracking.registry.PYFUNC_PARAMS) tune the decoding.

It imports mlflow only to report bad input (then MLflow is loaded: it called us): MLflow finds
this module by name, so the stages that register models do not import it (nor the inference code
behind it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from llm_pipeline.errors import PipelineError
from llm_pipeline.inference import TEXT_COLUMN, LoadedModel, build_options, load_model_folder, predict


class FolderModel:
    """What `mlflow.pyfunc.load_model` wraps: a loaded model folder with `predict`."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> list[str]:
        try:
            return predict(self.loaded, as_frame(model_input), build_options(params))
        except PipelineError as exc:
            # bad input, said in one line: MLflow (loaded, since it called us) answers it with a
            # 400 and this message, where any other exception becomes its generic "unexpected
            # error" with a traceback
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def as_frame(model_input: Any) -> pd.DataFrame:
    """A DataFrame of rows; a plain list of strings (or a Series) is the `text` column."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, pd.Series):
        return pd.DataFrame({TEXT_COLUMN: model_input.astype(str)})
    if isinstance(model_input, (list, tuple)) and all(isinstance(x, str) for x in model_input):
        return pd.DataFrame({TEXT_COLUMN: list(model_input)})
    return pd.DataFrame(model_input)


def _load_pyfunc(data_path: str) -> FolderModel:
    """MLflow's entry point: `data_path` is the folder register_model logged."""
    return FolderModel(load_model_folder(data_path))
