"""Deployable graphs of an exit model: the contract of names the files and their readers share, ONNX
(float32 and static int8) and torch.export graphs with the preprocessing inside, and ONNX Runtime."""
