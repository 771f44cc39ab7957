"""Pure training pipeline: plain spec in, adapter and result out. Never imports `app`.

Submodules are imported explicitly (`from worker.training.loop import train`) so that
importing the package itself stays free of torch.
"""
