"""Model converters that need no framework: dlib's ResNet and MXNet checkpoints to ONNX."""
