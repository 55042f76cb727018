"""The cards of the studio page, one module each: `layout(state)` gives the card's components and
`register(app, state)` wires its callbacks. `common` holds what several cards share: the
`StudioState` every card is handed, the page styles and the readers of the browser's values."""
