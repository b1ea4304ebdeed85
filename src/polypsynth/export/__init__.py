"""Export: checkpoints -> bundles of ONNX graphs (and TensorRT engines) with a validated manifest."""
