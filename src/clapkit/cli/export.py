"""`clapkit export mteb`: bench and eval results as MTEB result files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import app

export_app = typer.Typer(no_args_is_help=True, help="Write clapkit's results in other tools' formats.")
app.add_typer(export_app, name="export")


@export_app.command("mteb")
def export_mteb(
    results: Annotated[list[Path], typer.Argument(metavar="RESULTS", help="A bench --out folder (or its cells/), "
                                                  "a folder of eval JSONs, or eval zeroshot / eval retrieval JSON "
                                                  "files")],
    out: Annotated[Path, typer.Option("--out", help="Folder for results/{model}/{revision}/{TaskName}.json, "
                                                    "not_exported.json and report.json")],
    model_name: Annotated[str | None, typer.Option("--model-name", help="The model's name in MTEB, "
                                                   "organization/model (default: a hub name as it is, else "
                                                   "clapkit/ and the bench model's name); results of one model "
                                                   "only")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="The model's revision folder (default: the "
                                                 "model's fingerprint in the results)")] = None,
    allow_protocol_differences: Annotated[bool, typer.Option(
        "--allow-protocol-differences", help="Also write the results whose protocol differs from MTEB's task "
                                             "(another prompt, another sample of the set), each marked "
                                             "clapkit_protocol_differences")] = False,
) -> None:
    """Write clapkit bench cells and eval zeroshot / retrieval results as MTEB result files,
    for the tasks MTEB has and scored as MTEB scores them (ESC-50 zero-shot with MTEB's
    candidate texts on all 2,000 clips, Clotho and AudioCaps retrieval on MTEB's query set),
    with each model's model_meta.json (its training datasets named in MTEB's terms). Every
    result MTEB has no task for, or whose protocol differs, is listed with the reason in
    not_exported.json, not written."""
    from ..experiments.mteb_export import export_mteb as export

    report = export(results, out, model_name, revision, allow_protocol_differences)
    for e in report["exported"]:
        marked = f" [protocol differs: {'; '.join(e['protocol_differences'])}]" if e["protocol_differences"] else ""
        typer.echo(f"exported {e['model']} {e['task']} -> {e['mteb_task']} {e['main_score']} {e['value']:.4f} "
                   f"({e['clapkit_metric']}): {out / e['file']}{marked}")
    for n in report["not_exported"]:
        what = " ".join(str(x) for x in (n.get("model"), n.get("task")) if x) or n["source"]
        target = f" ({n['mteb_task']})" if n.get("mteb_task") else ""
        typer.echo(f"not exported: {what}{target}, {n['status']}: {'; '.join(n['reasons'])}")
    typer.echo(f"wrote {len(report['exported'])} MTEB result file(s) under {out / 'results'}; "
               f"{len(report['not_exported'])} not exported, listed in {out / 'not_exported.json'}; "
               f"report {out / 'report.json'}")
