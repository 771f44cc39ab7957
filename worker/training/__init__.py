"""Pure training pipeline: plain spec in, adapter and result out. From `app` it imports only the
pure `app.domain` (task kinds, the technique catalogue); never the database, services or web.

Submodules are imported explicitly (`from worker.training.loop import train`) so that
importing the package itself stays free of torch.
"""
