"""The classifier: base-model loading, ONNX export and int8 quantisation, and the onnxruntime
scorer that turns a batch of texts into probabilities. It knows nothing of Kafka, Redis or the
adaptation loop; `adapters` and `streams` build on it."""
