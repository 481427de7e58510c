"""Exercise stubs: one module per exercise, each with one function for you to fill in.

Copy a stub (its text is `minilora.exercises.stub_source(NAME)`), replace the `raise NotImplementedError`
with your code, then grade it: `minilora exercises check NAME --file my_solution.py`.
"""
