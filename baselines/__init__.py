"""The paper's baselines, each a ``baselines.method.Method`` the shared loop drives through its hooks."""
