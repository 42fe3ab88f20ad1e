"""The paper's baselines, each a ``runner.method.Method`` the shared loop drives through its hooks."""
