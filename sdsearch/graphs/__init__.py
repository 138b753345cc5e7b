"""Deployable graphs of an exit model: the contract of names the files and their readers share, ONNX
(float32 and static int8) and torch.export graphs with the preprocessing inside, ONNX Runtime, the
int8 .tflite, TensorFlow Lite Micro's arena and predictions, and the C++ files a firmware includes."""
