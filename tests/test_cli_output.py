"""What the command line prints: whole ids, paths and URLs at 80 columns, readable summaries,
fast failures without a network, flags that read naturally."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import click
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from inquire._render import Col, print_records
from inquire.cli import app
from inquire.errors import DownloadError

NARROW = {"COLUMNS": "80"}


def _invoke(args: list[str], **kw: object) -> click.testing.Result:
    res = CliRunner().invoke(app, args, env=NARROW, **kw)  # type: ignore[arg-type]
    assert res.exit_code == 0, res.output
    return res


def _no_cut(output: str, strings: list[str]) -> None:
    assert "…" not in output, output
    missing = [s for s in strings if s not in output]
    assert not missing, f"cut or missing: {missing}\n{output}"


# ----------------------------------------------------------------- the renderer


def test_records_fit_as_a_table_when_they_can_and_vertically_when_not() -> None:
    cols = [Col("id", keep=True), Col("what"), Col("example", keep=True)]
    short = [("a", "first thing", "x:a"), ("b", "second", "x:b")]
    buf = io.StringIO()
    assert not print_records(Console(file=buf, width=80), cols, short, "t")
    assert "┃ id" in buf.getvalue()  # a table
    long = [("vlm:llava-1.6-mistral/...", "a " * 40, "vlm:" + "x" * 70)]
    buf = io.StringIO()
    assert print_records(Console(file=buf, width=80), cols, long, "t")
    _no_cut(buf.getvalue(), ["vlm:llava-1.6-mistral/...", "vlm:" + "x" * 70])
    # A keep value wider than the terminal is still written whole on one line.
    assert any(line.strip() == "example: vlm:" + "x" * 70 for line in buf.getvalue().splitlines())
    with pytest.raises(ValueError, match="2 values for 3 columns"):
        print_records(Console(file=io.StringIO()), cols, [("a", "b")])


def test_extra_columns_and_long_strings_switch_layout_without_cutting() -> None:
    cols = [Col("alias", keep=True), Col("model id", keep=True), Col("upstream", keep=True)]
    rows = [
        (f"alias-{i}", f"open_clip:Model-{i}-quickgelu/tag", f"hf-hub:org/name-{i}" * 2)
        for i in range(3)
    ]
    for width in (40, 80, 120, 200):
        buf = io.StringIO()
        print_records(Console(file=buf, width=width), cols, rows)
        _no_cut(buf.getvalue(), [v for row in rows for v in row])


# ----------------------------------------------------------------- listings at 80 columns


def test_models_lists_every_alias_and_model_id_whole_at_80_columns() -> None:
    from inquire.embed.models import ALIAS_TABLE, BACKENDS

    out = _invoke(["models"]).output
    _no_cut(out, [a.name for a in ALIAS_TABLE] + [a.model_id for a in ALIAS_TABLE])
    _no_cut(out, list(BACKENDS))


def test_rerank_list_shows_baselines_and_whole_ids_at_80_columns() -> None:
    from inquire.cli.eval_rerank import reranker_rows

    out = _invoke(["rerank", "list"]).output
    rows = reranker_rows()
    assert {"clip_score", "random"} <= {r[0] for r in rows}
    _no_cut(out, [r[0] for r in rows] + [r[2] for r in rows])


def test_download_list_shows_whole_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from inquire.data.download import source_url
    from inquire.data.registry import ARTIFACTS, GROUPS

    out = _invoke(["download", "--list"]).output
    _no_cut(out, [source_url(a) for a in ARTIFACTS.values()] + list(ARTIFACTS) + list(GROUPS))
    monkeypatch.setenv("INQUIRE_BASE_URL", "http://mirror.example:8080/inquire")
    out = _invoke(["download", "--list"]).output
    assert "http://mirror.example:8080/inquire/raw.githubusercontent.com/" in out


# ----------------------------------------------------------------- reranker names and flags


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("clip_scor", "'clip_score'"), ("randm", "'random'"), ("vllm:x", "'vlm'"), ("vlm", "'vlm:'")],
)
def test_unknown_reranker_names_get_suggestions_before_any_data_is_read(
    name: str, suggestion: str
) -> None:
    res = CliRunner().invoke(
        app, ["eval", "rerank", "--reranker", name, "--data", "/no/such.parquet"], env=NARROW
    )
    assert res.exit_code == 2
    assert f"Did you mean {suggestion}" in res.output and "no/such" not in res.output


def test_unknown_vlm_family_is_caught_before_the_data() -> None:
    res = CliRunner().invoke(
        app, ["eval", "rerank", "--reranker", "vlm:llava1.5/x", "--data", "/no/such.parquet"]
    )
    assert res.exit_code == 2 and "Did you mean 'llava-1.5'" in res.output


def _all_options(cmd: Any, path: str = "inquire") -> list[tuple[str, str]]:
    found = [(path, o) for p in cmd.params for o in [*p.opts, *p.secondary_opts]]
    if hasattr(cmd, "commands"):  # a group (typer may use its own click classes)
        for name, sub in cmd.commands.items():
            found += _all_options(sub, f"{path} {name}")
    return found


def test_no_boolean_flag_reads_as_a_double_negative() -> None:
    options = _all_options(typer.main.get_command(app))
    assert len(options) > 50
    bad = [(c, o) for c, o in options if o.startswith("--no-no-") or o.startswith("--no-dont")]
    assert not bad, bad
    assert ("inquire eval rerank", "--cache") in options
    assert ("inquire eval rerank", "--no-cache") in options
    assert ("inquire eval fullrank", "--cache") in options


# ----------------------------------------------------------------- downloads without a network


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_download_to_a_closed_port_fails_after_one_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inquire.data import download_http

    monkeypatch.setenv("INQUIRE_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    waits: list[float] = []
    monkeypatch.setattr(download_http.time, "sleep", waits.append)
    res = CliRunner().invoke(app, ["download", "queries-val", "--no-progress"], env=NARROW)
    assert res.exit_code == 2
    assert "refused" in res.output and "not retried" in res.output
    assert "INQUIRE_BASE_URL" in res.output and waits == []


def test_dns_failure_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # (5xx answers are still retried: tests/test_data_download.py)
    from inquire.data import download, download_http

    def no_dns(*args: object, **kw: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    waits: list[float] = []
    monkeypatch.setattr(download_http.time, "sleep", waits.append)
    monkeypatch.setenv("INQUIRE_BASE_URL", "http://mirror.invalid")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DownloadError, match=r"mirror\.invalid could not be resolved.*not retried"):
        download.fetch("queries-val", progress=False)
    assert waits == []


# ----------------------------------------------------------------- evaluate -> report curves


def test_evaluate_out_writes_the_run_and_report_draws_its_curve(tmp_path: Path) -> None:
    import shutil

    from test_eval_evaluate import QRELS, QUERIES, RUN

    queries, ann, run = tmp_path / "q.csv", tmp_path / "ann.csv", tmp_path / "run.trec"
    QUERIES.to_csv(queries, index=True)
    QRELS.to_dataframe().to_csv(ann, index=False)
    RUN.save_trec(run)
    out = tmp_path / "res"
    args = ["evaluate", "--run", str(run), "--queries", str(queries), "--annotations", str(ann)]
    res = _invoke([*args, "--k", "2", "--out", str(out)])
    assert (out / "run.parquet").is_file() and "run.parquet" in res.output
    from inquire.run import Run

    assert Run.read(out / "run.parquet")[1][0].tolist() == Run.read(run)[1][0].tolist()

    plots = tmp_path / "plots"
    res = _invoke(["report", str(out), "--plots", str(plots), "--bootstrap", "0"])
    assert (plots / "precision_recall.png").is_file()
    assert "warning" not in res.stderr

    # A result folder without its run: the curve is left out and the report says why.
    bare = tmp_path / "bare"
    shutil.copytree(out, bare)
    (bare / "run.parquet").unlink()
    res = _invoke(["report", str(bare), "--plots", str(tmp_path / "p2"), "--bootstrap", "0"])
    assert not (tmp_path / "p2" / "precision_recall.png").exists()
    assert "no precision-recall curve for run" in res.stderr and "run.parquet" in res.stderr
    # No relevance labels to be found: said too.
    ann.unlink()
    res = _invoke(["report", str(out), "--plots", str(tmp_path / "p3"), "--bootstrap", "0"])
    assert "--annotations" in res.stderr and "no precision-recall curve" in res.stderr


# ----------------------------------------------------------------- trend charts


def test_time_groupings_get_every_period_so_gaps_show() -> None:
    import pandas as pd

    from inquire.collection.charts import fill_time_gaps

    t = pd.DataFrame(
        {
            "group": ["2021-11", "2022-02"],
            "inspected": [2, 3],
            "positives": [1, 3],
            "share": [0.5, 1.0],
            "ci_low": [0.1, 0.4],
            "ci_high": [0.9, 1.0],
        }
    )
    t.attrs["undated_inspected"] = 4
    month = fill_time_gaps(t, "month")
    assert month["group"].tolist() == ["2021-11", "2021-12", "2022-01", "2022-02"]
    assert month["inspected"].tolist() == [2, 0, 0, 3]
    assert month["positives"].tolist() == [1, 0, 0, 3]
    assert month["share"].isna().tolist() == [False, True, True, False]
    assert month.attrs["undated_inspected"] == 4
    year = fill_time_gaps(t.assign(group=["2019", "2022"]), "year")
    assert year["group"].tolist() == ["2019", "2020", "2021", "2022"]
    moy = fill_time_gaps(t.assign(group=["03", "11"]), "month-of-year")
    assert len(moy) == 12 and moy["inspected"].sum() == 5
    assert fill_time_gaps(t, "taxon") is t


def test_trend_figure_has_integer_counts_axis_labels_and_a_legend_off_the_data() -> None:
    import pandas as pd

    from inquire.collection.charts import trend_figure, trend_svg

    t = pd.DataFrame(
        {
            "group": ["2021-11", "2022-03"],
            "inspected": [4, 3],
            "positives": [1, 3],
            "share": [0.25, 1.0],
            "ci_low": [0.05, 0.44],
            "ci_high": [0.7, 1.0],
        }
    )
    fig = trend_figure(t, "herons", by="month")
    fig.canvas.draw()
    ax, ax2 = fig.axes
    assert ax.get_xlabel() == "month" and ax.get_ylabel() == "verified positives"
    assert ax2.get_ylabel() == "share of inspected images"
    ticks = [v for v in ax.get_yticks() if ax.get_ylim()[0] <= v <= ax.get_ylim()[1]]
    assert ticks and all(float(v).is_integer() for v in ticks)
    assert [x.get_text() for x in ax.get_xticklabels()][:2] == ["2021-11", "2021-12"]
    assert len(ax.patches) == 5  # one bar slot per month, 2021-11 .. 2022-03
    (legend,) = fig.legends
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box, frame = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert box.y1 <= frame.y0  # below the axes, clear of every bar and point
    svg = trend_svg(t, "herons", by="month")  # the page's chart is this same figure
    assert svg.startswith("<svg") and "herons" in svg and "verified positives" in svg


def test_trend_leaves_out_file_time_dates_and_writes_jpeg(tmp_path: Path) -> None:
    from datetime import datetime

    from inquire.collection import create_collection
    from inquire.collection.search import SearchRequest
    from inquire.collection.verify import Verification
    from inquire.testing.collection_encoder import write_photo

    photos = tmp_path / "photos"
    for i, (colour, date) in enumerate(
        [
            ("red", datetime(2021, 11, 3)),
            ("red", datetime(2022, 2, 10)),
            ("red", datetime(2022, 2, 20)),
            ("red", None),  # no EXIF date: only a file time
            ("green", datetime(2021, 12, 1)),
        ]
    ):
        write_photo(photos / f"p{i}.jpg", colour, date=date, seed=i)
    coll, _ = create_collection("t", photos, "toy:colour")
    v = Verification(coll)
    sid = v.save_search(SearchRequest("red"))
    v.extend(sid, 5, coll.index())
    paths = {}
    for r in v.results(sid, 0, 5).to_dict("records"):
        paths[int(r["image_id"])] = Path(str(r["abspath"])).name
        mark = "not_relevant" if Path(str(r["abspath"])).name == "p4.jpg" else "relevant"
        v.mark(sid, int(r["image_id"]), "ana", mark)
    t = v.trend(sid, "month")
    v.close()
    coll.close()
    assert dict(zip(t["group"], t["positives"], strict=True)) == {
        "2021-11": 1,
        "2021-12": 0,
        "2022-02": 2,
    }
    assert (t.attrs["undated_inspected"], t.attrs["undated_positives"]) == (1, 1)

    jpg = tmp_path / "trend.jpg"
    res = _invoke(["trend", "t", "--search-id", sid, "--by", "month", "--out", str(jpg)])
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"
    assert "1 inspected image without an EXIF or train.json date left out (1 positive)" in (
        res.output
    )
    res = _invoke(["search", "t", "red", "-k", "5"])
    assert "(file time)" in res.output  # the stand-in date is flagged where it is shown
    bad = CliRunner().invoke(
        app, ["trend", "t", "--search-id", sid, "--out", str(tmp_path / "x.gif")]
    )
    assert bad.exit_code == 2 and ".png, .jpg" in bad.output
    assert not (tmp_path / "x.gif").exists()
    res = _invoke(["collection", "info", "t"])
    assert "4 EXIF, 1 file time only" in res.output and sid in res.output
    assert "{" not in res.output  # a summary, not a Python dict


# ----------------------------------------------------------------- compare at 80 columns


def test_compare_at_80_columns_keeps_run_names_and_numbers_whole(tmp_path: Path) -> None:
    from inquire.eval import evaluate
    from inquire.run import Run
    from test_eval_evaluate import QRELS, QUERIES

    names = ["clip-vit-h-14-378-dfn5b-first-stage", "clip-vit-b-32-openai-first-stage-run"]
    lists = [
        {1: [10, 11], 2: [20, 98], 3: [30, 31], 4: [40, 97]},
        {1: [99, 10], 2: [98, 20], 3: [96, 30], 4: [95, 40]},
    ]
    dirs = []
    for name, lst in zip(names, lists, strict=True):
        run = Run({q: (ids, [0.9, 0.8]) for q, ids in lst.items()}, name=name)
        dirs.append(evaluate(run, QRELS, QUERIES, k=2).save(tmp_path / name, run=run))
    res = _invoke(["compare", *map(str, dirs), "--queries", str(_query_csv(tmp_path))])
    _no_cut(res.output, [*names, "AP@2", "4/0/0", "wins/losses/ties"])
    assert "A = clip-vit-h-14-378-dfn5b-first-stage" in res.output
    wide = CliRunner().invoke(app, ["compare", *map(str, dirs)], env={"COLUMNS": "250"})
    assert wide.exit_code == 0 and "┃ metric" in wide.output  # a table where it fits
    # The report's tables would crop at 80 columns: one block per group and run instead.
    res = _invoke(["report", *map(str, dirs), "--bootstrap", "50", "--by", "supercategory"])
    _no_cut(res.output, [*names, "Behavior", "Species", "AP@2:"])
    assert f"all · {names[0]} (4 queries)" in res.output
    wide = CliRunner().invoke(app, ["report", *map(str, dirs)], env={"COLUMNS": "250"})
    assert wide.exit_code == 0 and "┃ group" in wide.output


def _query_csv(tmp_path: Path) -> Path:
    from test_eval_evaluate import QUERIES

    path = tmp_path / "queries.csv"
    QUERIES.to_csv(path, index=False)
    return path


# ----------------------------------------------------------------- the demo's directions


def test_demo_prints_where_outputs_went_and_commands_that_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import shlex

    from inquire.demo.collection import demo_collection
    from inquire.demo.main import print_next_commands, print_outputs

    out = tmp_path / "demo out"  # a space: the printed commands must quote it
    demo_collection(out / "collection", Console(file=io.StringIO()))
    buf = io.StringIO()
    console = Console(file=buf, width=80)
    shown = print_outputs(out, console)
    cmds = print_next_commands(out, console)
    text = buf.getvalue()
    assert shown == [(out / "collection" / "collections" / "demo").resolve()]
    assert str(shown[0]) in text
    assert [c for c in cmds if " search demo " in c] and [c for c in cmds if " trend " in c]
    for cmd in cmds:
        assert cmd in text  # each printed whole on one line
        words = shlex.split(cmd)
        env = {}
        while "=" in words[0] and not words[0].startswith("-"):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        args = words[words.index("inquire") + 1 :]
        monkeypatch.chdir(tmp_path.parent)  # absolute paths: any folder works
        res = CliRunner().invoke(app, args, env={**NARROW, **env})
        assert res.exit_code == 0, (cmd, res.output)
        if args[0] == "search":
            assert "IMG_" in res.output
    assert (out / "collection" / "trend.png").is_file()
    assert os.environ.get("INQUIRE_HOME") != str(out / "collection")


def test_search_results_keep_long_paths_and_dates_whole_at_80_columns(tmp_path: Path) -> None:
    from datetime import datetime

    from inquire.collection import create_collection
    from inquire.testing.collection_encoder import write_photo

    deep = tmp_path / "photos" / "2023 spring walks" / "river meadow north bank" / "day two"
    rel = []
    for i, colour in enumerate(("red", "red", "blue")):
        name = f"IMG_{i:04d}_heron_swallowing_a_fish_{colour}.jpg"
        write_photo(deep / name, colour, date=datetime(2023, 4, 1 + i), lat=51.5, lon=-0.12)
        rel.append(str((deep / name).relative_to(tmp_path / "photos")))
    coll, _ = create_collection("walks", tmp_path / "photos", "toy:colour")
    coll.close()
    out = _invoke(["search", "walks", "red", "-k", "3"]).output
    _no_cut(out, [*rel, "2023-04-01", "2023-04-02", "2023-04-03", "51.5000", "-0.1200"])
    assert "rank 1: 2023 spring walks/" in out  # one block per result, rank and path first
    wide = CliRunner().invoke(app, ["search", "walks", "red", "-k", "3"], env={"COLUMNS": "250"})
    assert wide.exit_code == 0 and "┃ path" in wide.output
    _no_cut(wide.output, rel)
    out = _invoke(["collection", "list"]).output
    _no_cut(out, ["walks", "toy:colour", str(tmp_path / "photos")])
