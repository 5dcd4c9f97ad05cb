"""The four rules that keep bft's floors honest (`generation/__init__.py` is the floor map).

Read from the source's imports (`tests/import_graph.py`); a violation names the module and the line.
"""

import ast
import re

from bft.generation.cli import SUBCOMMANDS
from tests.import_graph import CLI, COMMANDS, FOLDERS, GROUND, cycles, folder_of, read_modules, upward

MODULES = read_modules()
IMPORTS = [i for m in MODULES.values() for i in m.imports]


def test_commands_are_leaves_named_only_by_the_cli():
    assert {module for module, _ in SUBCOMMANDS.values()} == COMMANDS
    importing = [f"{i.importer}:{i.line} imports {i.imported}" for i in IMPORTS if i.imported in COMMANDS]
    assert importing == []


def test_folders_stand_in_floors():
    wrong = []
    for i in IMPORTS:
        here, there = folder_of(i.importer), folder_of(i.imported)
        if here == "cards" and there != "cards":  # facts in, text out
            wrong.append(f"{i.importer}:{i.line} imports {i.imported}")
        elif FOLDERS.index(there) > FOLDERS.index(here):
            wrong.append(f"{i.importer}:{i.line} imports {i.imported} from a floor above")
    assert wrong == []


def test_no_import_circle_and_nothing_imports_upward():
    assert cycles(MODULES) == []
    assert upward(MODULES) == []


def test_the_ground_floor_uses_nothing_above_it():
    assert set(MODULES) >= GROUND
    above = [
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in IMPORTS
        if i.importer in GROUND and i.imported not in GROUND
    ]
    assert above == []


def test_each_piece_of_shared_knowledge_is_defined_once_on_the_ground_floor():
    homes = {
        "words": "bft.generation.text",
        "ngrams": "bft.generation.text",
        "copy_overlap": "bft.generation.text",
        "grounding": "bft.generation.text",
        "stable_hash64": "bft.generation.text",
        "file_sha256": "bft.generation.text",
        "StageRecord": "bft.generation.records",
        "Document": "bft.generation.records",
        "Rejected": "bft.generation.records",
        "Generation": "bft.generation.records",
        "OUTPUT_CONFIG_NAMES": "bft.generation.layout",
        "journal_dir": "bft.generation.layout",
        "blocks_dir": "bft.generation.layout",
        "config_file": "bft.generation.layout",
        "main_config": "bft.generation.layout",
        "STATS_FILE": "bft.generation.layout",
        "REASONS": "bft.generation.reasons",
        "reasons_of_kind": "bft.generation.reasons",
    }
    defined: dict[str, list[str]] = {}
    for module in MODULES.values():
        for node in ast.parse(module.path.read_text(encoding="utf-8")).body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            for name in names:
                defined.setdefault(name, []).append(module.name)
    assert {name: defined.get(name) for name in homes} == {name: [home] for name, home in homes.items()}


def test_bft_imports_sit_at_the_top_of_their_module():
    inner = [f"{i.importer}:{i.line} imports {i.imported}" for i in IMPORTS if not i.at_top and i.importer != CLI]
    assert inner == []


def test_every_folder_map_names_its_modules():
    """Each package's docstring is its map: every module of the package is named in it."""
    missing = []
    for name, module in MODULES.items():
        if module.path.name != "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(module.path.read_text(encoding="utf-8"))) or ""
        for child in module.path.parent.iterdir():
            stem = child.stem if child.suffix == ".py" else child.name
            is_module = child.suffix == ".py" and child.name != "__init__.py"
            is_package = child.is_dir() and (child / "__init__.py").is_file()
            if (is_module or is_package) and not re.search(rf"`{re.escape(stem)}\b", doc):  # the whole name
                missing.append(f"{name} does not name {stem}")
    assert missing == []
