"""Runtime and connectors: the channel pipeline, the delivery worker, and one module or package per transport."""
