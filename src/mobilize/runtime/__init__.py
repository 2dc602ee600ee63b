"""Runners: one per runtime. Each is a context manager whose public ``infer(feeds)`` checks names, dtypes and shapes
once (in :class:`~mobilize.runtime.base.Runner`) before the backend-specific ``_infer`` runs."""
