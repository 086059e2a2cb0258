"""Weight quantization: modes (``modes.py``), the nn swap (``nn.py``), packed layouts (``packing.py``), GGUF blocks (``ggml.py``)."""
