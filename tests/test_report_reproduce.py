"""`inquire reproduce`: every published row has a command the real CLI accepts, and --check
sets results folders (real `evaluate` output and hand-made summaries) beside the numbers."""

from __future__ import annotations

import itertools
import json
import re
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
from inquire.report.recipes import recipes
from inquire.report.reproduce import check_results
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
    # The released LLaVA-1.5-13B cache: imported and evaluated by one command
    assert (
        "inquire eval rerank --reranker cached:llava-1.5-13b --import-cache "
        "$INQUIRE_REPO/cache/llava-hf--llava-1.5-13b-hf--cache.npy --trust-pickle --split test"
    ) in res.output
    assert "rerank import-cache" not in res.output
    # every row with a command says which folder to check
    gpt = "results/two-stage/clip-vit-h-14-378-dfn-top-100-gpt-4o/two_stage"
    assert f"check: inquire reproduce --check {gpt}\n" in res.output


def _leaf_command(words: list[str]) -> tuple[Any, list[str]]:
    """The real click command a command line names, and its arguments."""
    cmd: Any = typer.main.get_command(app)
    rest = list(words)
    while getattr(cmd, "commands", None) is not None:
        assert rest and rest[0] in cmd.commands, f"no command {words}"
        cmd = cmd.commands[rest.pop(0)]
    return cmd, rest


def _model_loads_offline(model_id: str) -> None:
    """``model_id`` (an alias or id a recipe names) resolves to a model that loads: a
    backend, and a pretrained entry open_clip knows, a hub id, or a WildCLIP checkpoint name
    of INQUIRE's; never a placeholder path."""
    import open_clip

    from inquire.embed.models import ALIAS_TABLE
    from inquire.embed.wildclip_backend import ID_FORMS

    assert "$" not in model_id, model_id
    backend, rest = resolve(model_id)
    if backend == "open_clip":
        if rest.startswith("hf-hub:"):
            assert re.fullmatch(r"hf-hub:[\w.-]+/[\w.-]+", rest), model_id
            return
        arch, _, tag = rest.partition("/")
        assert arch in open_clip.list_models(), model_id
        assert open_clip.get_pretrained_cfg(arch, tag), f"open_clip has no {arch}/{tag}"
    elif backend == "hf_clip":
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", rest), model_id
    elif backend == "wildclip":
        form = next(f for f, pattern, _ in ID_FORMS if pattern.match(rest))
        assert form == "NAME", model_id  # WildCLIP's own format, by the name INQUIRE used
        assert rest in {a.upstream_id for a in ALIAS_TABLE}, model_id
    else:
        raise AssertionError(f"{model_id}: backend {backend} cannot load a published model")


def _reranker_loads_offline(reranker: str, words: list[str]) -> None:
    from inquire.rerank.protocol import UPSTREAM_MODELS, upstream_model

    if reranker in BASELINES:
        return
    kind, spec = parse_reranker_id(reranker)
    if kind.name == "clip":
        _model_loads_offline(spec)
    elif kind.name == "vlm":
        parse_vlm_id(spec)
    elif kind.name == "api" and "--base-url" not in words:
        # a provider's model: the dated id INQUIRE used, never an alias the provider moves
        assert reranker in {m.reranker for m in UPSTREAM_MODELS}, reranker
    elif kind.name == "cached":
        # imported and evaluated at once, from a file whose name says the model
        file = words[words.index("--import-cache") + 1]
        assert upstream_model(Path(file).name).reranker


def _check_command_line(line: str) -> None:
    """``line`` parses with the real typer app (every option exists, values convert,
    nothing required is missing) and every model or reranker it names resolves offline."""
    words = shlex.split(line)
    assert words[0] == "inquire"
    cmd, args = _leaf_command(words[1:])
    cmd.make_context(words[1], list(args))  # raises on an unknown option or a bad value
    values = dict(itertools.pairwise(args))
    if "--model" in values:
        _model_loads_offline(values["--model"])
    for key in ("--reranker", "--rerank"):
        if key in values:
            _reranker_loads_offline(values[key], args)


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
        else:
            assert row["check"], row["method"]
    assert n_commands > 40


