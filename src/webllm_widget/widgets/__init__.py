"""The notebook widgets: :class:`~.chat.Chat` (an LLM chat in a cell) and :class:`~.webgpu.WebGPU` (TVM functions
on the page's GPU, for teaching).

``chat.py`` holds the Chat's traitlets, model loading and public methods; ``answers.py`` the answer queue, the
handle of one answer and the context-overflow policy; ``messages.py`` and ``openai_format.py`` the message shapes.
The widgets sit on top: they use models/ (catalogue, device policy) and the wire modules (protocol, blobs), and
nothing below imports them.
"""
