"""NAS engine: supernet training, search controllers, cost model, export, tracking, CLI."""
