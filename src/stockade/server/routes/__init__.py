"""One module per resource; each route turns a validated request into one engine call."""
