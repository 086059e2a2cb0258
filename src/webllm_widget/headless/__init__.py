"""The page's engine outside a notebook: headless Chromium driven from Python (engine.py) and the
terminal chat of ``webllm-widget chat`` (terminal.py). Built on models/; nothing below imports it."""
