"""Reference solutions of the exercises, one module per exercise, each defining one function named
like its module. Kept apart from the stubs: read them after you have tried."""
