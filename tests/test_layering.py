"""The import graph, read from the source (ast, no imports run): dependencies point one way
(deris_core <- app.store <- app.services <- app.views / command lines), there is no import circle,
and no view reads another view's widgets (each view imports only the shell, the display helpers
and its own layout; only app/ui.py, the shell, links views)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEWS_SHARED = {"app.views.shell", "app.views.display", "app.views.on_screen", "app.views.canvas", "app.views.records"}  # helpers every view may use; canvas: a shared widget
OWN_LAYOUT = {"app.views.annotate": {"app.views.annotate_layout"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = [ROOT / "launch.py", *(ROOT / "app").rglob("*.py"), *(ROOT / "deris_core").rglob("*.py")]
    return {_module_name(p): p for p in files}


def imports_of(name: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """Every module of ``known`` that ``source`` (module ``name``) imports, at any depth of its code."""
    out: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: imports_of(m, p.read_text(encoding="utf-8"), known, p.name == "__init__.py") for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def view_violations(name: str, source: str, known: set[str]) -> list[str]:
    """Why view module ``name`` reaches into another view (empty: it does not)."""
    allowed = VIEWS_SHARED | OWN_LAYOUT.get(name, set())
    return [f"{name} imports {t}" for t in sorted(imports_of(name, source, known))
            if t.startswith("app.views.") and t not in allowed]


def test_the_core_imports_nothing_of_the_app_and_layers_point_one_way() -> None:
    graph = _graph()
    wrong = []
    for m, deps in graph.items():
        for d in deps:
            if m.startswith("deris_core") and not d.startswith("deris_core"):
                wrong.append(f"{m} -> {d}")
            if m.startswith("app.store") and d.startswith(("app.services", "app.views", "app.ui", "app.curate")):
                wrong.append(f"{m} -> {d}")
            if m.startswith("app.services") and d.startswith(("app.views", "app.ui")):
                wrong.append(f"{m} -> {d}")
    assert wrong == []
    for m, p in _modules().items():  # the store and the services know nothing of Gradio
        if m.startswith(("app.store", "app.services", "deris_core")):
            tree = ast.parse(p.read_text(encoding="utf-8"))
            names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
            assert "gradio" not in names, m


def test_the_import_graph_has_no_circle() -> None:
    assert _cycles(_graph()) == []


def test_no_view_reads_another_views_widgets() -> None:
    mods = _modules()
    known = set(mods)
    found = []
    for m, p in mods.items():
        if m.startswith("app.views.") and m not in VIEWS_SHARED:
            found += view_violations(m, p.read_text(encoding="utf-8"), known)
    assert found == []


def test_the_checks_catch_what_they_guard_against() -> None:
    known = set(_modules())
    bad_view = "from .dataset_tab import DatasetUI\n\ndef wire(svc, ui, shell, other: DatasetUI):\n    other.f_status\n"
    assert view_violations("app.views.annotate", bad_view, known) == ["app.views.annotate imports app.views.dataset_tab"]
    assert "app.bench.latency" in imports_of("deris_core.tools.bench", "def f():\n    from app.bench.latency import measure\n", known)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# --- one door per table, one owner per state ------------------------------------------------------

SQL = re.compile(r"\b(SELECT\s+\S|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|ALTER\s+TABLE|"
                 r"DROP\s+TABLE|PRAGMA\s+\w)")
SQL_ALLOWED: set[str] = set()  # no module outside app/store spells SQL
STATUS_MODULE = "app.store.status"


def _strings(tree: ast.AST) -> list[ast.Constant]:
    """Every string constant of a module, f-strings' literal parts included."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def sql_violations(name: str, source: str) -> list[str]:
    """Where module ``name`` (outside ``app.store``) spells SQL in a string literal."""
    if name.startswith("app.store") or name in SQL_ALLOWED:
        return []
    tree = ast.parse(source)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [f"{name}:{c.lineno}: {c.value[:60]!r}" for c in _strings(tree) if id(c) not in docs and SQL.search(c.value)]


