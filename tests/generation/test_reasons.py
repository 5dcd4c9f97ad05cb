"""The registry of rejection reasons (`generation/reasons.py`): every reason bft writes is in it, and nothing else.

Read from the source with `ast`: each place that makes a reason (a `reason=` keyword, `Parsed(None, ...)`,
`Rejected(id, ...)`, `stage.failure(record, ...)`, `verdict.reject = ...`, ...) is followed back to the
string literals and registry constants it can hold, through local variables and the functions it calls.
"""

import ast
import json

import bft.generation.reasons as registry
from bft.generation.cli import main
from bft.generation.layout import OUTPUT_CONFIG_NAMES, PREPARE
from bft.generation.method.stages import STAGE_CLASSES
from bft.generation.reasons import KINDS, PARSE, REASONS, REQUEST_STAGES, TRANSIENT_REASONS, reasons_of_kind
from tests.import_graph import read_modules
from tests.servers.models import Reply, paper_model, prompt_kind
from tests.servers.tgi import TGITestServer

# call name -> the position of its reason argument
REASON_ARGUMENT = {"Parsed": 1, "Rejected": 1, "Unreadable": 0, "RequestRejected": 0, "failure": 1, "_rejected": 2}
REASON_ARGUMENT["rejected"] = 0  # prepare's local helper


def _call_name(node: ast.Call) -> str | None:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)


class Module:
    def __init__(self, name: str, tree: ast.Module):
        self.name = name
        self.tree = tree
        self.from_registry = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "bft.generation.reasons"
            for alias in node.names
        }
        self.assigned: dict[str, list[ast.expr]] = {}  # name -> the values assigned to it in this module
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self._assign(target, node.value)

    def _assign(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.assigned.setdefault(target.id, []).append(value)
        elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts, strict=True):
                self._assign(t, v)


