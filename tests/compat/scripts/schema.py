from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema
from inference_schema.schema_decorators import output_schema


def init():
    pass


@input_schema("num", StandardPythonParameterType(1))
@output_schema(StandardPythonParameterType(11))
def run(num, color="red"):
    return {"num": num + 10, "color": color}