def test_the_checker_of_commands_can_fail() -> None:
    """The offline resolution refuses what the old recipes named."""
    bad = [
        "inquire eval rerank --reranker api:gpt-4o --split test --out x",  # undated alias
        "inquire eval fullrank --model open_clip:ViT-B-16@$WILDCLIP_T1 --embeddings e --out x",
        "inquire eval fullrank --model open_clip:ViT-B-16/no-such-tag --embeddings e --out x",
        "inquire eval rerank --reranker clip_score --split test --no-such-flag",
        "inquire eval rerank --reranker clip_score --concurrency many",
        "inquire eval rerank --split test",  # --reranker is required
    ]
    for line in bad:
        with pytest.raises((AssertionError, typer.TyperException)):
            _check_command_line(line)


def test_recipes_name_the_models_inquire_used() -> None:
    rows = {(r.task, r.method): r for r in recipes()}
    gpt_rows = [r for r in rows.values() if "GPT-4o" in r.method]
    assert len(gpt_rows) == 2
    for r in gpt_rows:
        assert r.reranker == "api:gpt-4o-2024-08-06"
        assert any(
            "--reranker api:gpt-4o-2024-08-06" in c or "--rerank api:gpt-4o-2024-08-06" in c
            for c in r.commands
        )
    for task in ("fullrank", "rerank"):
        dfn = rows[(task, "CLIP ViT-B/16 (DFN)")]
        assert "open_clip:ViT-B-16/dfn2b" in (dfn.model or dfn.reranker or "")
        assert dfn.note and "QuickGELU" in dfn.note
        for method, alias in (
            ("WildCLIP-t1", "wildclip-t1"),
            ("WildCLIP-t1t7-lwf", "wildclip-t1t7-lwf"),
        ):
            wild = rows[(task, method)]
            assert (wild.model or wild.reranker) in (alias, f"clip:{alias}")
            assert resolve(alias)[0] == "wildclip"


N_QUERIES = {"fullrank": 200, "rerank": 160}  # the published test split, per task


