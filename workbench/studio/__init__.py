"""The head-ablation studio: interactive ablation studies in the browser (`workbench studio`).

`runfolder` reads what a run folder holds, `examples` the examples and their profile states,
`session` does every model computation through the library (no web code, unit-testable), `jobs`
serialises model access and runs cancellable generations, `views` draws the figures, `cards`
are the page's parts (each its layout and callbacks) and `app` puts them on one Dash page.
"""
