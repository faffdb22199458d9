"""The model room: its card (files, input spec, preprocessing), the preprocessing it prescribes, and
the ONNX Runtime session wrapper that turns decoded images into embeddings."""
