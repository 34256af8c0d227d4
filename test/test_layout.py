"""The code's shape, checked: imports only go down the layers, and one family's facts live in its package.

Layers (docs/architecture.md): ``api`` and the small utilities at the bottom; ``families``, ``fastpath``,
``checkpoint`` and ``serving`` above them; ``engine`` and ``student`` above those; ``offline``, ``ros``, the
CLI, the benchmarks' ``bench`` and the demo on top; the console scripts' ``entry_points`` above all. A module
imports from its own layer or below.
"""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "groot_sage_ros"
LAYERS = {
    "api": 0,
    "launch_support": 3,
    "cpu_threads": 0,
    "errors": 0,
    "options": 0,
    "output_folder": 0,
    "owned_files": 0,
    "families": 1,
    "fastpath": 1,
    "checkpoint": 1,
    "serving": 1,
    "engine": 2,
    "student": 2,
    "offline": 3,
    "ros": 3,
    "cli": 3,
    "bench": 3,
    "demo": 3,
    "quantize_check": 3,
    "entry_points": 4,  # the console scripts: above everything they start
}
# Within layer 1, the generic pieces never ask a family: the family hands them what they need.
NEVER = {"checkpoint": {"families"}, "fastpath": {"families"}, "serving": {"families", "fastpath", "checkpoint"}}

# A family's facts: token ids, special tokens, chat templates, instruction rendering, checkpoint key and config
# names, transform sizes, statistics files. Each may appear only under the packages that own it: the Qwen
# facts both families share under families/n1_5/ or families/n1_7/, the rest under its own family.
FAMILY_FACTS = {
    ("n1_5",): re.compile(
        r"IMG_CONTEXT|<img>|helpful assistant|str\(\[|list_repr|experiment_cfg|eagle_model|eagle_linear|"
        r"GR00T_N1_5|gr00t_n1_5|backbone_cfg|action_head_cfg|\b224\b"
    ),
    ("n1_7",): re.compile(
        r"Gr00tN1d7|gr00t_n1_7|Cosmos|deepstack|\b230\b|statistics\.json|embodiment_id\.json|relative_action|formaliz"
    ),
    ("n1_5", "n1_7", "common"): re.compile(
        r"1516[4-7]\d|im_start|endoftext|vision_start|image_pad|lm_head|select_layer|new_embodiment"
    ),
}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.relative_to(PACKAGE).with_suffix("").parts


def imported_top_levels(path: Path, parts: tuple[str, ...]) -> set[str]:
    """The package's top-level parts (``engine``, ``families``, ...) that ``path`` imports."""
    tops = set()
    package = parts[:-1]  # the package a module (or an __init__) sits in
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = (*base, *(node.module.split(".") if node.module else ()))
            names = [alias.name for alias in node.names] if not target else [None]
            for name in names:
                full = target or (name,)
                if full:
                    tops.add(full[0])
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for name in [module] if module else [alias.name for alias in node.names]:
                if name and name.startswith("groot_sage_ros."):
                    tops.add(name.split(".")[1])
    return tops


def test_imports_only_go_down():
    wrong = []
    for path, parts in modules():
        top = parts[0] if len(parts) > 1 else parts[0]
        if top == "__init__":
            continue
        layer = LAYERS[top]
        for imported in imported_top_levels(path, parts) - {top}:
            if LAYERS[imported] > layer or imported in NEVER.get(top, ()):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert wrong == []


def test_family_facts_live_only_in_their_family():
    for owners, facts in FAMILY_FACTS.items():
        homes = [PACKAGE / "families" / owner for owner in owners]
        found = [
            f"{path.relative_to(PACKAGE)}:{k + 1}: {line.strip()}"
            for path, _ in modules()
            if not any(home in path.parents for home in homes)
            for k, line in enumerate(path.read_text().splitlines())
            if facts.search(line)
        ]
        assert found == [], owners
        for home in homes:  # the pattern does find them where they live
            assert any(facts.search(path.read_text()) for path in home.glob("*.py")), (owners, home)


def test_the_fast_path_uses_no_private_module_hooks():
    hooks = [
        str(path.relative_to(PACKAGE))
        for path, _ in modules()
        if "_compiled_call_impl" in path.read_text() or "register_buffer(f" in path.read_text()
    ]
    assert hooks == []


def test_the_benchmark_tools_use_the_public_api_only():
    """The tools that stay import the package's generic modules, never a family's internals or a private name."""
    wrong = []
    for path in sorted((PACKAGE.parent / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("groot_sage_ros"):
                if node.module.startswith("groot_sage_ros.families.") or any(
                    a.name.startswith("_") for a in node.names
                ):
                    wrong.append(f"{path.name}: from {node.module} import {', '.join(a.name for a in node.names)}")
    assert wrong == []