def status_violations(name: str, source: str) -> list[str]:
    """Where module ``name`` spells a ref status as a bare string (a dict key or ``.get``'s key, words of
    a report, are not statuses)."""
    from app.store.status import STATUSES

    if name == STATUS_MODULE:
        return []
    tree = ast.parse(source)
    keys = {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if k is not None}
    keys |= {id(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "get" and n.args}
    return [f"{name}:{c.lineno}: {c.value!r}" for c in _strings(tree) if c.value in STATUSES and id(c) not in keys]


VIEWS_NEVER_IMPORT = ("app.store", "app.dataset", "app.curate", "app.bench")  # views reach these through a service


def store_import_violations(name: str, source: str, known: set[str]) -> list[str]:
    """A view importing the store, the dataset tools, the batch tools or the benches (each through a
    service), or reaching the store through the services (``svc.store``); or the store importing
    the model's cache folder."""
    deps = imports_of(name, source, known, name.endswith("__init__"))
    if name.startswith("app.views"):
        reached = [f"{name}:{n.lineno} uses svc.store" for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)
                   and n.attr == "store" and isinstance(n.value, ast.Name) and n.value.id == "svc"]
        return reached + [f"{name} imports {d}" for d in sorted(deps)
                          if any(d == p or d.startswith(p + ".") for p in VIEWS_NEVER_IMPORT)]
    if name.startswith("app.store"):
        return [f"{name} imports {d}" for d in sorted(deps) if d == "deris_core.weight_cache"]
    return []


def _app_sources() -> dict[str, str]:
    return {m: p.read_text(encoding="utf-8") for m, p in _modules().items() if m.startswith("app") or m == "launch"}


def test_no_sql_outside_the_store() -> None:
    assert [v for m, src in _app_sources().items() for v in sql_violations(m, src)] == []


def test_views_never_import_the_store_and_the_store_names_no_model_cache() -> None:
    known = set(_modules())
    assert [v for m, src in _app_sources().items() for v in store_import_violations(m, src, known)] == []


def test_status_literals_live_in_the_status_module() -> None:
    assert [v for m, src in _app_sources().items() for v in status_violations(m, src)] == []


def test_the_door_checks_catch_what_they_guard_against() -> None:
    known = set(_modules())
    assert sql_violations("app.curate.x", 'def f(s):\n    return s.read("SELECT id FROM refs")\n') == \
        ["app.curate.x:2: 'SELECT id FROM refs'"]
    assert sql_violations("app.views.x", 'def f(db, t):\n    db.execute(f"DELETE FROM {t} WHERE id = ?")\n') != []
    assert sql_violations("app.views.x", 'def f():\n    """Select the refs, then update them."""\n    return "Select one"\n') == []
    assert sql_violations("app.store.refs", 'Q = "SELECT 1"\n') == []
    assert status_violations("app.services.x", 'def f(r):\n    return r.status == "reviewed"\n') == \
        ["app.services.x:2: 'reviewed'"]
    assert status_violations("app.views.x", 'def f(p):\n    return {"done": 1}, p.get("rejected", 0)\n') == []
    assert store_import_violations("app.views.x", "from ..store import StoreError\n", known) == ["app.views.x imports app.store"]
    assert store_import_violations("app.views.x", "from ..store.review import REASONS\n", known) == \
        ["app.views.x imports app.store.review"]
    assert store_import_violations("app.views.x", "def f(svc):\n    return svc.store.stats()\n", known) == \
        ["app.views.x:2 uses svc.store"]
    assert store_import_violations("app.views.x", "from ..dataset.export import export_coco\n", known) == \
        ["app.views.x imports app.dataset.export"]
    assert store_import_violations("app.views.x", "def f():\n    import app.curate.preannotate\n", known) == \
        ["app.views.x imports app.curate.preannotate"]
    assert store_import_violations("app.views.x", "from app.bench import latency\n", known) == \
        ["app.views.x imports app.bench.latency"]
    assert store_import_violations("app.store.x", "def f():\n    from deris_core.weight_cache import cache_dir\n", known) == \
        ["app.store.x imports deris_core.weight_cache"]


# --- folders that name their concerns ---------------------------------------------------------------

APP_TOP = {"app", "app.auth", "app.errors", "app.settings", "app.ui", "app.zerogpu"}  # everything else lives in a package
APP_PACKAGES = {"bench", "curate", "dataset", "refine", "services", "store", "viewkit", "views"}
CORE_TOOLS = "deris_core.tools"


def _is_command_line(source: str) -> bool:
    """A module that parses a command line of its own (argparse and a ``main``)."""
    return "import argparse" in source and "\ndef main(" in source


