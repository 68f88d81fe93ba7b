"""One module per item of the suite; each fills a `Section` from the shared `Context`."""
