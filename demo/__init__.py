"""The demo recommendation ranker: generated data, a numpy-trained MLP, exported to ONNX."""