def folder_violations(mods: dict[str, Path], graph: dict[str, set[str]]) -> list[str]:
    """Where the folders stop naming their concerns: a loose module at app/'s top, a command-line tool
    in deris_core's library (argparse outside ``deris_core.tools`` and the ``__main__`` of a package),
    the library importing its tools, data/ importing train/, the view helpers reaching up the layers."""
    wrong = []
    for m, p in mods.items():
        parts = m.split(".")
        if parts[0] == "app" and len(parts) == 2 and p.name != "__init__.py" and m not in APP_TOP:
            wrong.append(f"{m}: a loose module at app/'s top")
        if parts[0] == "app" and len(parts) >= 2 and p.name == "__init__.py" and len(parts) == 2 \
                and parts[1] not in APP_PACKAGES:
            wrong.append(f"{m}: a package app/ does not list")
        if m.startswith("deris_core") and not m.startswith(CORE_TOOLS) and not m.endswith("__main__") \
                and _is_command_line(p.read_text(encoding="utf-8")):
            wrong.append(f"{m}: a command-line tool in the library (move it to {CORE_TOOLS})")
    for m, deps in graph.items():
        for d in deps:
            if m.startswith("deris_core") and not m.startswith(CORE_TOOLS) and d.startswith(CORE_TOOLS):
                wrong.append(f"{m} -> {d}: the library imports a tool")
            if m.startswith("deris_core.data") and d.startswith("deris_core.train"):
                wrong.append(f"{m} -> {d}: data imports train")
            if m.startswith("app.viewkit") and d.startswith(("app.store", "app.services", "app.views", "app.ui")):
                wrong.append(f"{m} -> {d}: a view helper reaches up the layers")
    return wrong


def test_folders_name_their_concerns() -> None:
    assert folder_violations(_modules(), _graph()) == []


def test_the_folder_checks_catch_what_they_guard_against(tmp_path: Path) -> None:
    loose = tmp_path / "export.py"
    loose.write_text("")
    tool = tmp_path / "predict.py"
    tool.write_text("import argparse\n\n\ndef main():\n    pass\n")
    mods = {"app.export": loose, "deris_core.predict": tool}
    graph = {"deris_core.data.training": {"deris_core.train.nsc"}, "app.viewkit.session": {"app.store"},
             "deris_core.predictor": {"deris_core.tools.bench"}}
    assert folder_violations(mods, graph) == [
        "app.export: a loose module at app/'s top",
        "deris_core.predict: a command-line tool in the library (move it to deris_core.tools)",
        "deris_core.data.training -> deris_core.train.nsc: data imports train",
        "app.viewkit.session -> app.store: a view helper reaches up the layers",
        "deris_core.predictor -> deris_core.tools.bench: the library imports a tool"]


# --- the greps, as tests -------------------------------------------------------------------

SQL_WORDS = re.compile(r"SELECT|INSERT|UPDATE|DELETE")  # the issue's `rg "SELECT|INSERT|UPDATE|DELETE" app --glob '!app/store/**'`


def sql_word_hits(files: dict[str, str]) -> list[str]:
    """``path:line`` of every line that spells an upper-case SQL verb, as the issue's ``rg`` finds them
    (any text, comments and scripts included)."""
    return [f"{path}:{i}" for path, text in files.items() for i, line in enumerate(text.splitlines(), 1)
            if SQL_WORDS.search(line)]


def _app_files_outside_the_store() -> dict[str, str]:
    store = ROOT / "app" / "store"
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8", errors="replace")
            for p in sorted((ROOT / "app").rglob("*")) if p.is_file() and store not in p.parents
            and "__pycache__" not in p.parts}


def test_the_grep_for_sql_verbs_outside_the_store_finds_nothing() -> None:
    assert sql_word_hits(_app_files_outside_the_store()) == []


PREDICTION_TABLES = re.compile(r"\b(FROM|JOIN|INTO|UPDATE|TABLE|EXISTS)\s+(predictions|qa)\b", re.IGNORECASE)
PREDICTION_OWNERS = {"app.store.predictions", "app.store.schema", "app.store.pg"}  # the door, and what creates or copies tables


def prediction_table_violations(name: str, source: str) -> list[str]:
    """Where a store module other than :mod:`app.store.predictions` names the ``predictions`` or ``qa``
    table in SQL text (a table name alone, e.g. a list of tables to copy, is not SQL)."""
    if not name.startswith("app.store") or name in PREDICTION_OWNERS:
        return []
    tree = ast.parse(source)
    return [f"{name}:{c.lineno}: {c.value[:60]!r}" for c in _strings(tree) if PREDICTION_TABLES.search(c.value)]


def test_only_the_predictions_module_spells_the_predictions_and_qa_sql() -> None:
    assert [v for m, src in _app_sources().items() for v in prediction_table_violations(m, src)] == []


def test_the_grep_checks_catch_what_they_guard_against() -> None:
    assert sql_word_hits({"app/ui.py": "x = 1\nconst t = ['INPUT', 'SELECT'].includes(tag);\n"}) == ["app/ui.py:2"]
    assert sql_word_hits({"app/ui.py": "el.matches('input, textarea, select')\n"}) == []
    assert prediction_table_violations("app.store.review", 'J = " LEFT JOIN qa q ON q.ref_id = r.id"\n') == \
        ["app.store.review:1: ' LEFT JOIN qa q ON q.ref_id = r.id'"]
    assert prediction_table_violations("app.store.models", 'def f(t):\n    return f"SELECT COUNT(*) FROM predictions"\n') != []
    assert prediction_table_violations("app.store.predictions", 'Q = "SELECT 1 FROM predictions"\n') == []
    assert prediction_table_violations("app.store.pg", 'T = ("predictions", "qa")\n') == []


