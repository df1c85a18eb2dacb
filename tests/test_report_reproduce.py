"""`inquire reproduce`: every published row has a command the real CLI accepts, and --check
sets results folders (real `evaluate` output and hand-made summaries) beside the numbers."""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from inquire.cli import app
from inquire.data.qrels import Qrels
from inquire.embed.models import resolve
from inquire.eval import evaluate
from inquire.eval.rerank import BASELINES
from inquire.report.leaderboard import load_leaderboard
from inquire.report.reproduce import check_results, recipes
from inquire.rerank.registry import parse_reranker_id
from inquire.rerank.vlm import parse_vlm_id
from inquire.run import Run

runner = CliRunner()
SUPER = ("Appearance", "Behavior", "Context", "Species")


def _invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_every_published_row_is_listed_with_its_numbers() -> None:
    res = _invoke("reproduce")
    assert res.exit_code == 0, res.output
    for task in ("fullrank", "rerank"):
        board = load_leaderboard(task)
        assert len([r for r in recipes(task)]) == len(board.table) > 15
        for _, row in board.table.iterrows():
            assert f"  {row['method']}  [{row['kind']}]" in res.output
            assert f"overall {row['overall']:.1f}" in res.output
    # The released LLaVA-1.5-13B cache: import-cache, then eval rerank --reranker cached:NAME
    assert "inquire rerank import-cache $INQUIRE_REPO/cache/llava-hf--llava-1.5-13b-hf" in (
        res.output
    )
    assert "inquire eval rerank --reranker cached:llava-1.5-13b --split test" in res.output


def _click_command(path: list[str]) -> Any:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        commands = getattr(cmd, "commands", None)
        assert commands is not None, f"{path}: not a command group"
        assert name in commands, f"no command {' '.join(path)}"
        cmd = commands[name]
    return cmd


def _check_command_line(line: str) -> None:
    """Every option of ``line`` exists on the real command, and ids parse."""
    words = shlex.split(line)
    assert words[0] == "inquire"
    path, rest = [], words[1:]
    while rest and not rest[0].startswith("-") and len(path) < 2:
        cmd = _click_command([*path, rest[0]])
        path.append(rest.pop(0))
        if getattr(cmd, "commands", None) is None:
            break
    cmd = _click_command(path)
    known = {o for p in cmd.params for o in [*p.opts, *p.secondary_opts]}
    opts = {w for w in rest if w.startswith("--")}
    assert opts <= known, (line, opts - known)
    values = dict(itertools.pairwise(rest))
    if "--model" in values:
        resolve(values["--model"])
    for key in ("--reranker", "--rerank"):
        if key in values and values[key] not in BASELINES:
            kind, spec = parse_reranker_id(values[key])
            if kind.name == "vlm":
                parse_vlm_id(spec)
            if kind.name == "clip":
                resolve(spec)


