"""A run's stages: `method/stages.py`'s `Stage`s built once from the run config, the same for every user.

Both executors, the dry run, the cache count and the context check (`method/fitting.py`) work on this list,
so a stage is built with the same escaper (`prepare.escape_markers`) and the same reply checks
(`check_language`, `check_prompt_echo`) wherever it is used.
"""

from __future__ import annotations

from bft.generation.config import GenerateConfig
from bft.generation.method.escaping import Escaper
from bft.generation.method.stages import Stage, build_stage


def build_stages(config: GenerateConfig) -> list[Stage]:
    """The stages `config.stages` names, in run order, each from its own section of the config."""
    escaper = Escaper(config.prepare.markers) if config.prepare.escape_markers else None
    return [
        build_stage(
            name,
            config.stage(name),
            escaper=escaper,
            language=config.check_language,
            echo=config.check_prompt_echo,
        )
        for name in config.stages
    ]