def _summary_dir(
    tmp: Path,
    name: str,
    config: dict[str, Any],
    k: int,
    ap: dict[str, float],
    n: int | None = None,
) -> Path:
    """A results folder by hand: summary.json with overall and per-supercategory AP, on the
    whole test split of its task unless ``n`` says otherwise."""
    out = tmp / name
    out.mkdir()
    config = {"split": "test", **config}
    n = n if n is not None else N_QUERIES["rerank" if config["task"] == "rerank" else "fullrank"]
    summary = {
        "name": name,
        "k": k,
        "metrics": ["ap"],
        "n_queries": n,
        "overall": {"n_queries": n, "ap": ap["overall"]},
        "by": {"supercategory": {c: {"n_queries": n // 4, "ap": ap[c]} for c in SUPER}},
        "config": config,
    }
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return out


def _published(task: str, method: str, shift: float = 0.0) -> dict[str, float]:
    """The published values of a row as fractions, each ``shift`` (x100 units) off."""
    t = load_leaderboard(task).table.set_index("method")
    return {c: (float(t.loc[method, c]) + shift) / 100 for c in ("overall", *SUPER)}


def test_check_within_and_outside_the_published_rounding(tmp_path: Path) -> None:
    cfg = {"task": "fullrank", "model_id": "vit-h-14-378", "split": "test"}
    # 0.04 above every published value: within; 0.06 above overall: not within.
    near = _published("fullrank", "CLIP ViT-H/14-378 (DFN)", 0.04)
    far = near | {"overall": near["overall"] + 0.0002}
    a = _summary_dir(tmp_path, "near", cfg, 50, near)
    # the full model id matches its alias's row too
    b = _summary_dir(
        tmp_path, "far", cfg | {"model_id": "open_clip:ViT-H-14-378-quickgelu/dfn5b"}, 50, far
    )
    res = _invoke("reproduce", "--check", str(a), str(b), "--json")
    assert res.exit_code == 1, res.output  # one folder does not reproduce its row
    got = json.loads(res.output)
    assert [g["method"] for g in got] == ["CLIP ViT-H/14-378 (DFN)"] * 2
    assert [g["status"] for g in got] == ["reproduces", "differs"]
    assert got[0]["within_rounding"] is True and got[1]["within_rounding"] is False
    assert got[0]["diff"]["overall"] == pytest.approx(0.04)
    assert got[1]["diff"]["overall"] == pytest.approx(0.06)
    assert got[0]["published"]["overall"] == 35.6
    text = _invoke("reproduce", "--check", str(a))
    assert text.exit_code == 0, text.output
    assert "REPRODUCES" in text.output and "1 of 1 folders reproduce" in text.output
    text = _invoke("reproduce", "--check", str(a), str(b))
    assert text.exit_code == 1 and "DIFFERS" in text.output and "1 of 2 folders" in text.output
    report = _invoke("reproduce", "--check", str(a), str(b), "--report-only")
    assert report.exit_code == 0 and "DIFFERS" in report.output


def test_a_subset_of_the_split_is_not_a_reproduction(tmp_path: Path) -> None:
    """Values equal to the published ones on 4 of the 200 queries: the count is named."""
    cfg = {"task": "fullrank", "model_id": "vit-h-14-378"}
    exact = _published("fullrank", "CLIP ViT-H/14-378 (DFN)")
    sub = _summary_dir(tmp_path, "subset", cfg, 50, exact, n=4)
    (r,) = check_results([sub])
    assert r.method == "CLIP ViT-H/14-378 (DFN)" and r.status == "not comparable"
    assert not r.within and r.diff["overall"] == pytest.approx(0.0)
    assert any("4 of the 200 queries" in n and "subset" in n for n in r.notes), r.notes
    # more queries than the split has is not it either; other split named as the split
    more = _summary_dir(tmp_path, "more", cfg, 50, exact, n=250)
    val = _summary_dir(tmp_path, "val", cfg | {"split": "val"}, 50, exact, n=200)
    nosplit = _summary_dir(tmp_path, "local", cfg | {"split": None}, 50, exact)
    rm, rv, rl = check_results([more, val, nosplit])
    assert rm.status == "not comparable" and any("250 of the 200" in n for n in rm.notes)
    assert rv.status == "not comparable" and any("split 'val'" in n for n in rv.notes)
    # a folder made from local files (no split recorded) is judged by its query count
    assert rl.status == "reproduces" and any("does not record its split" in n for n in rl.notes)
    res = _invoke("reproduce", "--check", str(sub))
    assert res.exit_code == 1 and "NOT COMPARABLE" in res.output and "4 of the 200" in res.output


def test_check_rerank_cache_two_stage_and_k(tmp_path: Path) -> None:
    exact = _published("rerank", "LLaVA-1.5-13b")
    # the run name carries the protocol; the config names model and protocol apart
    cfg = {
        "task": "rerank",
        "ranker": "cached:llava-1.5-13b (inquire-2024)",
        "reranker": "cached:llava-1.5-13b",
        "protocol": "inquire-2024",
        "candidates_per_query": 100,
    }
    cached = _summary_dir(tmp_path, "cached", cfg, 100, exact)
    at50 = _summary_dir(tmp_path, "at50", cfg, 50, exact)
    # an old folder with only the run name: model and protocol read from it
    old = _summary_dir(
        tmp_path, "old", {"task": "rerank", "ranker": "cached:llava-1.5-13b (inquire-2024)"}, 100,
        exact,
    )  # fmt: skip
    small = _summary_dir(tmp_path, "small", cfg | {"candidates_per_query": 20}, 100, exact)
    gpt = _published("fullrank", "CLIP ViT-H/14-378 (DFN) top 100 -> GPT-4o")
    two_cfg = {
        "task": "fullrank-two-stage",
        "reranker": "api:gpt-4o-2024-08-06",
        "protocol": "inquire-2024",
        "first_stage_model": "vit-h-14-378",
        "from_k": 100,
    }
    two = _summary_dir(tmp_path, "two", two_cfg, 50, gpt)
    two50 = _summary_dir(tmp_path, "two50", two_cfg | {"from_k": 50}, 50, gpt)
    other_first = _summary_dir(tmp_path, "first", two_cfg | {"first_stage_model": "rn50"}, 50, gpt)
    failed = _summary_dir(tmp_path, "failed", two_cfg | {"failures": 3}, 50, gpt)
    res = check_results([cached, at50, old, small, two, two50, other_first, failed])
    assert [r.method for r in res[:4]] == ["LLaVA-1.5-13b"] * 4
    assert res[4].method == "CLIP ViT-H/14-378 (DFN) top 100 -> GPT-4o"
    assert [r.status for r in res] == [
        "reproduces",
        "not comparable",  # the at50/ folder is not it
        "reproduces",
        "not comparable",
        "reproduces",
        "not comparable",
        "no published row",  # the row's reranker, but after another first stage
        "not comparable",
    ]
    assert "k = 50" in res[1].notes[0]
    assert any("20 candidates per query" in n for n in res[3].notes)
    assert any("top 50 of the first stage" in n for n in res[5].notes)
    assert any("could not be scored" in n for n in res[7].notes)


def test_other_protocols_and_other_builds_are_named_never_matched(tmp_path: Path) -> None:
    gpt = _published("rerank", "GPT-4o")

    def api(name: str, model: str, protocol: str) -> Path:
        # what `eval rerank --reranker api:MODEL --protocol PROTOCOL` records
        cfg = {
            "task": "rerank",
            "ranker": f"api:{model} ({protocol})",
            "reranker": f"api:{model}",
            "protocol": protocol,
            "candidates_per_query": 100,
        }
        return _summary_dir(tmp_path, name, cfg, 100, gpt)

    dated = api("dated", "gpt-4o-2024-08-06", "inquire-2024")
    summed = api("sum", "gpt-4o-2024-08-06", "inquire-sum")
    alias = api("alias", "gpt-4o", "inquire-2024")
    dfn = _published("fullrank", "CLIP ViT-B/16 (DFN)")
    quick = _summary_dir(
        tmp_path, "quick", {"task": "fullrank", "model_id": "vit-b-16-dfn"}, 50, dfn
    )
    gelu = _summary_dir(
        tmp_path, "gelu", {"task": "fullrank", "model_id": "open_clip:ViT-B-16/dfn2b"}, 50, dfn
    )
    unknown_cfg = {"task": "fullrank", "model_id": "toy:colour"}
    unknown = _summary_dir(tmp_path, "unknown", unknown_cfg, 50, dfn)
    res = check_results([dated, summed, alias, quick, gelu, unknown])
    assert [r.status for r in res] == [
        "reproduces",
        "other protocol",
        "no published row",
        "no published row",
        "reproduces",
        "no published row",
    ]
    assert res[0].method == "GPT-4o" and res[4].method == "CLIP ViT-B/16 (DFN)"
    assert res[1].method is None and res[1].protocol == "inquire-sum"
    assert "inquire-sum" in res[1].notes[0] and "'GPT-4o'" in res[1].notes[0]
    assert "another build" in res[2].notes[0] and "gpt-4o-2024-08-06" in res[2].notes[0]
    assert "another build" in res[3].notes[0] and "GELU" in res[3].notes[0]
    assert "no published row matches" in res[5].notes[0]
    text = _invoke("reproduce", "--check", str(summed))
    assert text.exit_code == 1 and "OTHER PROTOCOL" in text.output
    assert "made with api:gpt-4o-2024-08-06 (inquire-sum)" in text.output
    # --method cannot make another protocol's folder count either
    (forced,) = check_results([summed], method="GPT-4o")
    assert forced.status == "other protocol" and not forced.within


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
    assert r.method == "BioCLIP" and r.k == 50 and r.n_queries == 4
    assert r.ours["overall"] == pytest.approx(100 * 1.5 / 4)
    assert r.ours["Appearance"] == pytest.approx(100.0)
    assert r.diff["overall"] == pytest.approx(37.5 - 3.6)
    assert r.diff["Behavior"] == pytest.approx(50.0 - 0.5)
    assert not r.within and r.status == "not comparable"  # 4 of 200 queries
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
    assert res.exit_code == 1 and "no published row matches" in res.output
    assert "NO PUBLISHED ROW" in res.output
    res = _invoke("reproduce", "--check", str(good), "--method", "BioCLIP", "--json")
    assert json.loads(res.output)[0]["method"] == "BioCLIP"
    assert _invoke("reproduce", str(good)).exit_code == 2  # folders need --check
    assert _invoke("reproduce", "--task", "fullrnk").exit_code == 2
    # a two-stage output folder points at its two_stage/ result
    (tmp_path / "ts" / "two_stage").mkdir(parents=True)
    (tmp_path / "ts" / "two_stage" / "summary.json").write_text("{}", encoding="utf-8")
    res = _invoke("reproduce", "--check", str(tmp_path / "ts"))
    assert res.exit_code == 2 and "two_stage" in res.output


def _strict_json(text: str) -> Any:
    """JSON as the standard defines it: NaN and Infinity are refused."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in --json output")

    return json.loads(text, parse_constant=refuse)


def _vit_h(tmp: Path, name: str, edit: Any = None, n: int = 200) -> Path:
    """A whole-split CLIP ViT-H/14-378 folder with the published values, then ``edit``ed."""
    cfg = {"task": "fullrank", "model_id": "vit-h-14-378"}
    folder = _summary_dir(tmp, name, cfg, 50, _published("fullrank", "CLIP ViT-H/14-378 (DFN)"), n)
    if edit is not None:
        path = folder / "summary.json"
        summary = json.loads(path.read_text(encoding="utf-8"))
        edit(summary)
        path.write_text(json.dumps(summary), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda s: s.update(k="fifty"), "'k' is 'fifty'"),
        (lambda s: s.update(k=50.5), "'k' is 50.5"),  # never truncated to 50
        (lambda s: s.update(k=True), "'k' is True"),
        (lambda s: s.update(n_queries=199.7), "'n_queries' is 199.7"),
        (lambda s: s.update(overall=0.356), "'overall' is a float"),
        (lambda s: s.update(config=["fullrank"]), "'config' is a list"),
        (lambda s: s["overall"].update(ap="35.6"), "'overall' 'ap' is '35.6'"),
        (lambda s: s["overall"].update(ap=1e308), "'overall' 'ap' is 1e+308"),
        (lambda s: s["overall"].update(ap=35.6), "'overall' 'ap' is 35.6"),  # x100 by hand
        (lambda s: s["by"].update(supercategory=3), "'supercategory' is 3"),
        (lambda s: s["config"].update(failures="none"), "config 'failures' is 'none'"),
        (lambda s: s["config"].update(model_id=["vit-h-14-378"]), "config 'model_id' is"),
    ],
)
def test_hand_edited_summaries_are_named_not_crashed(tmp_path: Path, edit: Any, named: str):
    """A summary with a wrong type or value is reported in one line that names the key and
    the value, beside the folders that could be read; the exit status is 2 and --json stays
    JSON."""
    good = _vit_h(tmp_path, "good")
    bad = _vit_h(tmp_path, "bad", edit)
    res = _invoke("reproduce", "--check", str(good), str(bad), "--json")
    assert res.exit_code == 2, res.output
    got = _strict_json(res.stdout)
    assert [g["status"] for g in got] == ["reproduces", "unreadable"]
    assert named in got[1]["notes"][0] and str(bad) in got[1]["notes"][0]
    text = _invoke("reproduce", "--check", str(good), str(bad))
    assert text.exit_code == 2 and "Traceback" not in text.output
    assert "REPRODUCES" in text.output and f"{bad}: UNREADABLE: " in text.output
    assert "1 of 2 folders reproduce their published row; 1 could not be read" in text.output
    # --report-only does not hide a folder that could not be read
    assert _invoke("reproduce", "--check", str(good), str(bad), "--report-only").exit_code == 2


def test_nan_and_infinity_in_a_summary_are_refused(tmp_path: Path) -> None:
    """Python's json writes NaN / Infinity; they are not JSON and never reach --json."""
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "summary.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    (got,) = check_results([deep])
    assert got.status == "unreadable" and "is not a readable summary" in got.notes[0]
    for i, constant in enumerate(("NaN", "Infinity", "-Infinity")):
        folder = _vit_h(tmp_path, f"c{i}")
        path = folder / "summary.json"
        text = path.read_text(encoding="utf-8")
        ap = json.loads(text)["overall"]["ap"]
        path.write_text(text.replace(f'"ap": {ap}', f'"ap": {constant}', 1), encoding="utf-8")
        res = _invoke("reproduce", "--check", str(folder), "--json")
        assert res.exit_code == 2
        (got,) = _strict_json(res.stdout)
        assert (
            got["status"] == "unreadable" and f"{constant} is not a JSON value" in got["notes"][0]
        )


@pytest.mark.parametrize(
    ("shift", "status"),
    [
        (0.05, "reproduces"),  # exactly half a unit of the last published decimal
        (-0.05, "reproduces"),
        (0.0499999, "reproduces"),
        (-0.0499999, "reproduces"),
        (0.050004, "differs"),  # was rounded to 0.05 before the comparison and passed
        (-0.050004, "differs"),
        (0.0501, "differs"),
    ],
)
def test_the_rounding_edge_on_both_sides(tmp_path: Path, shift: float, status: str) -> None:
    pub = _published("fullrank", "CLIP ViT-H/14-378 (DFN)")
    folder = _vit_h(
        tmp_path, "edge", lambda s: s["overall"].update(ap=pub["overall"] + shift / 100)
    )
    (r,) = check_results([folder])
    assert r.status == status, (shift, r.diff, r.notes)
    assert r.diff["overall"] == pytest.approx(shift, abs=1e-6)
    if status == "differs":
        assert any("beyond the published rounding" in n and "overall" in n for n in r.notes)


def test_paths_that_are_not_results_folders(tmp_path: Path) -> None:
    good = _vit_h(tmp_path, "good")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    inner = _vit_h(tmp_path, "inner")
    (inner / "summary.json").unlink()
    (inner / "summary.json").symlink_to(inner / "summary.json")  # a loop inside the folder
    cases = {
        tmp_path / "missing": "does not exist",
        tmp_path / "file.txt": "is a file, not a results folder",
        loop: "symbolic link to nothing (or a link loop)",
        empty: "has no summary.json",
        inner: "cannot be read",
    }
    res = _invoke("reproduce", "--check", str(good), *map(str, cases), "--json")
    assert res.exit_code == 2, res.output
    got = _strict_json(res.stdout)
    assert got[0]["status"] == "reproduces"
    for entry, (path, why) in zip(got[1:], cases.items(), strict=True):
        assert entry["status"] == "unreadable" and why in entry["notes"][0], entry
        assert str(path) in entry["notes"][0]
    # the summary.json itself stands for its folder (`--check results/*/summary.json`)
    (r,) = check_results([good / "summary.json"])
    assert r.status == "reproduces" and r.folder == str(good)


def test_many_folders_exit_status(tmp_path: Path) -> None:
    pub = _published("fullrank", "CLIP ViT-H/14-378 (DFN)")
    good = _vit_h(tmp_path, "good")
    far = _vit_h(tmp_path, "far", lambda s: s["overall"].update(ap=pub["overall"] + 0.01))
    sub = _vit_h(tmp_path, "sub", n=159)
    assert _invoke("reproduce", "--check", str(good), str(good)).exit_code == 0
    res = _invoke("reproduce", "--check", str(good), str(far), str(sub))
    assert res.exit_code == 1 and "1 of 3 folders reproduce" in res.output
    assert res.output.count("DIFFERS") == 1 and res.output.count("NOT COMPARABLE") == 1
    assert "159 of the 200 queries" in res.output


def test_per_query_table_with_a_duplicate_query(tmp_path: Path) -> None:
    """199 distinct queries, one of them twice, counted as 200 by a hand-made summary."""
    folder = _vit_h(tmp_path, "dup")
    ids = [*range(1, 200), 7]
    (folder / "per_query.csv").write_text(
        "query_id,ap\n" + "".join(f"{q},0.5\n" for q in ids), encoding="utf-8"
    )
    (r,) = check_results([folder])
    assert r.status == "not comparable"
    assert any("more than once" in n and "'7'" in n and "199 distinct" in n for n in r.notes)
    (folder / "per_query.csv").write_text(
        "query_id,ap\n" + "".join(f"{q},0.5\n" for q in range(1, 160)), encoding="utf-8"
    )
    (r,) = check_results([folder])
    assert r.status == "not comparable"
    assert any("per_query.csv has 159 queries, the summary says 200" in n for n in r.notes)
    (folder / "per_query.csv").write_text(
        "query_id,ap\n" + "".join(f"{q},0.5\n" for q in range(1, 201)), encoding="utf-8"
    )
    assert check_results([folder])[0].status == "reproduces"


def test_method_cannot_make_another_rows_model_count(tmp_path: Path) -> None:
    """--method names the row to compare with; a folder made with another published row's
    model is not a reproduction of it, whatever its numbers."""
    bio_numbers = _published("fullrank", "BioCLIP")
    cfg = {"task": "fullrank", "model_id": "vit-h-14-378"}
    folder = _summary_dir(tmp_path, "vith", cfg, 50, bio_numbers)
    (r,) = check_results([folder], method="BioCLIP")
    assert r.method == "BioCLIP" and r.status == "not comparable"
    assert any("'CLIP ViT-H/14-378 (DFN)'" in n for n in r.notes)
    # a model no row names is compared, with a note
    mine = _summary_dir(tmp_path, "mine", cfg | {"model_id": "my-checkpoint"}, 50, bio_numbers)
    (m,) = check_results([mine], method="BioCLIP")
    assert m.status == "reproduces" and any("as --method says" in n for n in m.notes)


def test_a_published_zero_missing_from_the_summary_is_named(tmp_path: Path) -> None:
    """The Random Fullrank row publishes 0.0 everywhere: a missing value is still missing."""
    folder = _summary_dir(
        tmp_path,
        "random",
        {"task": "fullrank", "model_id": "random"},
        50,
        dict.fromkeys(("overall", *SUPER), 0.0),
    )
    path = folder / "summary.json"
    summary = json.loads(path.read_text(encoding="utf-8"))
    del summary["by"]["supercategory"]["Species"]
    path.write_text(json.dumps(summary), encoding="utf-8")
    (r,) = check_results([folder], method="Random")
    assert r.published["Species"] == 0.0 and r.ours["Species"] is None
    assert not r.within and any("no value for ['Species']" in n for n in r.notes)


def test_two_stage_folder_that_does_not_record_its_pool_or_first_stage(tmp_path: Path) -> None:
    gpt = _published("fullrank", "CLIP ViT-H/14-378 (DFN) top 100 -> GPT-4o")
    cfg = {"task": "fullrank-two-stage", "reranker": "api:gpt-4o-2024-08-06"}
    (r,) = check_results([_summary_dir(tmp_path, "bare", cfg, 50, gpt)])
    assert r.method == "CLIP ViT-H/14-378 (DFN) top 100 -> GPT-4o"
    assert r.status == "not comparable"
    assert any("does not record how many first-stage results" in n for n in r.notes)
    assert any("does not record its first stage; assumed 'vit-h-14-378'" in n for n in r.notes)
    (ok,) = check_results([_summary_dir(tmp_path, "k", cfg | {"from_k": 100}, 50, gpt)])
    assert ok.status == "reproduces" and any("first stage" in n for n in ok.notes)


def test_a_folder_that_cannot_be_read_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission denied (simulated: the tests may run as root, who reads everything)."""
    good, locked = _vit_h(tmp_path, "good"), _vit_h(tmp_path, "locked")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.parent == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    res = _invoke("reproduce", "--check", str(good), str(locked), "--json")
    assert res.exit_code == 2
    got = _strict_json(res.stdout)
    assert [g["status"] for g in got] == ["reproduces", "unreadable"]
    assert "cannot be read" in got[1]["notes"][0] and "Permission denied" in got[1]["notes"][0]


def test_an_evaluate_folder_names_no_model(tmp_path: Path) -> None:
    """`inquire evaluate --out` records the run file, not the model: --method names the row."""
    exact = _published("fullrank", "BioCLIP")
    folder = _summary_dir(tmp_path, "ev", {"task": "evaluate", "run_file": "r.trec"}, 50, exact)
    (r,) = check_results([folder])
    assert r.status == "no published row" and "does not record its model" in r.notes[0]
    (m,) = check_results([folder], method="BioCLIP")
    assert m.status == "reproduces"
    assert any("does not record its model; compared with 'BioCLIP'" in n for n in m.notes)


def test_an_approximate_index_is_not_the_published_search(tmp_path: Path) -> None:
    exact = _published("fullrank", "CLIP ViT-H/14-378 (DFN)")
    cfg = {"task": "fullrank", "model_id": "vit-h-14-378", "search": "exact"}
    ivf = cfg | {"search": "index:ivf (IVF1024,Flat)"}
    a = _summary_dir(tmp_path, "exact", cfg, 50, exact)
    b = _summary_dir(tmp_path, "ivf", ivf, 50, exact)
    ra, rb = check_results([a, b])
    assert ra.status == "reproduces"
    assert rb.status == "not comparable" and any("IVF1024" in n for n in rb.notes)
    # a two-stage result: its first stage is the folder above it
    gpt = _published("fullrank", "CLIP ViT-H/14-378 (DFN) top 100 -> GPT-4o")
    two_cfg = {
        "task": "fullrank-two-stage",
        "reranker": "api:gpt-4o-2024-08-06",
        "first_stage_model": "vit-h-14-378",
        "from_k": 100,
    }
    for first, status in ((a, "reproduces"), (b, "not comparable")):
        two = _summary_dir(first, "two_stage", two_cfg, 50, gpt)
        (r,) = check_results([two])
        assert r.status == status, r.notes


def test_imported_caches_and_served_api_models_find_their_row(tmp_path: Path) -> None:
    """The VILA rows say: serve VILA (any organisation prefix the server uses), or import
    INQUIRE's VILA cache under any cached: name; both find the VILA row."""
    vila13 = _published("rerank", "VILA1.5-13B")
    base = {"task": "rerank", "protocol": "inquire-2024", "candidates_per_query": 100}
    imported = base | {
        "reranker": "cached:my-vila",
        "imported_cache": {"file": "x.npy", "model": "Efficient-Large-Model/VILA1.5-13B"},
    }
    served = base | {"reranker": "api:Efficient-Large-Model/VILA1.5-13B"}
    unknown = base | {"reranker": "cached:my-vila"}  # imported from a file of unknown model
    gpt_cache = base | {
        "reranker": "cached:gpt",
        "imported_cache": {"file": "y.npy", "model": "openai-gpt4o20240806"},
    }
    folders = [
        _summary_dir(tmp_path, name, cfg, 100, vila13)
        for name, cfg in (("imp", imported), ("srv", served), ("unk", unknown))
    ]
    folders.append(_summary_dir(tmp_path, "gpt", gpt_cache, 100, _published("rerank", "GPT-4o")))
    res = check_results(folders)
    assert [r.method for r in res] == ["VILA1.5-13B", "VILA1.5-13B", None, "GPT-4o"]
    assert [r.status for r in res] == ["reproduces", "reproduces", "no published row", "reproduces"]