MARKUP = re.compile(r"<(div|span|b|i|p|br|code|table|a)\b|</\w|\*\*")  # HTML tags, markdown bold


def markup_violations(name: str, source: str) -> list[str]:
    """Where a service (``app.services``) spells HTML or markdown in a string (docstrings aside):
    services return data, and the views render it."""
    if not name.startswith("app.services"):
        return []
    tree = ast.parse(source)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [f"{name}:{c.lineno}: {c.value[:60]!r}" for c in _strings(tree) if id(c) not in docs and MARKUP.search(c.value)]


def test_services_return_data_not_markup() -> None:
    assert [v for m, src in _app_sources().items() for v in markup_violations(m, src)] == []


def test_the_markup_check_catches_what_it_guards_against() -> None:
    assert markup_violations("app.services.x", 'def f(who):\n    return f"**Rejected by {who}**"\n') != []
    assert markup_violations("app.services.x", 'def f(n):\n    return f"<div class=\'x\'>{n}</div>"\n') != []
    assert markup_violations("app.services.x", 'def f(n):\n    return "<b>" + n\n') == ["app.services.x:2: \'<b>\'"]
    assert markup_violations("app.services.x", 'def f(**kw):\n    """A **bold** word in a docstring."""\n    return "a < b"\n') == []
    assert markup_violations("app.views.x", 'T = "<div>**x**</div>"\n') == []


# --- subcommands register themselves --------------------------------------------------------------

SUBCOMMAND_DESTS = {"cmd", "command", "subcommand"}


def subcommand_chain_violations(name: str, source: str) -> list[str]:
    """Where a command line (a module importing argparse) picks its subcommand by comparing
    ``args.cmd`` (or ``.command``) with a name: the subcommands belong in a table of commands
    (``COMMANDS``), each registering its options and its run."""
    if "argparse" not in source:
        return []
    out = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in n.ops):
            for side in (n.left, *n.comparators):
                if isinstance(side, ast.Attribute) and side.attr in SUBCOMMAND_DESTS and isinstance(side.value, ast.Name):
                    out.append(f"{name}:{n.lineno}: {side.value.id}.{side.attr} compared with a subcommand name")
                    break
    return out


def test_subcommands_register_themselves() -> None:
    sources = {m: p.read_text(encoding="utf-8") for m, p in _modules().items()}
    assert [v for m, src in sources.items() for v in subcommand_chain_violations(m, src)] == []


def test_the_subcommand_check_catches_what_it_guards_against() -> None:
    chain = ("import argparse\n\ndef main(argv=None):\n    args = build().parse_args(argv)\n"
             "    if args.cmd == 'store':\n        return 1\n    elif args.cmd == 'team':\n        return 2\n")
    assert subcommand_chain_violations("app.bench.cli", chain) == [
        "app.bench.cli:5: args.cmd compared with a subcommand name", "app.bench.cli:7: args.cmd compared with a subcommand name"]
    assert subcommand_chain_violations("x", "import argparse\n\ndef f(a):\n    return 'push' == a.command\n") != []
    table = "import argparse\n\ndef main(argv=None):\n    args = build().parse_args(argv)\n    return args.command.run(args)\n"
    assert subcommand_chain_violations("app.bench.cli", table) == []
    assert subcommand_chain_violations("app.views.display", "def f(e):\n    return e.action == 'review'\n") == []


# --- one name for a person per role (docs/doors-and-states.md) --------------------------------------

ROLE_NAMES = {"actor", "author", "editor"}
OTHER_NAMES = {"annotator", "user"}  # column names of the store, never a record's field


def role_violations(classes: list[type]) -> list[str]:
    """Fields of the store's records and filters that name a person otherwise than actor, author or editor."""
    import dataclasses

    return [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c) if f.name in OTHER_NAMES]


def test_records_name_a_person_by_role() -> None:
    import dataclasses

    from app.store import Event, RefFilter, RefRecord, RefRow

    classes = [RefRecord, RefRow, RefFilter, Event]
    assert role_violations(classes) == []
    assert {f.name for c in classes for f in dataclasses.fields(c)} >= ROLE_NAMES
    bad = dataclasses.make_dataclass("Old", [("annotator", str), ("user", str)])
    assert role_violations([bad]) == ["Old.annotator", "Old.user"]
