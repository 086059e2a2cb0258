"""The kernel <-> page wire: what each message carries (``schema``), defined once for Python and TypeScript."""
