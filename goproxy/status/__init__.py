"""The status page's data: the model, its readers (metrics, cache count, log ring) and the collector."""
