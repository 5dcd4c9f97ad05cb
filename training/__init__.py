"""bft.training: backward, seed and curated models with TRL, served, and evaluated.

Commands: `train` (`bft train`), `serve` (`bft serve`), `evaluate` (`bft eval`). Below them:

- `config`: the training dataclasses (data sources and mixtures, bft's own arguments);
- `mixtures`: training data loaded, checked row by row, turned into prompt/completion rows and mixed;
- `models`: base models by name (the embedded ones included), dropout where the architecture has it;
- `push`: a trained model committed and tagged on the Hub;
- `answers`: an instruction set answered by a served model;
- `judge`: pairwise judgements in both orders against a reference;
- `winrate`: win rates, standard errors and the length-controlled rate;
- `alpaca_eval`: AlpacaEval's file formats.
"""
