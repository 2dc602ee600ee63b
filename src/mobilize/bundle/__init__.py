"""The bundle: artifacts + ``manifest.json`` + ``reference.npz``, written atomically."""
