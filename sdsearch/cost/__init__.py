"""Every deploy metric known before training: the meta-device trace (params, MACs, peak memory, size),
TFLite Micro's arena and .tflite bytes estimated from it (and checked against TFLM itself), measured
latency, the worst case of an every-exit model, and the metrics per exit of a config."""
