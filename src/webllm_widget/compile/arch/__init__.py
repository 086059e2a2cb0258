"""Model families: one sub-package per family (``model.py``, ``loader.py``, ``config.py``), found through ``registry``.

Example::

    from webllm_widget.compile.arch import registry
    cfg = registry.config_from_dict({"architecture": "llama", "hidden_size": 64, ...})
    model = registry.family_of(cfg).model(cfg)
"""