def test_every_command_is_accepted_by_the_real_cli() -> None:
    res = _invoke("reproduce", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == len(recipes())
    n_commands = 0
    for row in rows:
        for line in [*row["commands"], *row["without_gpu"]]:
            _check_command_line(line)
            n_commands += 1
        if not row["commands"]:
            assert row["note"], row["method"]  # a row without a command says why
    assert n_commands > 40


def _summary_dir(tmp: Path, name: str, config: dict[str, Any], k: int, ap: dict[str, float]):
    """A results folder by hand: summary.json with overall and per-supercategory AP."""
    out = tmp / name
    out.mkdir()
    summary = {
        "name": name,
        "k": k,
        "metrics": ["ap"],
        "n_queries": 200,
        "overall": {"n_queries": 200, "ap": ap["overall"]},
        "by": {"supercategory": {c: {"n_queries": 50, "ap": ap[c]} for c in SUPER}},
        "config": config,
    }
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return out


def _published(task: str, method: str) -> dict[str, float]:
    t = load_leaderboard(task).table.set_index("method")
    return {c: float(t.loc[method, c]) for c in ("overall", *SUPER)}


def test_check_within_and_outside_the_published_rounding(tmp_path: Path) -> None:
    pub = _published("fullrank", "CLIP ViT-H/14-378 (DFN)")
    cfg = {"task": "fullrank", "model_id": "vit-h-14-378", "split": "test"}
    # 0.04 above every published value: within; 0.06 above overall: not within.
    near = {c: (v + 0.04) / 100 for c, v in pub.items()}
    far = near | {"overall": (pub["overall"] + 0.06) / 100}
    a = _summary_dir(tmp_path, "near", cfg, 50, near)
    # the full model id matches its alias's row too
    b = _summary_dir(
        tmp_path, "far", cfg | {"model_id": "open_clip:ViT-H-14-378-quickgelu/dfn5b"}, 50, far
    )
    res = _invoke("reproduce", "--check", str(a), str(b), "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert [g["method"] for g in got] == ["CLIP ViT-H/14-378 (DFN)"] * 2
    assert got[0]["within_rounding"] is True and got[1]["within_rounding"] is False
    assert got[0]["diff"]["overall"] == pytest.approx(0.04)
    assert got[1]["diff"]["overall"] == pytest.approx(0.06)
    assert got[0]["published"]["overall"] == 35.6
    text = _invoke("reproduce", "--check", str(a))
    assert "within the published rounding" in text.output and "NOT" not in text.output
    assert _invoke("reproduce", "--check", str(a), str(b), "--strict").exit_code == 1
    assert _invoke("reproduce", "--check", str(a), "--strict").exit_code == 0


def test_check_rerank_cache_two_stage_and_k(tmp_path: Path) -> None:
    pub = _published("rerank", "LLaVA-1.5-13b")
    exact = {c: v / 100 for c, v in pub.items()}
    cached = _summary_dir(
        tmp_path, "cached", {"task": "rerank", "ranker": "cached:llava-1.5-13b"}, 100, exact
    )
    at50 = _summary_dir(
        tmp_path, "at50", {"task": "rerank", "ranker": "cached:llava-1.5-13b"}, 50, exact
    )
    gpt = _published("fullrank", "CLIP ViT-H/14-378 (DFN) top 100 -> GPT-4o")
    two = _summary_dir(
        tmp_path,
        "two",
        {
            "task": "fullrank-two-stage",
            "reranker": "api:gpt-4o",
            "first_stage_model": "vit-h-14-378",
            "from_k": 100,
        },
        50,
        {c: v / 100 for c, v in gpt.items()},
    )
    res = check_results([cached, at50, two])
    assert [r.method for r in res[:2]] == ["LLaVA-1.5-13b", "LLaVA-1.5-13b"]
    assert res[2].method == "CLIP ViT-H/14-378 (DFN) top 100 -> GPT-4o"
    assert res[0].within and res[2].within
    assert not res[1].within and "k = 50" in res[1].notes[0]  # the at50/ folder is not it


def test_check_random_rerank_uses_the_expected_ap(tmp_path: Path) -> None:
    cfg = {"task": "rerank", "ranker": "random", "expected_random_ap": 0.2304}
    ap = dict.fromkeys(("overall", *SUPER), 0.21)  # one seeded order
    (r,) = check_results([_summary_dir(tmp_path, "random", cfg, 100, ap)])
    assert r.method == "Random" and r.ours["overall"] == pytest.approx(23.04)
    assert r.diff["overall"] == pytest.approx(0.04) and r.within
    assert "seeded order scored 21.00" in r.notes[0]
    # The at50/ folder carries the same config but is not comparable: no substitution.
    (r50,) = check_results([_summary_dir(tmp_path, "random50", cfg, 50, ap)])
    assert r50.ours["overall"] == pytest.approx(21.0) and not r50.within
    # clip_score (the pools' given order) is the row of the model that retrieved them
    clip = {"task": "rerank", "ranker": "clip_score"}
    (c,) = check_results([_summary_dir(tmp_path, "clip", clip, 100, ap)])
    assert c.method == "CLIP ViT-H/14-378 (DFN)" and c.task == "rerank"


def test_check_a_real_evaluate_folder(tmp_path: Path) -> None:
    # A folder written by the library's own evaluate(): four queries, one per supercategory.
    queries = pd.DataFrame(
        {
            "query_id": [1, 2, 3, 4],
            "query_text": ["a", "b", "c", "d"],
            "supercategory": list(SUPER),
            "category": ["x"] * 4,
            "iconic_group": ["Birds"] * 4,
        }
    )
    qrels = Qrels({q: frozenset({q * 10}) for q in range(1, 5)})
    # query 1 finds its image at rank 1 (AP 1), query 2 at rank 2 (AP 1/2), others miss
    run = Run(
        {
            1: ([10, 99], [2.0, 1.0]),
            2: ([98, 20], [2.0, 1.0]),
            3: ([97], [1.0]),
            4: ([96], [1.0]),
        },
        name="bioclip",
    )
    cfg = {"task": "fullrank", "model_id": "bioclip", "split": "test"}
    folder = evaluate(run, qrels, queries, k=50, config=cfg).save(tmp_path / "bioclip")
    (r,) = check_results([folder])
    assert r.method == "BioCLIP" and r.k == 50
    assert r.ours["overall"] == pytest.approx(100 * 1.5 / 4)
    assert r.ours["Appearance"] == pytest.approx(100.0)
    assert r.diff["overall"] == pytest.approx(37.5 - 3.6)
    assert r.diff["Behavior"] == pytest.approx(50.0 - 0.5)
    assert not r.within
    # The same folder on the val split is named as not comparable.
    cfg_val = cfg | {"split": "val"}
    folder_val = evaluate(run, qrels, queries, k=50, config=cfg_val).save(tmp_path / "val")
    (v,) = check_results([folder_val])
    assert any("split 'val'" in n for n in v.notes)


def test_check_errors_are_one_line(tmp_path: Path) -> None:
    res = _invoke("reproduce", "--check", str(tmp_path))
    assert res.exit_code == 2 and "has no summary.json" in res.output
    good = _summary_dir(
        tmp_path,
        "g",
        {"task": "fullrank", "model_id": "x"},
        50,
        dict.fromkeys(("overall", *SUPER), 0.1),
    )
    res = _invoke("reproduce", "--check", str(good), "--method", "BioClip")
    assert res.exit_code == 2 and "Did you mean 'BioCLIP'" in res.output
    res = _invoke("reproduce", "--check", str(good))  # model 'x' matches no row
    assert res.exit_code == 0 and "no published row matches" in res.output
    res = _invoke("reproduce", "--check", str(good), "--method", "BioCLIP", "--json")
    assert json.loads(res.output)[0]["method"] == "BioCLIP"
    assert _invoke("reproduce", str(good)).exit_code == 2  # folders need --check
    assert _invoke("reproduce", "--task", "fullrnk").exit_code == 2
