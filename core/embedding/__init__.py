"""Embedding models: providers chosen by name (providers.py), the model-window helpers every
backend uses (window.py), the ONNX and bfloat16 backends, and the linear query adapter."""
