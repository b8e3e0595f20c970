"""One module per notebook: the experiment's scale presets and the functions it runs.

Notebooks are thin: `cfg = presets.get(NAME, SCALE)`, then calls into these modules and
`kdlib.plots`. Everything here is plain library code that tests reach.
"""
