"""An ``@input_schema`` run(): typed parameters from a JSON object, a typed JSON object back."""

from __future__ import annotations

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema
from inference_schema.schema_decorators import output_schema


def init() -> None:
    print("decorated fuzz script ready")


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0]])))
@input_schema("label", StandardPythonParameterType("a"))
@input_schema("scale", StandardPythonParameterType(1.0))
@output_schema(StandardPythonParameterType({"rows": 1, "label": "a", "total": 1.0}))
def run(data: np.ndarray, label: str, scale: float = 1.0) -> dict[str, object]:
    total = float(np.nan_to_num(data.astype(float)).sum()) * float(scale)
    return {"rows": int(data.shape[0]), "label": str(label), "total": total if np.isfinite(total) else 0.0}
