"""bft.cards: dataset (and later model) cards, rendered from the templates in `cards/templates/`."""