def reason_expressions(module: Module):
    """The expression at each place of `module` that gives a record its reason."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "reason":
                    yield keyword.value
            position = REASON_ARGUMENT.get(_call_name(node))
            if position is not None and len(node.args) > position:
                yield node.args[position]
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr == "reject":
                    yield node.value


def returns_of(modules: list[Module], function: str) -> list[tuple[Module, ast.expr]]:
    return [
        (module, node.value)
        for module in modules
        for fn in ast.walk(module.tree)
        if isinstance(fn, ast.FunctionDef) and fn.name == function
        for node in ast.walk(fn)
        if isinstance(node, ast.Return) and node.value is not None
    ]


def follow(expr, module: Module, modules: list[Module], made: set, wrong: list, seen: set) -> None:
    """Add to `made` the reasons `expr` can hold; to `wrong` what is no registered reason."""
    where = f"{module.name}:{getattr(expr, 'lineno', '?')}"
    if id(expr) in seen:
        return
    seen.add(id(expr))
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        if expr.value in REASONS:
            made.add(expr.value)
        else:
            wrong.append(f"{where}: {expr.value!r} is not registered")
    elif isinstance(expr, ast.JoinedStr):
        wrong.append(f"{where}: a reason made by an f-string (register each value)")
    elif isinstance(expr, ast.IfExp):
        for branch in (expr.body, expr.orelse):
            follow(branch, module, modules, made, wrong, seen)
    elif isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name) and expr.value.id.isupper():
        name = expr.value.id
        if name not in module.from_registry:
            wrong.append(f"{where}: {name} is not the registry's")
        else:
            made.update(getattr(registry, name).values())
    elif isinstance(expr, ast.Name) and expr.id.isupper():
        if expr.id not in module.from_registry:
            wrong.append(f"{where}: {expr.id} is not the registry's")
        else:
            made.add(getattr(registry, expr.id))
    elif isinstance(expr, ast.Name):  # a local variable: what is assigned to it here (a parameter: its callers)
        for value in module.assigned.get(expr.id, []):
            follow(value, module, modules, made, wrong, seen)
    elif isinstance(expr, ast.Call) and _call_name(expr):
        for where_from, value in returns_of(modules, _call_name(expr)):
            follow(value, where_from, modules, made, wrong, seen)
    # an attribute (`parsed.reason`, `error.reason`, `row.reason`) passes on a reason made elsewhere


def made_reasons() -> tuple[set[str], list[str], int]:
    modules = [
        Module(name, ast.parse(m.path.read_text(encoding="utf-8")))
        for name, m in read_modules().items()
        if name != "bft.generation.reasons"
    ]
    made: set[str] = set()
    wrong: list[str] = []
    places = 0
    for module in modules:
        for expr in reason_expressions(module):
            places += 1
            follow(expr, module, modules, made, wrong, set())
    return made, wrong, places


def test_every_reason_the_code_makes_is_registered_and_every_registered_one_is_made():
    made, wrong, places = made_reasons()
    assert places > 40  # the scan still finds the places that make reasons
    assert wrong == []
    assert made == set(REASONS)


def test_each_reason_has_a_kind_stages_that_run_and_a_description():
    assert REQUEST_STAGES == tuple(STAGE_CLASSES) == tuple(OUTPUT_CONFIG_NAMES)
    for code, reason in REASONS.items():
        assert reason.code == code and reason.kind in KINDS and reason.description, code
        assert reason.stages and set(reason.stages) <= {PREPARE, *REQUEST_STAGES}, code
    assert set(TRANSIENT_REASONS) == {"request_failed"}
    assert all(REASONS[r].stages == (PREPARE,) for r in reasons_of_kind("input") - {"input_too_long", "input_invalid"})


def test_copied_markers_and_empty_replies_are_parse_failures_of_their_stage():
    assert {"score_copied_from_document", "score_copied_from_prompt", "reply_empty"} <= reasons_of_kind(PARSE, "curate")
    assert {"rewrite_copied_from_document", "rewrite_copied_from_prompt"} <= reasons_of_kind(PARSE, "rewrite")
    assert {"answer_empty", "answer_truncated"} <= reasons_of_kind(PARSE, "distill")
    assert "score_below_threshold" not in reasons_of_kind(PARSE)
    assert not reasons_of_kind(PARSE, PREPARE)


def misbehaving(request):
    """A model that gets something wrong at every stage, by the document."""
    kind, prompt = prompt_kind(request.prompt), request.prompt
    if kind == "backtranslate" and "Quokka" in prompt:
        return Reply(" ")
    if kind == "backtranslate" and "Wombat" in prompt:
        return Reply("What does the text below say about starters?")
    if kind == "curate" and "Numbat" in prompt:
        return Reply("Score: 10")
    if kind == "curate" and "Dingo" in prompt:
        return Reply("Score: 2")
    if kind == "rewrite" and "Bilby" in prompt:
        return Reply("A rewrite without its tags.")
    return paper_model(request)


def test_the_reasons_of_a_run_that_rejects_at_every_stage_are_registered(tmp_path):
    words = ["Quokka", "Wombat", "Numbat", "Dingo", "Bilby", "Koala"]
    texts = [f"{w} says: keep a sourdough starter fed with flour and water every day." for w in words]
    lines = [json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(texts)]
    lines += [json.dumps({"id": "dup", "text": texts[0]}), json.dumps({"id": "none"})]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with TGITestServer(misbehaving) as server:
        assert main(["generate", str(corpus), "--out", str(out), "--endpoint", server.url, "--no-progress"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    written = {(stage, r) for stage, s in stats.items() if isinstance(s, dict) for r in s.get("rejected_by_reason", {})}
    assert written == {
        ("prepare", "duplicate_text"),
        ("prepare", "missing_text"),
        ("backtranslate", "reply_empty"),
        ("backtranslate", "instruction_meta_text"),
        ("curate", "score_out_of_range"),
        ("curate", "score_below_threshold"),
        ("rewrite", "rewrite_missing_tags"),
    }
    assert all(stage in REASONS[reason].stages for stage, reason in written)
