"""The LoRA-Probe: build its training set, train and evaluate it, export it to ONNX, and find it again."""
