"""Helpers of the diagnosis tests (a module of its own: "conftest" names several files)."""

import numpy as np
import onnx


def true_amax(model: onnx.ModelProto, tensors, images: np.ndarray) -> dict[str, float]:
    """max |x| over the images at each tensor, through ONNX Runtime."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return {t: float(np.abs(v).max()) for t, v in zip(tensors, session.run(list(tensors),
                                                                          {"images": images}))}
