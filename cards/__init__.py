"""bft.cards: dataset and model cards, rendered from the templates in `cards/templates/`.

Facts in, text out: nothing here imports bft's other folders.

- `common`: what every card shares (version, citations, size categories);
- `generation_card`: the card of a `bft generate` output folder;
- `dataset_card`: the card of a built dataset, and the checks it must pass;
- `model_card`: the card of a trained model;
- `plots`: the PNG charts a dataset card shows.
"""
